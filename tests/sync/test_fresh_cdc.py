"""fresh.trigger = "cdc" end to end: the sandbox's Pub/Sub API, the real gRPC client, the fresh
job's seam, the store.

Asserts on what the sandbox holds (Lead_Score__c, its write_log) and on the store's
change_events rows committed with the replay id.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from connector.salesforce import SalesforceClient
from connector.sandbox import Sandbox
from connector.store import Store
from sync.config import Settings, load_settings
from sync.demo import write_sandbox_files
from sync.jobs import run_sync
from sync.stages.fresh import run_fresh
from sync.stages.fresh_cdc import TRIGGER, CdcTrigger, plan_batch

LEADS = 300


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sandbox, Path]]:
    workdir = tmp_path_factory.mktemp("fresh_cdc")
    sandbox = Sandbox(
        workdir / "sandbox", leads=LEADS, seed=5, pubsub=True, pubsub_keepalive_seconds=0.5
    ).start()
    config = write_sandbox_files(workdir, sandbox.info, command="test")
    config.write_text(
        config.read_text() + '\n[fresh]\nevery = "2s"\ntrigger = "cdc"\ncdc_window_seconds = 0.2\n'
    )
    assert run_sync(settings_for(config)).status == "ok"
    yield sandbox, config
    sandbox.stop()


def settings_for(config: Path) -> Settings:
    return load_settings(config, environ={})


class Running:
    """A CdcTrigger on a thread, as serve runs it, with its alerts recorded."""

    def __init__(self, settings: Settings, skip_batches: int = 0) -> None:
        assert settings.salesforce is not None
        self.client = SalesforceClient(settings.salesforce)
        self.alerts: list[tuple[bool, str]] = []
        self.cycles: list[Any] = []
        self.skipped: list[Any] = []

        def cycle(batch: Any) -> Any:
            # a batch with leads (one of only earlier tests' own writes may come first)
            if batch is not None and batch.lead_ids and len(self.skipped) < skip_batches:
                self.skipped.append(batch)  # as serve does when the store stays busy
                return None
            result = run_fresh(settings, client=self.client, batch=batch, catch_up=batch is None)
            self.cycles.append(batch)
            return result

        self.trigger = CdcTrigger(
            settings,
            self.client,
            cycle,
            lambda active, detail: self.alerts.append((active, detail)),
            threading.Event(),
        )
        self.thread = threading.Thread(target=self.trigger.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.trigger.close()
        self.thread.join(20)
        assert not self.thread.is_alive()
        self.client.close()


def create_lead(settings: Settings, **fields: object) -> str:
    assert settings.salesforce is not None
    with SalesforceClient(settings.salesforce) as client:
        answer = client.sf.Lead.create(
            {"LastName": "Cdc", "Company": "Acme", "LeadSource": "Web", **fields}
        )
    return str(answer["id"])


def score_writes(sandbox: Sandbox, record_id: str) -> int:
    rows = sandbox.sql(
        "SELECT count(*) FROM write_log WHERE record_id = ? AND field = 'Lead_Score__c'",
        [record_id],
    )
    return int(rows[0][0])


def wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def stored_events(config: Path) -> list[tuple[str, str, str]]:
    with Store(settings_for(config).store.path) as store:
        rows = store.con.execute(
            "SELECT replay_id, change_type, outcome FROM change_events WHERE trigger = ? "
            "ORDER BY replay_id",
            [TRIGGER],
        ).fetchall()
    return [(str(a), str(b), str(c)) for a, b, c in rows]


def test_create_update_gap_restart_and_expiry(org: tuple[Sandbox, Path]) -> None:
    sandbox, config = org
    settings = settings_for(config)
    running = Running(settings)
    try:
        # First start: a polling catch-up, then the subscription.
        wait_for(lambda: running.trigger.counts.catch_ups == 1 and running.trigger._subscriber)
        created_at = time.time()
        lead = create_lead(settings, Industry="Technology", Title="CTO")
        wait_for(lambda: score_writes(sandbox, lead) == 1)
        assert time.time() - created_at < 10
        # Our own score write came back as an update of fields leadscore does not read.
        wait_for(lambda: running.trigger.counts.outcomes.get("ignored_fields", 0) >= 1)
        # An update of a field the model reads is scored again (only if the score changed).
        sandbox_updates = running.trigger.counts.outcomes.get("scored", 0)
        assert settings.salesforce is not None
        with SalesforceClient(settings.salesforce) as client:
            client.sf.Lead.update(lead, {"Title": "Intern"})
        wait_for(lambda: running.trigger.counts.outcomes.get("scored", 0) > sandbox_updates)
        # A gap event: the named lead is read and scored.
        other = create_lead(settings, Industry="Retail")
        wait_for(lambda: score_writes(sandbox, other) == 1)
        sandbox.emit_gap_event("Lead", [other], "GAP_UPDATE")
        wait_for(lambda: running.trigger.counts.outcomes.get("gap", 0) == 1)
        assert not running.alerts
    finally:
        running.stop()
    events = stored_events(config)
    assert len({replay for replay, _, _ in events}) == len(events)  # none twice
    assert ("CREATE", "scored") in {(t, o) for _, t, o in events}
    assert ("GAP_UPDATE", "gap") in {(t, o) for _, t, o in events}

    # Restart from the stored replay id: a lead created while nobody listened is scored once,
    # and nothing handled before is handled again.
    missed = create_lead(settings, Industry="Banking")
    before = len(events)
    running = Running(settings)
    try:
        wait_for(lambda: score_writes(sandbox, missed) == 1)
        assert running.trigger.counts.catch_ups == 0
    finally:
        running.stop()
    events = stored_events(config)
    assert len({replay for replay, _, _ in events}) == len(events) > before
    assert score_writes(sandbox, lead) <= 2 and score_writes(sandbox, other) == 1

    # An expired replay id: alert, polling catch-up (the lead created meanwhile is scored),
    # then the subscription at the tip follows new leads again.
    gone = create_lead(settings, Industry="Energy")
    assert sandbox.expire_change_events() >= 1
    running = Running(settings)
    try:
        wait_for(lambda: score_writes(sandbox, gone) == 1)
        assert running.alerts and running.alerts[0][0] is True
        assert "retention window" in running.alerts[0][1]
        after = create_lead(settings, Industry="Media")
        wait_for(lambda: score_writes(sandbox, after) == 1)
        wait_for(lambda: any(active is False for active, _ in running.alerts))
    finally:
        running.stop()
    assert score_writes(sandbox, gone) == 1 and score_writes(sandbox, missed) == 1


def test_plan_ignores_other_objects_and_fields() -> None:
    import datetime as dt

    from connector.salesforce.pubsub import ChangeBatch, ChangeEvent

    def event(n: int, entity: str, kind: str, ids: tuple[str, ...], changed=()) -> ChangeEvent:
        return ChangeEvent(
            n.to_bytes(8, "big"),
            entity,
            ids,
            kind,
            tuple(changed),
            dt.datetime(2026, 1, 1),
            "t",
            1,
            "005",
            {},
        )

    lead = "00Q5e000000001AAAA"
    batch = ChangeBatch(
        (
            event(1, "Lead", "CREATE", (lead,)),
            event(2, "Contact", "CREATE", ("0035e000000001AAAA",)),
            event(3, "Lead", "UPDATE", (lead,), ("Lead_Score__c", "LastModifiedDate")),
            event(4, "Lead", "UPDATE", (lead,), ("Name.FirstName",)),
            event(5, "Lead", "GAP_OVERFLOW", ("00Q*",)),
            event(6, "Lead", "DELETE", (lead,)),
        ),
        (6).to_bytes(8, "big"),
        time.time(),
    )
    plan = plan_batch([batch], frozenset({"FirstName", "Title"}))
    assert [row["outcome"] for row in plan.events] == [
        "scored",
        "ignored_object",
        "ignored_fields",
        "scored",
        "gap",
        "deleted",
    ]
    assert plan.lead_ids == {lead}
    assert plan.catch_up  # a wildcard gap cannot be read by id


def test_a_skipped_cycle_gets_its_events_again(org: tuple[Sandbox, Path]) -> None:
    sandbox, config = org
    settings = settings_for(config)
    running = Running(settings, skip_batches=1)
    try:
        wait_for(lambda: running.trigger._subscriber is not None)
        lead = create_lead(settings, Industry="Technology")
        wait_for(lambda: score_writes(sandbox, lead) == 1)
        assert [set(b.lead_ids) for b in running.skipped] == [{lead}]
        assert not running.alerts
    finally:
        running.stop()
    replays = [r for r, _, _ in stored_events(config)]
    assert len(set(replays)) == len(replays)


def test_metrics_count_events_by_outcome_and_their_lag() -> None:
    import datetime as dt

    from sync.health_server import ServiceState

    state = ServiceState(started_at=dt.datetime.now(dt.UTC))
    state.change_events({"scored": 2, "ignored_fields": 1}, [0.3, 1.5, 7.0])
    text = state.metrics()
    assert 'leadscore_cdc_events_total{outcome="scored"} 2' in text
    assert 'leadscore_cdc_events_total{outcome="ignored_fields"} 1' in text
    assert "leadscore_cdc_event_lag_seconds_count 3" in text
    assert 'leadscore_cdc_event_lag_seconds_bucket{le="0.5"} 1' in text


def stored_lead(config: Path, lead: str) -> dict[str, Any]:
    with Store(settings_for(config).store.path) as store:
        rows = store.rows_by_key("sf_lead", "Id", ["Title", "Industry", "CreatedDate"], [lead])
    return rows[lead]


def calls_since(sandbox: Sandbox, start: int) -> list[str]:
    """The trigger's REST calls (kinds) served since a point of the request log."""
    return [
        f"{r.category} {r.method}"
        for r in sandbox.request_log[start:]
        if r.category not in ("auth", "limits")
    ]


def test_leads_are_built_from_their_change_events(org: tuple[Sandbox, Path]) -> None:
    sandbox, config = org
    settings = settings_for(config)
    running = Running(settings)
    try:
        wait_for(lambda: running.trigger._subscriber is not None)
        time.sleep(1.0)  # a first start's catch-up has run
        lead = create_lead(settings, Industry="Technology", Title="CTO")
        start = len(sandbox.request_log)
        wait_for(lambda: score_writes(sandbox, lead) == 1)
        # A new lead costs its score write only: no Lead, Task or CampaignMember query (a
        # describe is read once per client).
        calls = calls_since(sandbox, start)
        assert [c for c in calls if not c.startswith("describe")] == ["composite PATCH"]
        row = stored_lead(config, lead)
        assert (row["Title"], row["Industry"]) == ("CTO", "Technology")
        created = sandbox.sql("SELECT CreatedDate FROM Lead WHERE Id = ?", [lead])[0][0]
        assert row["CreatedDate"].timestamp() == pytest.approx(int(created), abs=1)
        # An update's changed fields are applied onto the stored lead, a nulled one as null.
        assert settings.salesforce is not None
        scored = running.trigger.counts.outcomes.get("scored", 0)
        with SalesforceClient(settings.salesforce) as client:
            client.sf.Lead.update(lead, {"Title": None, "Industry": "Retail"})
        wait_for(lambda: running.trigger.counts.outcomes.get("scored", 0) > scored)
        wait_for(lambda: stored_lead(config, lead)["Industry"] == "Retail")
        assert stored_lead(config, lead)["Title"] is None
    finally:
        running.stop()


def test_the_daily_share_holds_the_events_until_there_is_room(org: tuple[Sandbox, Path]) -> None:
    sandbox, config = org
    # A share the org has already used: the trigger must not spend a counted call.
    capped = config.parent / "capped.toml"  # beside its secrets.toml, the same store
    capped.write_text(
        config.read_text().replace(
            "[salesforce]\n", "[salesforce]\nmax_share_of_daily_limit = 0.00001\n", 1
        )
    )
    capped_settings = settings_for(capped)
    assert capped_settings.salesforce is not None
    assert capped_settings.salesforce.max_share_of_daily_limit == 0.00001
    settings = settings_for(config)
    running = Running(capped_settings)
    try:
        wait_for(lambda: running.trigger._subscriber is not None)
        lead = create_lead(settings, Industry="Banking")
        used = sandbox.api_calls()
        wait_for(lambda: running.trigger.counts.budget_waits >= 1)
        time.sleep(0.5)
        assert sandbox.api_calls() == used and score_writes(sandbox, lead) == 0
        assert [active for active, _ in running.alerts] == [True]
        assert "wait in the Pub/Sub API" in running.alerts[0][1]
    finally:
        running.stop()
    # Room again (here: the usual share): the held event is handled, once.
    running = Running(settings)
    try:
        wait_for(lambda: score_writes(sandbox, lead) == 1)
    finally:
        running.stop()
    replays = [r for r, _, _ in stored_events(config)]
    assert len(set(replays)) == len(replays)


def test_what_an_event_cannot_give_is_left_to_a_rest_read(org: tuple[Sandbox, Path]) -> None:
    import datetime as dt

    from connector.salesforce import SalesforceStream
    from connector.salesforce.pubsub import ChangeEvent

    _, config = org
    settings = settings_for(config)
    assert settings.salesforce is not None
    lead_settings = settings.salesforce.streams["Lead"]
    everything = frozenset(lead_settings.fields) - {"IsDeleted"}

    def event(n: int, kind: str, lead: str, carried: frozenset[str], **values: Any) -> ChangeEvent:
        changed = tuple(values) if kind == "UPDATE" else ()
        old = dt.datetime(2020, 1, 1)
        replay = n.to_bytes(8, "big")
        return ChangeEvent(
            replay, "Lead", (lead,), kind, changed, old, "t", 1, "005", values, carried
        )

    with SalesforceClient(settings.salesforce) as client, Store(settings.store.path) as store:
        stream = SalesforceStream(client, "Lead", lead_settings)
        first = store.query_df(
            "SELECT Id, Title FROM sf_lead WHERE trim(Title) <> '' ORDER BY Id LIMIT 1"
        )
        stored, title = str(first["Id"][0]), str(first["Title"][0])
        fresh, unknown = "00Q5e00000000ZZAAA", "00Q5e00000000ZYAAA"
        result, unread = stream.apply_changes(
            store,
            [
                # a configured field the schema lacks (a formula field, say): read it
                event(1, "CREATE", fresh, everything - {"Email"}, Company="Acme"),
                # an update of a lead the store does not hold: read it
                event(2, "UPDATE", unknown, everything, Title="CEO"),
                # an update older than the stored version (a pull stored a newer one): no-op
                event(3, "UPDATE", stored, everything, Title="Changed in 2020"),
                # a create delivered again after the pull stored the lead: no-op
                event(4, "CREATE", stored, everything, Title="Created in 2020"),
            ],
        )
        assert unread == {fresh, unknown}
        assert result.new == 0
        assert store.values_by_key("sf_lead", "Id", "Title", [stored])[stored] == title
        assert not store.values_by_key("sf_lead", "Id", "Id", [fresh, unknown])
