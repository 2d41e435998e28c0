"""Segment end to end: pull (exports, Profile API, identities), traits, push and audiences.

The real clients talk to the sandbox over HTTPS; assertions read what the sandbox holds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from connector.sandbox import Fault, FaultPlan, RequestInfo, Sandbox
from connector.segment import ProfileClient, TrackingClient
from connector.store import Store
from scoring.events import ENTITIES
from scoring.traits import TraitSpec, compute_traits
from sync.config import Settings, WritebackSettings, load_settings
from sync.demo import prepare_workdir, write_sandbox_files
from sync.jobs import run_pull, run_push, run_segment_import, run_train
from sync.progress import SilentReporter
from sync.segment_sync import push_audience
from tests.configs import edit_config
from tests.conftest import SEGMENT_AS_OF

LEADS = 150


def make_org(workdir: Path, leads: int, seed: int) -> tuple[Sandbox, Path]:
    prepare_workdir(workdir, fresh=True)
    box = Sandbox(workdir / "sandbox", leads=leads, seed=seed, as_of=SEGMENT_AS_OF, segment=True)
    box.start()
    box.export_segment()
    config = write_sandbox_files(workdir, box.info, command="test")
    edit_config(config, {"segment.max_profiles_per_run": 40})
    return box, config


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sandbox, Settings, dict]]:
    box, config = make_org(tmp_path_factory.mktemp("segment-sync"), LEADS, seed=21)
    settings = load_settings(config, environ={})
    pulled = run_pull(settings)
    yield box, settings, pulled.counts["segment"]
    box.stop()


def persons(box: Sandbox) -> dict[str, str]:
    """lead id -> profile id of every lead the CDP knows (by construction all are linkable)."""
    return dict(box.sql("SELECT lead_id, profile_id FROM seg_profile WHERE kind = 'person'"))


def test_pull_imports_the_history_reads_profiles_and_resolves_every_person(org):
    box, settings, segment = org
    imports = segment["imports"]
    assert imports["files"] == 3 and imports["skipped"] == 0
    assert imports["imported"] == imports["lines"] > 0
    api = segment["profile_api"]
    assert api["lookups"] == 40 and api["failed"] == 0
    assert api["found"] + api["not_found"] == 40 and api["found"] > 20
    with Store(settings.store.path, read_only=True) as store:
        matched = store.query_df(
            "SELECT DISTINCT entity_id FROM identity_map WHERE entity = 'lead'"
        )
        unmatched = store.query_df(
            "SELECT rule, count(*) AS n FROM identity_profile WHERE status = 'unmatched' GROUP BY 1"
        )
    assert set(matched["entity_id"]) == set(persons(box))
    # a profile read through the Profile API is recognised as the id graph's profile: one each
    assert segment["identity"]["matched"] == {"lead": len(persons(box))}
    anonymous = box.sql("SELECT count(*) FROM seg_profile WHERE kind IN ('stray', 'visitor')")
    assert dict(zip(unmatched["rule"], unmatched["n"], strict=True)) == {
        "anonymous_only": anonymous[0][0]
    }
    assert segment["identity"]["unmatched"] == {"anonymous_only": anonymous[0][0]}


def test_traits_over_every_identity_equal_the_hidden_models_cdp_counts(org):
    box, settings, _ = org
    truth = box.ground_truth()
    anchors = truth.rename(columns={"lead_id": "entity_id"})[["entity_id", "anchor_at"]]
    traits = [
        TraitSpec(name="usage", event="Feature Used", window_days=14),
        TraitSpec(
            name="revenue",
            event="Order Completed",
            window_days=90,
            aggregate="sum",
            property="revenue",
        ),
    ]
    with Store(settings.store.path, read_only=True) as store:
        got = compute_traits(store.con, ENTITIES["lead"], anchors, traits)
        # the trap: joining events on the user id alone misses the anonymous trial usage
        by_user_only = store.query_df(
            """SELECT count(*) AS n FROM seg_event e
               JOIN identity_map m ON m.entity = 'lead' AND m.id_type = 'user_id'
                 AND m.id_value = e.user_id
               WHERE e.event = 'Feature Used'"""
        )["n"][0]
    assert np.array_equal(got["usage"].to_numpy(), truth["product_usage_14d"].to_numpy(float))
    assert np.allclose(got["revenue"].to_numpy(), truth["order_revenue_90d"].to_numpy(float))
    assert truth["product_usage_14d"].sum() > 0 and truth["order_revenue_90d"].sum() > 0
    person_usage = box.sql(
        "SELECT count(*) FROM seg_event e JOIN seg_profile p ON p.profile_id = e.profile_id "
        "WHERE p.kind = 'person' AND e.event = 'Feature Used'"
    )[0][0]
    assert by_user_only < 0.8 * person_usage


def test_ambiguous_matches_follow_the_documented_rule(tmp_path):
    box, config = make_org(tmp_path, 40, seed=4)
    try:
        settings = load_settings(config, environ={})
        leads = pd.DataFrame(
            box.sql("SELECT Id, Email, CreatedDate FROM Lead ORDER BY CreatedDate"),
            columns=["Id", "Email", "CreatedDate"],
        )
        known = persons(box)
        with_trait = {
            r[0] for r in box.sql("SELECT profile_id FROM seg_trait WHERE name = 'salesforce_id'")
        }
        # a person whose profile matches by email only, and the newest other lead
        shared = next(i for i in leads["Id"] if i in known and known[i] not in with_trait)
        newest = leads[leads["Id"] != shared]["Id"].iloc[-1]
        email = leads.set_index("Id").loc[shared, "Email"]
        box.update_records("Lead", [{"Id": newest, "Email": email.upper()}])
        # crafted id graph: a profile with the emails of two leads, and one whose salesforce_id
        # names one lead while its email names another; plus two profiles that match nobody
        others = [i for i in leads["Id"] if i not in (shared, newest)]
        older, younger, by_id, by_email = others[0], others[1], others[2], others[3]
        rows = [
            ("p_two_emails", "email", leads.set_index("Id").loc[older, "Email"]),
            ("p_two_emails", "email", leads.set_index("Id").loc[younger, "Email"]),
            ("p_ext", "salesforce_id", by_id[:15]),
            ("p_ext", "email", leads.set_index("Id").loc[by_email, "Email"]),
            ("p_anon", "anonymous_id", "dev-1"),
            ("p_stranger", "email", "stranger@nowhere.example"),
        ]
        crafted = tmp_path / "crafted_id_graph.jsonl"
        crafted.write_text(
            "\n".join(
                json.dumps(
                    {"canonical_segment_id": p, "external_id_type": t, "external_id_value": v}
                )
                for p, t, v in rows
            )
            + "\n"
        )
        run_pull(settings)
        result = run_segment_import(settings, [crafted], kind="id_graph")
        with Store(settings.store.path, read_only=True) as store:
            profiles = store.query_df("SELECT * FROM identity_profile").set_index("profile_id")
    finally:
        box.stop()
    shared_profile = profiles.loc[known[shared]]
    assert shared_profile["entity_id"] == newest  # the newest live lead wins a shared email
    assert shared_profile["status"] == "ambiguous" and shared_profile["candidates"] == 2
    two = profiles.loc["p_two_emails"]
    assert (two["entity_id"], two["rule"], two["candidates"]) == (younger, "other_email", 2)
    ext = profiles.loc["p_ext"]
    assert (ext["entity_id"], ext["rule"]) == (by_id, "external_id:salesforce_id")
    assert profiles.loc["p_anon", "rule"] == "anonymous_only"
    assert profiles.loc["p_stranger", "rule"] == "no_crm_match"
    identity = result.counts["identity"]
    assert identity["unmatched"]["no_crm_match"] >= 1 and identity["ambiguous"]["lead"] >= 3


def scores_for(box: Sandbox, shift: int = 0) -> pd.DataFrame:
    ids = [r[0] for r in box.sql("SELECT Id FROM Lead WHERE IsDeleted = 0 ORDER BY Id")]
    score = (np.arange(len(ids)) * 7 + shift) % 100
    return pd.DataFrame(
        {
            "entity_id": ids,
            "model_version": "v-test",
            "probability": score / 100,
            "score": score,
            "tier": np.where(score >= 60, "A", "D"),
            "reasons": None,
            "scored_at": pd.Timestamp("2025-06-01 12:00:00"),
        }
    )


def user_ids(settings: Settings) -> dict[str, str]:
    with Store(settings.store.path, read_only=True) as store:
        rows = store.query_df(
            "SELECT entity_id, min(id_value) AS u FROM identity_map "
            "WHERE entity = 'lead' AND id_type = 'user_id' GROUP BY 1"
        )
    return dict(zip(rows["entity_id"], rows["u"], strict=True))


def anonymous_only(settings: Settings) -> dict[str, str]:
    """Leads matched to a Segment profile that has anonymous ids but no user id."""
    with Store(settings.store.path, read_only=True) as store:
        rows = store.query_df(
            "SELECT entity_id, min(id_value) AS a FROM identity_map WHERE entity = 'lead' "
            "GROUP BY 1 HAVING count(*) FILTER (id_type = 'user_id') = 0 "
            "AND count(*) FILTER (id_type = 'anonymous_id') > 0"
        )
    return dict(zip(rows["entity_id"], rows["a"], strict=True))


def test_scores_become_traits_readable_through_the_profile_api_and_only_changes_go(org):
    box, settings, _ = org
    scores = scores_for(box)
    with Store(settings.store.path) as store:
        store.append_scores("lead_conversion", scores)
    first = run_push(settings).counts["segment"]["lead_conversion"]
    users, anonymous = user_ids(settings), anonymous_only(settings)
    # profiles without a user id are reached by an anonymous id (identify takes either)
    assert anonymous, "the org should have leads matched to anonymous-only profiles"
    assert first["written"] == len(users) + len(anonymous) and first["failed"] == 0
    assert first["no_segment_user"] == len(scores) - len(users) - len(anonymous)
    assert first["requests"] == 1  # every changed profile in one batch
    client = ProfileClient(load_settings(settings.path, environ={}).segment)
    lead, user = sorted(users.items())[0]
    traits = client.read_profile(f"user_id:{user}").traits
    stranger, anonymous_id = sorted(anonymous.items())[0]
    visitor = client.read_profile(f"anonymous_id:{anonymous_id}").traits
    client.close()
    expected = scores.set_index("entity_id").loc[lead]
    assert traits["lead_score"] == int(expected["score"])
    assert traits["lead_tier"] == expected["tier"]
    assert visitor["lead_score"] == int(scores.set_index("entity_id").loc[stranger]["score"])

    second = run_push(settings).counts["segment"]["lead_conversion"]
    assert second["written"] == 0 and second["messages"] == 0
    assert second["unchanged"] == len(scores) - second["no_segment_user"]

    changed = scores.copy()
    changed.loc[changed["entity_id"] == lead, "score"] = 99
    with Store(settings.store.path) as store:
        store.append_scores("lead_conversion", changed)
    third = run_push(settings).counts["segment"]["lead_conversion"]
    assert (third["messages"], third["written"]) == (1, 1)
    sent = box.sql(
        "SELECT traits FROM seg_identify WHERE user_id = ? ORDER BY seq DESC LIMIT 1", [user]
    )
    assert json.loads(sent[0][0]) == {"lead_score": 99}  # only the changed trait


class TrackingDown(FaultPlan):
    def on_request(self, request: RequestInfo) -> Fault | None:
        if request.category == "tracking":
            return Fault(500, b'{"code":"internal","message":"boom"}')
        return None


def test_failed_writes_are_ledgered_and_sent_by_the_next_run(org):
    box, settings, _ = org
    with Store(settings.store.path) as store:
        store.append_scores("lead_conversion", scores_for(box, shift=3))
    box.faults = TrackingDown()
    quick = settings.model_copy(
        update={"segment": settings.segment.model_copy(update={"max_attempts": 2})}
    )
    try:
        failed = run_push(quick)
    finally:
        box.faults = FaultPlan()
    counts = failed.counts["segment"]["lead_conversion"]
    assert failed.status == "partial" and counts["failed"] > 0 and counts["written"] == 0
    assert counts["errors"] == {"internal": counts["failed"]}
    with Store(settings.store.path, read_only=True) as store:
        ledger = store.ledger("segment", "profile")
    assert set(ledger[ledger["status"] == "failed"]["last_error"]) == {"internal: boom"}
    # the rejected rows wait for their backoff (writeback.retry_backoff_seconds)...
    waiting = run_push(settings).counts["segment"]["lead_conversion"]
    assert waiting["messages"] == 0 and waiting["written"] == 0
    # ...and are sent by the first run after it
    due = settings.model_copy(update={"writeback": WritebackSettings(retry_backoff_seconds=0)})
    with Store(settings.store.path) as store:
        store.con.execute("UPDATE writeback_ledger SET next_attempt_at = NULL")
    healed = run_push(due).counts["segment"]["lead_conversion"]
    assert healed["written"] == counts["failed"] and healed["failed"] == 0


def test_audience_membership_changes_become_entered_and_exited_events(org):
    box, settings, _ = org
    users = user_ids(settings)
    a, b, c = sorted(users)[:3]
    client = TrackingClient(settings.segment)
    at = datetime(2025, 6, 1, 12)
    with Store(settings.store.path) as store:

        def push(members: set[str], when: datetime):
            return push_audience(
                client,
                store,
                audience="hot_leads",
                entity="lead",
                members=members,
                at=when,
                trait="in_hot_leads",
                reporter=SilentReporter(),
            )

        first = push({a, b}, at)
        again = push({a, b}, at)
        moved = push({b, c}, datetime(2025, 6, 2, 12))
    client.close()
    assert (first.written, first.messages) == (2, 4)  # an event and a trait each
    assert again.messages == 0
    assert (moved.records, moved.written) == (2, 2)
    events = box.sql(
        "SELECT user_id, event, properties FROM seg_event WHERE event LIKE 'Audience %' "
        "AND json_extract(properties, '$.audience') = 'hot_leads' ORDER BY seq"
    )
    assert [(u, e) for u, e, _ in events] == [
        (users[a], "Audience Entered"),
        (users[b], "Audience Entered"),
        (users[c], "Audience Entered"),
        (users[a], "Audience Exited"),
    ]
    assert json.loads(events[0][2])["audience"] == "hot_leads"
    trait = box.sql(
        "SELECT t.value FROM seg_trait t JOIN seg_identity i ON i.profile_id = t.profile_id "
        "WHERE i.id_type = 'user_id' AND i.id_value = ? AND t.name = 'in_hot_leads'",
        [users[a]],
    )
    assert trait == [("false",)]


def test_the_import_command_reports_skipped_lines_with_file_and_line(org, tmp_path):
    _, settings, _ = org
    bad = tmp_path / "tracks.jsonl"
    bad.write_text(
        '{"type":"track","event":"X","userId":"u","timestamp":"2025-05-01T00:00:00Z"}\n'
        "{oops\n"
        '{"type":"track","event":"X","userId":"u"}\n'
    )
    leadscore = str(Path(sys.executable).parent / "leadscore")
    done = subprocess.run(
        [leadscore, "import", "--config", str(settings.path), "--kind", "tracks", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "2 skipped" in done.stdout and "bad_json 1, missing_timestamp 1" in done.stdout
    assert f"{bad}:2: bad_json ({{oops)" in done.stdout
    assert f"{bad}:3: missing_timestamp" in done.stdout


def test_unmatched_record_id_identifies_records_without_a_segment_user_by_their_id(tmp_path):
    box, config = make_org(tmp_path, 60, seed=23)
    try:
        edit_config(config, add={"predictions.segment.unmatched": "record_id"})
        settings = load_settings(config, environ={})
        run_pull(settings)
        scores = scores_for(box)
        with Store(settings.store.path) as store:
            store.append_scores("lead_conversion", scores)
        counts = run_push(settings).counts["segment"]["lead_conversion"]
        users = user_ids(settings)
        # anonymous-only profiles are reached by their anonymous id; the rest by the record id
        without = sorted(set(scores["entity_id"]) - set(users) - set(anonymous_only(settings)))
        assert without, "the generated org should have leads the CDP does not know"
        assert counts["no_segment_user"] == 0 and counts["written"] == len(scores)
        sent = {r[0] for r in box.sql("SELECT DISTINCT user_id FROM seg_identify")}
        assert set(without) <= sent  # identified by the Salesforce record id
        assert set(users.values()) <= sent and not set(users) & sent - set(without)
    finally:
        box.stop()


def test_a_prediction_uses_only_the_traits_it_lists(org):
    _, settings, _ = org
    text = settings.path.read_text()
    assert "\n[[traits]]" in text
    config = settings.path.with_name("config-one-trait.toml")
    config.write_text(text)
    edit_config(config, add={"predictions.features": {"traits": ["emails_clicked_30d"]}})
    trained = run_train(load_settings(config, environ={})).counts["predictions"]["lead_conversion"]
    version = trained["version"]
    metadata = json.loads(
        (settings.store.models_dir / "lead_conversion" / version / "metadata.json").read_text()
    )
    assert metadata["traits"]["used"] == ["emails_clicked_30d"]
    assert [t["name"] for t in metadata["features"]["traits"]] == ["emails_clicked_30d"]
