"""The Segment side of the sandbox: generated profiles, the hidden model's CDP term, the APIs."""

from __future__ import annotations

import base64
import datetime as dt
import json
import sqlite3

import numpy as np
import pandas as pd
import pytest

from connector.sandbox.database import create_schema
from connector.sandbox.generator import DAY, generate_org, hidden_logit, sigmoid
from connector.sandbox.profiles import CDP_WINDOWS, cdp_logit

AS_OF = int(dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC).timestamp())


def generate(leads: int, seed: int, segment: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    create_schema(conn)
    conn.execute("BEGIN")
    generate_org(conn, seed=seed, leads=leads, as_of=AS_OF, segment=segment)
    conn.execute("COMMIT")
    return conn


def frame(conn: sqlite3.Connection, sql: str, params=()) -> pd.DataFrame:
    cursor = conn.execute(sql, params)
    return pd.DataFrame(cursor.fetchall(), columns=[d[0] for d in cursor.description])


@pytest.fixture(scope="module")
def org() -> sqlite3.Connection:
    return generate(3000, seed=13, segment=True)


def test_the_cdp_counts_of_the_ground_truth_come_from_the_person_s_events(org):
    truth = frame(org, "SELECT * FROM _ground_truth")
    people = dict(org.execute("SELECT lead_id, profile_id FROM seg_profile WHERE kind = 'person'"))
    events = frame(org, "SELECT profile_id, event, ts, properties FROM seg_event")
    events["revenue"] = [json.loads(p).get("revenue", 0.0) for p in events["properties"]]
    by_profile = dict(tuple(events.groupby("profile_id")))
    for name, (event, days, prop) in CDP_WINDOWS.items():
        expected = []
        for lead, anchor in zip(truth["lead_id"], truth["anchor_at"], strict=True):
            rows = by_profile.get(people.get(lead), events.iloc[:0])
            mask = (
                (rows["event"] == event)
                & (rows["ts"] >= anchor - days * DAY)
                & (rows["ts"] < anchor)
            )
            expected.append(rows.loc[mask, prop].sum() if prop else int(mask.sum()))
        assert np.allclose(truth[name].to_numpy(float), expected), name
    assert truth["product_usage_14d"].sum() > 100 and truth["order_revenue_90d"].sum() > 0


def test_p_true_includes_the_documented_cdp_term(org):
    truth = frame(org, "SELECT * FROM _ground_truth")
    leads = frame(
        org,
        "SELECT Id AS lead_id, Industry, Seniority__c, NumberOfEmployees, LeadSource, Country, "
        "CreatedDate FROM Lead",
    )
    merged = truth.merge(leads, on="lead_id")
    merged["age_days"] = (merged["anchor_at"] - merged["CreatedDate"]) / DAY
    assert np.allclose(sigmoid(hidden_logit(merged)), merged["p_true"], atol=1e-12)
    row = pd.DataFrame({"product_usage_14d": [3], "order_revenue_90d": [150.0]})
    assert cdp_logit(row)[0] == pytest.approx(-0.45 + 0.7 * np.log(4) + 0.35 * np.log(2.5))


def test_without_segment_there_are_no_profiles_and_no_cdp_term():
    conn = generate(300, seed=13, segment=False)
    assert conn.execute("SELECT count(*) FROM seg_event").fetchone()[0] == 0
    truth = frame(conn, "SELECT product_usage_14d, order_revenue_90d FROM _ground_truth")
    assert truth.isna().all().all()


def test_profiles_look_like_a_cdp_s(org):
    kinds = dict(org.execute("SELECT kind, count(*) FROM seg_profile GROUP BY kind"))
    assert 0.7 < kinds["person"] / 3000 < 0.8 and kinds["stray"] > 0 and kinds["visitor"] > 0
    ids = frame(org, "SELECT profile_id, id_type, id_value, norm FROM seg_identity")
    emails = ids[ids["id_type"] == "email"].groupby("profile_id").size()
    assert (emails == 2).sum() > 100  # a second, personal email
    written_differently = ids[(ids["id_type"] == "email") & (ids["id_value"] != ids["norm"])]
    assert len(written_differently) > 100
    no_email = set(ids["profile_id"]) - set(ids.loc[ids["id_type"] == "email", "profile_id"])
    anonymous_only = {
        p for p, g in ids.groupby("profile_id") if set(g["id_type"]) == {"anonymous_id"}
    }
    assert anonymous_only and no_email > anonymous_only  # some know a person only by user id
    with_sf_id = org.execute("SELECT count(*) FROM seg_trait WHERE name = 'salesforce_id'")
    assert with_sf_id.fetchone()[0] > 100
    anonymous_usage = org.execute(
        "SELECT count(*) FROM seg_event WHERE event = 'Feature Used' AND user_id IS NULL"
    ).fetchone()[0]
    assert anonymous_usage > 1000  # trial usage before sign-up carries only a device id


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def test_the_tracking_api_validates_like_segment(segment_box, session_for):
    http = session_for(segment_box)
    url, key = segment_box.url, segment_box.info["segment_write_key"]
    ok = {"type": "identify", "userId": "u1", "traits": {"a": 1}, "messageId": "m1"}

    def post(path: str, body, headers=None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return http.post(
            f"{url}{path}", data=data, headers=basic(key) if headers is None else headers
        )

    assert post("/v1/batch", {"batch": [ok]}, headers={}).status_code == 401
    assert post("/v1/batch", {"batch": [ok], "writeKey": key}, headers={}).status_code == 200
    bad = post("/v1/batch", b"{nope")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_json"
    big = {**ok, "messageId": "m2", "traits": {"x": "y" * 33_000}}
    assert post("/v1/batch", {"batch": [big]}).json()["code"] == "message_too_large"
    many = [{**ok, "messageId": f"b{i}", "traits": {"x": "y" * 30_000}} for i in range(18)]
    assert post("/v1/batch", {"batch": many}).json()["code"] == "batch_too_large"
    anonymous = {"type": "track", "event": "X", "messageId": "m3"}
    assert post("/v1/batch", {"batch": [anonymous]}).json()["code"] == "no_user_anon_id"
    assert post("/v1/track", {"userId": "u1"}).json()["code"] == "missing_event"
    # a request rejected as a whole applies nothing
    assert segment_box.sql("SELECT count(*) FROM seg_received WHERE message_id = 'b0'") == [(0,)]
    # over 2,500 messages: 200, and the excess is dropped, as Segment does
    flood = [
        {"type": "track", "event": "E", "userId": "u2", "messageId": f"f{i}"} for i in range(2600)
    ]
    assert post("/v1/batch", {"batch": flood}).status_code == 200
    assert segment_box.segment_api.dropped == 100
    assert segment_box.sql("SELECT count(*) FROM seg_event WHERE user_id = 'u2'") == [(2500,)]
    # the single-message endpoints, and de-duplication on messageId
    assert post("/v1/identify", {"userId": "u3", "traits": {"n": 1}, "messageId": "s1"}).ok
    assert post("/v1/identify", {"userId": "u3", "traits": {"n": 2}, "messageId": "s1"}).ok
    assert post("/v1/track", {"anonymousId": "d3", "event": "E", "messageId": "s2"}).ok
    traits = segment_box.sql(
        "SELECT t.value FROM seg_trait t JOIN seg_identity i ON i.profile_id = t.profile_id "
        "WHERE i.id_value = 'u3' AND t.name = 'n'"
    )
    assert traits == [("1",)]
    assert segment_box.sql("SELECT repeats FROM seg_received WHERE message_id = 's1'") == [(1,)]


def test_the_profile_api_pages_filters_and_answers_errors_like_segment(segment_org, session_for):
    http = session_for(segment_org)
    info = segment_org.info
    base = f"{segment_org.url}/v1/spaces/{info['space_id']}/collections/users/profiles"
    auth = basic(info["profile_api_token"])
    profile, email = segment_org.sql(
        "SELECT i.profile_id, i.id_value FROM seg_identity i JOIN seg_trait t "
        "ON t.profile_id = i.profile_id WHERE i.id_type = 'email' "
        "GROUP BY 1, 2 HAVING count(*) >= 4 LIMIT 1"
    )[0]
    # the value is URL-encoded; lookups of emails ignore case and spaces
    encoded = email.strip().upper().replace("@", "%40")
    assert http.get(f"{base}/email:{encoded}/traits").status_code == 401
    first = http.get(f"{base}/email:{encoded}/traits", params={"limit": 2}, headers=auth)
    assert first.status_code == 200 and first.headers["Request-Id"]
    body = first.json()
    assert len(body["traits"]) == 2 and body["cursor"]["has_more"] is True
    second = http.get(
        f"{base}/email:{encoded}/traits",
        params={"limit": 2, "next": body["cursor"]["next"]},
        headers=auth,
    ).json()
    assert not set(second["traits"]) & set(body["traits"])
    only = http.get(
        f"{base}/email:{encoded}/traits", params={"include": "email"}, headers=auth
    ).json()
    assert list(only["traits"]) == ["email"]
    missing = http.get(f"{base}/email:nobody%40example.com/traits", headers=auth)
    assert missing.status_code == 404
    assert missing.json() == {"error": {"code": "not_found", "message": "Profile was not found."}}
    too_many = http.get(f"{base}/email:{encoded}/events", params={"limit": 500}, headers=auth)
    assert too_many.status_code == 400 and too_many.json()["error"]["code"] == "validation_error"
    events = http.get(
        f"{base}/segment_id:{profile}/events", params={"limit": 100}, headers=auth
    ).json()["data"]
    oldest = (segment_org.as_of - dt.timedelta(days=14)).isoformat().replace("+00:00", "")
    assert all(e["timestamp"] >= oldest for e in events)  # 14 days of history at most
    metadata = http.get(f"{base}/segment_id:{profile}/metadata", headers=auth).json()
    assert set(metadata["metadata"]) >= {"created_at", "updated_at", "first_message_id"}


def test_an_org_of_several_shards_gives_every_lead_of_every_shard_its_own_people(monkeypatch):
    from connector.sandbox import generator

    monkeypatch.setattr(generator, "SHARD_LEADS", 500)
    org = generate(1200, seed=13, segment=True)  # the tables' keys refuse a repeated id
    people = frame(org, "SELECT lead_id FROM seg_profile WHERE kind = 'person'")["lead_id"]
    leads = frame(org, "SELECT Id FROM Lead ORDER BY Id")["Id"]
    assert people.is_unique and set(people) <= set(leads)
    # every shard's leads have profiles
    assert all(people.isin(leads[low : low + 500]).sum() > 100 for low in (0, 500, 1000))
