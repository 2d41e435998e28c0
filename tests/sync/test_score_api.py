"""``POST /v1/score`` over HTTP on the serve port: the same scores as batch scoring, bad bodies
answered with a 400 naming the field, and the champion swapped when a new one is promoted."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from connector.sandbox import Sandbox
from connector.store import Store
from scoring.events import ENTITIES, create_events_view, entity_sources
from scoring.features import FeatureColumns
from scoring.registry import list_versions, load_champion
from sync.config import Settings, load_settings
from sync.demo import write_sandbox_files
from sync.health_server import HealthServer, ServiceState
from sync.jobs import run_sync, run_train
from sync.score_api import RELOAD_SECONDS, Scorer

TOKEN = "t0ken-for-tests"
LEADS = 300
OWN_EVENTS = {"lead_created", "converted"}
VALID = "<a valid lead's fields>"  # the endpoint derives these from the fields


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sandbox, Settings]]:
    workdir = tmp_path_factory.mktemp("score_api")
    sandbox = Sandbox(workdir / "sandbox", leads=LEADS, seed=9).start()
    config = write_sandbox_files(workdir, sandbox.info, command="test")
    config.write_text(config.read_text() + "\n[fresh]\nmax_body_bytes = 200000\n")
    settings = load_settings(config, environ={"LEADSCORE_FRESH__API_TOKEN": TOKEN})
    assert run_sync(settings).status == "ok"
    yield sandbox, settings
    sandbox.stop()


@pytest.fixture(scope="module")
def server(org) -> Iterator[HealthServer]:
    _, settings = org
    state = ServiceState(started_at=pd.Timestamp.now(tz="UTC").to_pydatetime())
    http = HealthServer(state, scorer=Scorer(settings), token=TOKEN, max_body_bytes=200000)
    yield http.start()
    http.stop()


def post(server: HealthServer, body: Any, *, token: str = TOKEN, raw: bytes | None = None):
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/v1/score",
        data=data,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def posted_records(settings: Settings, ids: list[str]) -> list[dict[str, Any]]:
    """The leads as a client would post them: their fields and their events from the store."""
    spec = settings.predictions[0]
    champion = load_champion(settings.store.models_dir, spec.name)
    assert champion is not None
    columns = FeatureColumns(**champion.metadata["features"])
    entity = ENTITIES["lead"]
    with Store(settings.store.path) as store:
        con = store.read_connection()
        create_events_view(con, entity, entity_sources(con, entity, spec))
        wanted = [*columns.categorical, *columns.numeric, "CreatedDate", "ConvertedDate"]
        leads = store.query_df(
            f"SELECT Id, IsConverted, {', '.join(dict.fromkeys(wanted))} FROM {entity.table} "
            "WHERE Id IN (SELECT unnest(?))",
            [ids],
        )
        events = store.query_df(
            f"SELECT entity_id, event, ts, value FROM {entity.events_view} "
            "WHERE entity_id IN (SELECT unnest(?))",
            [ids],
        )
    out = []
    for lead in leads.to_dict("records"):
        fields = {}
        for key, value in lead.items():
            if isinstance(value, pd.Timestamp):
                value = value.isoformat() + "Z"
            elif value is not None and pd.isna(value):
                value = None
            elif hasattr(value, "item"):
                value = value.item()
            fields[key] = value
        mine = events[(events["entity_id"] == lead["Id"]) & ~events["event"].isin(OWN_EVENTS)]
        out.append(
            {
                "fields": fields,
                "events": [
                    {
                        "event": e.event,
                        "at": pd.Timestamp(e.ts).isoformat() + "Z",
                        "value": None if pd.isna(e.value) else float(e.value),
                    }
                    for e in mine.itertuples(index=False)
                ],
            }
        )
    return out


def test_a_record_scored_by_the_endpoint_gets_its_batch_score(org, server):
    _, settings = org
    with Store(settings.store.path) as store:
        batch = store.latest_scores("lead_conversion").set_index("entity_id")
    ids = list(batch.index[:: max(1, len(batch) // 60)])
    at = pd.Timestamp(batch.loc[ids[0], "scored_at"]).isoformat() + "Z"
    records = posted_records(settings, ids)
    assert any(r["events"] for r in records)  # Tasks and campaign responses are posted too
    status, answer = post(server, {"as_of": at, "records": records})
    assert status == 200, answer
    assert len(answer["results"]) == len(ids)
    for result in answer["results"]:
        expected = batch.loc[result["id"]]
        assert result["probability"] == pytest.approx(float(expected["probability"]), abs=1e-6)
        assert result["score"] == int(expected["score"])
        assert result["tier"] == expected["tier"]
        assert result["reasons"] == expected["reasons"]
    # one record alone: the same answer, flat
    status, one = post(server, {"as_of": at, "record": records[0]})
    assert status == 200 and one["id"] == answer["results"][0]["id"]
    assert one["probability"] == answer["results"][0]["probability"]
    assert one["model_version"] == batch.loc[one["id"], "model_version"]
    assert one["prediction"] == "lead_conversion"


@pytest.mark.parametrize(
    ("body", "field", "text"),
    [
        ({"record": {"fields": {"Industry": "Tech", "Nope": 1}}}, "record.fields.Nope", "unknown"),
        ({"records": [{"fields": {}}]}, "records[0].fields.", "missing field"),
        ({"record": {"fields": []}}, "record.fields", "must be an object"),
        ({"record": {"fields": VALID, "events": [{"event": "x"}]}}, "record.events[0].at", "at"),
        (
            {"record": {"fields": VALID, "events": [{"event": "x", "at": "now"}]}},
            "record.events[0].at",
            "ISO 8601",
        ),
        (
            {"record": {"fields": VALID, "events": [{"event": "x", "at": "today"}]}},
            "record.events[0].at",
            "ISO 8601",
        ),
        (
            {
                "record": {
                    "fields": VALID,
                    "events": [{"event": "x", "at": "2026-01-01", "value": float("nan")}],
                }
            },
            "record.events[0].value",
            "finite number",
        ),
        (
            {
                "record": {
                    "fields": VALID,
                    "events": [
                        {"event": "x", "at": "2026-01-01"},
                        {"event": "y", "at": "2026-01-02", "value": 10**400},
                    ],
                }
            },
            "record.events[1]",
            "finite number",
        ),
        (
            {"record": {"fields": VALID, "events": [{"event": "x", "at": "2026-01-01", "n": 1}]}},
            "record.events[0].n",
            "unknown key",
        ),
        ({"record": {"fields": {}}, "extra": 1}, "extra", "unknown key"),
        ({"records": []}, "records", "non-empty"),
        ({"prediction": "nope", "record": {"fields": {}}}, "prediction", "no prediction"),
        ({"as_of": "yesterday", "record": {"fields": {}}}, "as_of", "ISO 8601"),
        ("just a string", None, "JSON object"),
    ],
)
def test_bad_bodies_get_a_400_naming_the_field(org, server, body, field, text):
    _, settings = org
    if isinstance(body, dict) and body.get("record", {}).get("fields") == VALID:
        valid = posted_records(settings, [_first_lead(settings)])[0]["fields"]
        body = {**body, "record": {**body["record"], "fields": valid}}
    status, answer = post(server, body)
    assert status == 400, answer
    assert text in answer["error"]
    if field is not None:
        assert answer["field"].startswith(field)


def test_wrong_types_token_size_and_json_are_refused_without_a_500(org, server):
    _, settings = org
    records = posted_records(settings, [_first_lead(settings)])
    numeric = _numeric_field(settings)
    bad = json.loads(json.dumps(records[0]))
    bad["fields"][numeric] = "many"
    status, answer = post(server, {"record": bad})
    assert status == 400 and answer["field"] == f"record.fields.{numeric}"
    assert "must be a number" in answer["error"]
    assert post(server, {"record": records[0]}, token="wrong")[0] == 401
    assert post(server, None, raw=b"{not json")[0] == 400
    status, answer = post(server, None, raw=b"[" + b"1," * 120000 + b"1]")
    assert status == 413 and "over 200000 bytes" in answer["error"]
    # the server still answers
    assert post(server, {"record": records[0]})[0] == 200


def test_a_promoted_champion_is_used_without_a_restart(org, server):
    _, settings = org
    record = posted_records(settings, [_first_lead(settings)])[0]
    status, before = post(server, {"record": record})
    assert status == 200
    run_train(settings)  # the new version becomes champion
    champion = load_champion(settings.store.models_dir, "lead_conversion")
    assert champion is not None and champion.version != before["model_version"]
    time.sleep(RELOAD_SECONDS + 0.1)
    status, after = post(server, {"record": record})
    assert status == 200 and after["model_version"] == champion.version
    assert len(list_versions(settings.store.models_dir, "lead_conversion")) >= 2


def _first_lead(settings: Settings) -> str:
    with Store(settings.store.path) as store:
        return str(store.latest_scores("lead_conversion")["entity_id"].iloc[0])


def _numeric_field(settings: Settings) -> str:
    champion = load_champion(settings.store.models_dir, "lead_conversion")
    assert champion is not None
    numeric = FeatureColumns(**champion.metadata["features"]).numeric
    assert numeric
    return numeric[0]
