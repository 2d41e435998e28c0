"""The Segment connector against the sandbox over HTTPS: Profile API reads and /v1/batch writes."""

from __future__ import annotations

import json
import logging
import math
import random
import time
from datetime import datetime

import pytest
from segment.analytics import Client

from connector.errors import ConfigError
from connector.sandbox import Fault, FaultPlan, RequestInfo
from connector.segment import (
    MAX_REQUEST_BYTES,
    ProfileClient,
    TrackingClient,
    encode_message,
    identify_message,
    message_id,
    pack_batches,
    read_profiles,
)
from tests.conftest import SEGMENT_AS_OF, segment_settings

STAMP = datetime(2025, 6, 1, 9, 0)


def rich_profile(box) -> tuple[str, str]:
    """A person's profile with several identities, traits and events in the last 14 days."""
    since = SEGMENT_AS_OF.timestamp() - 14 * 86_400
    row = box.sql(
        """SELECT p.profile_id, i.id_value FROM seg_profile p
           JOIN seg_identity i ON i.profile_id = p.profile_id AND i.id_type = 'user_id'
           WHERE p.kind = 'person' ORDER BY
             (SELECT count(*) FROM seg_event e WHERE e.profile_id = p.profile_id AND e.ts >= ?)
             DESC, (SELECT count(*) FROM seg_identity x WHERE x.profile_id = p.profile_id) DESC
           LIMIT 1""",
        [since],
    )[0]
    return row[0], row[1]


def test_profile_api_reads_every_page_of_traits_identities_and_events(segment_org):
    profile, user_id = rich_profile(segment_org)
    client = ProfileClient(segment_settings(segment_org, page_size=2))
    before = len(segment_org.segment_requests)
    read = client.read_profile(f"user_id:{user_id}")
    client.close()
    assert read.found and read.error is None
    traits = dict(
        segment_org.sql("SELECT name, value FROM seg_trait WHERE profile_id = ?", [profile])
    )
    assert read.traits == {k: json.loads(v) for k, v in traits.items()}
    ids = segment_org.sql(
        "SELECT id_type, id_value FROM seg_identity WHERE profile_id = ?", [profile]
    )
    assert sorted((e["type"], e["id"]) for e in read.external_ids) == sorted(ids)
    since = SEGMENT_AS_OF.timestamp() - 14 * 86_400
    events = segment_org.sql(
        "SELECT message_id FROM seg_event WHERE profile_id = ? AND ts >= ?", [profile, since]
    )
    assert len(events) >= 3, "the chosen profile should have recent events"
    assert sorted(e["message_id"] for e in read.events) == sorted(r[0] for r in events)
    # one request per page of two, per resource: the cursor was followed to the end
    pages = sum(math.ceil(max(n, 1) / 2) for n in (len(traits), len(ids), len(events)))
    assert len(segment_org.segment_requests) - before == pages


def test_profile_api_reads_stay_within_the_rate_limit(segment_org):
    emails = [r[0] for r in segment_org.sql("SELECT Email FROM Lead ORDER BY Id LIMIT 12")]
    segment_org.segment_options.profile_rate_limit = 40.0
    limited_before = segment_org.segment_api.rate_limited
    try:
        client = ProfileClient(segment_settings(segment_org, requests_per_second=40.0))
        before = len(segment_org.segment_requests)
        started = time.monotonic()
        reads = [
            r for chunk in read_profiles(client, [f"email:{e}" for e in emails]) for r in chunk
        ]
        elapsed = time.monotonic() - started
        client.close()
    finally:
        segment_org.segment_options.profile_rate_limit = 1000.0
    sent = len(segment_org.segment_requests) - before
    assert all(r.error is None for r in reads)
    assert segment_org.segment_api.rate_limited == limited_before  # never provoked a 429
    # the first request is free, every next one waits 1/40 s
    assert elapsed >= (sent - 1) / 40.0 * 0.95


def test_profile_api_backs_off_on_429_and_reads_everything(segment_org):
    # more requests than the server's one-second burst allowance (15)
    emails = [r[0] for r in segment_org.sql("SELECT Email FROM Lead ORDER BY Id DESC LIMIT 16")]
    segment_org.segment_options.profile_rate_limit = 15.0
    limited_before = segment_org.segment_api.rate_limited
    try:
        client = ProfileClient(
            segment_settings(segment_org, requests_per_second=500.0, max_attempts=12)
        )
        reads = [
            r for chunk in read_profiles(client, [f"email:{e}" for e in emails]) for r in chunk
        ]
        client.close()
    finally:
        segment_org.segment_options.profile_rate_limit = 1000.0
    assert segment_org.segment_api.rate_limited > limited_before  # the server did push back
    assert [r.error for r in reads if r.error] == []
    expected = {
        e.lower()
        for (e,) in segment_org.sql(
            "SELECT norm FROM seg_identity WHERE id_type = 'email' AND norm IN "
            f"({','.join('?' * len(emails))})",
            [e.lower() for e in emails],
        )
    }
    assert {r.lookup.removeprefix("email:") for r in reads if r.found} == expected


def test_unknown_profiles_are_not_found_and_a_bad_token_is_a_clean_config_error(
    segment_org, caplog
):
    client = ProfileClient(segment_settings(segment_org))
    assert client.read_profile("email:nobody+x@nowhere.example").found is False
    client.close()
    secret = "tok-" + "s3cr3t" * 6
    bad = ProfileClient(segment_settings(segment_org, profile_api_token=secret))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError, match="access token was rejected") as info:
        bad.read_profile("email:someone@example.com")
    bad.close()
    assert secret not in str(info.value) and secret not in caplog.text


def test_pack_batches_needs_no_more_requests_than_the_size_limit_forces():
    rng = random.Random(3)
    sizes = [rng.randint(150, 900) for _ in range(20_000)]
    batches = pack_batches(sizes, MAX_REQUEST_BYTES, 2500)
    envelope = len(b'{"batch":[],"sentAt":"0000-00-00T00:00:00.000Z"}')
    for batch in batches:
        body = sum(sizes[i] for i in batch) + len(batch) - 1 + envelope
        assert body <= MAX_REQUEST_BYTES and len(batch) <= 2500
    assert [i for b in batches for i in b] == list(range(len(sizes)))
    lower_bound = math.ceil((sum(sizes) + len(sizes)) / MAX_REQUEST_BYTES)
    assert len(batches) <= lower_bound + 1


def identify(user: str, n: int, **traits) -> dict:
    return identify_message(
        user, {"lead_score": n, **traits}, timestamp=STAMP, message_id=message_id(user, n)
    )


def test_writes_respect_the_limits_and_an_oversize_message_fails_alone(segment_box):
    client = TrackingClient(segment_settings(segment_box))
    messages = [identify(f"usr_t{i}", i) for i in range(3000)]
    messages[17] = identify("usr_big", 17, notes="x" * 40_000)
    results = list(client.send(messages))
    client.close()
    outcomes = {i: o for indexes, outs in results for i, o in zip(indexes, outs, strict=True)}
    assert sorted(outcomes) == list(range(3000))
    assert not outcomes[17].success and outcomes[17].error.startswith("MESSAGE_TOO_LARGE")
    assert all(o.success for i, o in outcomes.items() if i != 17)
    posts = [r for r in segment_box.segment_requests if r.path == "/v1/batch"]
    assert all(r.status == 200 for r in posts)
    sizes = [len(encode_message(m)) for i, m in enumerate(messages) if i != 17]
    assert len(posts) == len(pack_batches(sizes, MAX_REQUEST_BYTES, 2500))
    assert segment_box.segment_api.dropped == 0
    applied = segment_box.sql("SELECT count(*) FROM seg_identify WHERE user_id LIKE 'usr_t%'")
    assert applied[0][0] == 2999
    assert segment_box.sql("SELECT count(*) FROM seg_identify WHERE user_id = 'usr_big'")[0][0] == 0


class FirstRequestsFail(FaultPlan):
    def __init__(self, status: int, count: int) -> None:
        self.status, self.left = status, count

    def on_request(self, request: RequestInfo) -> Fault | None:
        if request.category == "tracking" and self.left > 0:
            self.left -= 1
            return Fault(self.status, json.dumps({"code": "unavailable", "message": "x"}).encode())
        return None


def test_429_5xx_and_lost_answers_are_retried_and_resent_batches_are_deduplicated(segment_box):
    options = segment_box.segment_options
    options.tracking_429_rate = 0.25
    options.lost_response_rate = 0.25
    segment_box.faults = FirstRequestsFail(502, 2)
    client = TrackingClient(
        segment_settings(segment_box, max_request_bytes=8192, max_attempts=10),
        sleep=lambda seconds: None,
    )
    messages = [identify(f"usr_r{i}", i) for i in range(400)]
    results = list(client.send(messages))
    client.close()
    assert all(o.success for _, outs in results for o in outs)
    statuses = [r.status for r in segment_box.segment_requests if r.path == "/v1/batch"]
    assert {502, 429, 503} <= set(statuses)  # every kind of failure happened
    # each message applied exactly once, although some batches arrived more than once
    rows = segment_box.sql(
        "SELECT count(*), sum(repeats) FROM seg_received WHERE message_id IN "
        f"({','.join('?' * 400)})",
        [m["messageId"] for m in messages],
    )[0]
    assert rows[0] == 400 and rows[1] > 0
    applied = segment_box.sql("SELECT count(*) FROM seg_identify WHERE user_id LIKE 'usr_r%'")
    assert applied[0][0] == 400


def test_a_server_that_keeps_failing_fails_the_batches_and_stops_sending(segment_box):
    segment_box.faults = FirstRequestsFail(503, 10_000)
    client = TrackingClient(
        segment_settings(segment_box, max_request_bytes=8192, max_attempts=2),
        sleep=lambda seconds: None,
    )
    results = list(client.send([identify(f"usr_f{i}", i) for i in range(300)]))
    client.close()
    assert len(results) == 3  # three failed batches in a row: the rest waits for the next run
    assert all(
        not o.success and o.error.startswith("unavailable") for _, outs in results for o in outs
    )
    assert len([r for r in segment_box.segment_requests if r.path == "/v1/batch"]) == 3 * 2


def test_the_write_key_never_appears_in_logs_or_errors(segment_box, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "wk-" + "S3CRET" * 6
    client = TrackingClient(segment_settings(segment_box, write_key=secret))
    with pytest.raises(ConfigError, match="write key was rejected") as info:
        list(client.send([identify("usr_1", 1)]))
    client.close()
    assert secret not in str(info.value) and secret not in caplog.text
    assert secret not in repr(segment_settings(segment_box, write_key=secret))


def test_the_official_segment_client_posts_to_the_sandbox(segment_box, monkeypatch):
    # The library's own session trusts REQUESTS_CA_BUNDLE: point it at the sandbox CA.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", segment_box.info["ca_bundle"])
    errors = []
    client = Client(
        segment_box.info["segment_write_key"],
        host=segment_box.info["segment_url"],
        on_error=lambda error, batch: errors.append(error),
        max_retries=1,
    )
    client.identify("usr_official", {"plan": "enterprise", "seats": 40})
    client.track("usr_official", "Feature Used", {"feature": "api"})
    client.flush()
    client.join()
    assert errors == []
    traits = dict(
        segment_box.sql(
            "SELECT t.name, t.value FROM seg_trait t JOIN seg_identity i "
            "ON i.profile_id = t.profile_id WHERE i.id_type = 'user_id' AND i.id_value = ?",
            ["usr_official"],
        )
    )
    assert json.loads(traits["plan"]) == "enterprise" and json.loads(traits["seats"]) == 40
    events = segment_box.sql("SELECT event FROM seg_event WHERE user_id = 'usr_official'")
    assert events == [("Feature Used",)]
    # a wrong key is a 401 with the {code, message} body the library reports
    wrong = Client(
        "nope", host=segment_box.info["segment_url"], on_error=lambda e, b: errors.append(e)
    )
    wrong.identify("usr_x", {"a": 1})
    wrong.flush()
    wrong.join()
    assert len(errors) == 1 and errors[0].status == 401 and errors[0].code == "unauthorized"
