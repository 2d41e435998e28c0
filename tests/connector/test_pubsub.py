"""Change Data Capture: the real grpcio client against the sandbox's Pub/Sub API over TLS.

Leads are created and changed through the sandbox's REST, Collections, composite and Bulk APIs;
the subscriber decodes the events with the schema from GetSchema. Covers create, update (changed
fields from the bitmap), gap events, resuming from a stored replay id, an expired replay id,
flow control, a dropped stream (reconnect) and authentication.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from connector.errors import ConfigError, ReplayIdExpired, TransientError
from connector.pubsub_api import pubsub_api_pb2 as pb
from connector.pubsub_api import pubsub_api_pb2_grpc as pb_grpc
from connector.salesforce import SalesforceClient, SalesforceSettings
from connector.salesforce.pubsub import ChangeBatch, ChangeEvent, ChangeEventSubscriber
from connector.sandbox import Sandbox

AS_OF = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(
        tmp_path, leads=60, seed=5, as_of=AS_OF, pubsub=True, pubsub_keepalive_seconds=0.3
    ) as sandbox:
        yield sandbox


def client_for(box: Sandbox, **overrides: Any) -> SalesforceClient:
    info = box.info
    values: dict[str, Any] = {
        "login_url": box.url,
        "ca_bundle": info["ca_bundle"],
        "auth": "client_credentials",
        "client_id": info["client_id"],
        "client_secret": info["client_secret"],
        "max_attempts": 3,
        "pubsub_endpoint": box.pubsub_endpoint,
        "streams": {"Lead": {"fields": ["Email"]}},
    }
    values.update(overrides)
    return SalesforceClient(SalesforceSettings.model_validate(values), sleep=lambda s: None)


def collect(
    subscriber: ChangeEventSubscriber, replay: bytes | None, want: int, limit: int = 60
) -> tuple[list[ChangeEvent], list[ChangeBatch]]:
    """Read batches until ``want`` events arrived (or ``limit`` batches: keepalives count)."""
    events: list[ChangeEvent] = []
    batches: list[ChangeBatch] = []
    for batch in subscriber.batches(replay):
        batches.append(batch)
        events.extend(batch.events)
        if len(events) >= want or len(batches) >= limit:
            break
    return events, batches


def tip(subscriber: ChangeEventSubscriber) -> bytes:
    """The stream's current position (the first keepalive of a LATEST subscription)."""
    for batch in subscriber.batches(None):
        return batch.latest_replay_id
    raise AssertionError("no keepalive")


def test_create_and_update_through_rest_collections_composite_and_bulk(box: Sandbox) -> None:
    client = client_for(box)
    sf = client.sf
    with ChangeEventSubscriber(client) as subscriber:
        start = tip(subscriber)
        created = sf.Lead.create({"FirstName": "Ada", "LastName": "Byron", "Company": "Acme"})
        lead_id = created["id"]
        sf.Lead.update(lead_id, {"Title": "CTO", "FirstName": "Augusta"})
        collection = sf.restful(
            "composite/sobjects",
            method="POST",
            json={
                "allOrNone": False,
                "records": [
                    {"attributes": {"type": "Lead"}, "LastName": f"C{i}", "Company": "Co"}
                    for i in range(3)
                ],
            },
        )
        batch = sf.restful(
            "composite/batch",
            method="POST",
            json={
                "batchRequests": [
                    {
                        "method": "PATCH",
                        "url": f"v59.0/sobjects/Lead/{lead_id}",
                        "richInput": {"Rating": "Hot"},
                    }
                ]
            },
        )
        assert not batch["hasErrors"]
        bulk = sf.bulk2.Lead.insert(records=[{"LastName": "Bulk", "Company": "B"}])
        assert bulk[0]["numberRecordsProcessed"] == 1
        # A failing record of an all-or-none request leaves no event.
        failed = sf.restful(
            "composite/sobjects",
            method="POST",
            json={
                "allOrNone": True,
                "records": [
                    {"attributes": {"type": "Lead"}, "LastName": "Ok", "Company": "Co"},
                    {"attributes": {"type": "Lead"}, "LastName": "No company"},
                ],
            },
        )
        assert not failed[0]["success"]
        events, _ = collect(subscriber, start, want=7)
    assert [e.change_type for e in events] == [
        "CREATE",
        "UPDATE",
        *["CREATE"] * 3,
        "UPDATE",
        "CREATE",
    ]
    create, update = events[0], events[1]
    assert create.record_ids == (lead_id,)
    assert create.entity == "Lead"
    assert create.changed_fields == ()
    assert create.values["Company"] == "Acme"
    assert create.values["Name"] == {"FirstName": "Ada", "LastName": "Byron"}
    assert create.commit_user == client.user_id
    assert abs((dt.datetime.utcnow() - create.commit_time).total_seconds()) < 60
    assert set(update.changed_fields) == {"Title", "LastModifiedDate", "Name.FirstName"}
    assert update.values["Title"] == "CTO"
    assert update.transaction_key != create.transaction_key
    # The three records of one Collections request share a transaction, numbered in order.
    trio = events[2:5]
    assert len({e.transaction_key for e in trio}) == 1
    assert [e.sequence_number for e in trio] == [1, 2, 3]
    assert {r for e in trio for r in e.record_ids} == {r["id"] for r in collection}
    assert set(events[5].changed_fields) == {"Rating", "LastModifiedDate"}
    assert events[6].values["Name"]["LastName"] == "Bulk"
    # Replay ids grow; each is the position to resume after.
    replays = [e.replay_id for e in events]
    assert replays == sorted(replays) and len(set(replays)) == len(replays)


def test_schema_cached_by_id_and_flow_control(box: Sandbox) -> None:
    client = client_for(box)
    sf = client.sf
    with ChangeEventSubscriber(client, batch_size=2) as subscriber:
        start = tip(subscriber)
        sf.restful(
            "composite/sobjects",
            method="POST",
            json={
                "records": [
                    {"attributes": {"type": "Lead"}, "LastName": f"F{i}", "Company": "Co"}
                    for i in range(5)
                ]
            },
        )
        events, batches = collect(subscriber, start, want=5)
        assert box.pubsub_calls.count("GetSchema") == 1
        assert subscriber.topic_schema_id()
    assert len(events) == 5
    # Never more events in one response than requested.
    assert max(len(b.events) for b in batches) <= 2


def test_gap_event_names_the_records(box: Sandbox) -> None:
    client = client_for(box)
    lead_ids = [row[0] for row in box.sql('SELECT "Id" FROM "Lead" LIMIT 2')]
    with ChangeEventSubscriber(client) as subscriber:
        start = tip(subscriber)
        box.emit_gap_event("Lead", lead_ids, "GAP_UPDATE")
        events, _ = collect(subscriber, start, want=1)
    (gap,) = events
    assert gap.is_gap and gap.change_type == "GAP_UPDATE"
    assert gap.record_ids == tuple(lead_ids)
    assert gap.changed_fields == () and set(gap.values) <= {"Name"}


def test_restart_from_stored_replay_id_neither_loses_nor_repeats(box: Sandbox) -> None:
    client = client_for(box)
    sf = client.sf
    with ChangeEventSubscriber(client) as subscriber:
        start = tip(subscriber)
        first = sf.Lead.create({"LastName": "One", "Company": "Co"})["id"]
        events, _ = collect(subscriber, start, want=1)
    stored = events[-1].replay_id.hex()  # what the store keeps
    # While nobody listens, two more leads arrive.
    later = [sf.Lead.create({"LastName": n, "Company": "Co"})["id"] for n in ("Two", "Three")]
    with ChangeEventSubscriber(client_for(box)) as again:
        resumed, _ = collect(again, bytes.fromhex(stored), want=2)
    assert [e.record_ids[0] for e in resumed] == later
    assert first not in {e.record_ids[0] for e in resumed}


def test_expired_replay_id_raises_replay_id_expired(box: Sandbox) -> None:
    client = client_for(box)
    sf = client.sf
    with ChangeEventSubscriber(client) as subscriber:
        start = tip(subscriber)
        sf.Lead.create({"LastName": "Old", "Company": "Co"})
        events, _ = collect(subscriber, start, want=1)
    stored = events[0].replay_id
    sf.Lead.create({"LastName": "Newer", "Company": "Co"})
    assert box.expire_change_events() == 2  # as if 72 hours had passed
    with ChangeEventSubscriber(client_for(box)) as again, pytest.raises(ReplayIdExpired) as info:
        collect(again, stored, want=1)
    assert "retention window" in str(info.value)
    assert "\n" not in str(info.value)


def test_dropped_stream_reconnects_after_the_last_replay_id(box: Sandbox) -> None:
    client = client_for(box)
    sf = client.sf
    with ChangeEventSubscriber(client) as subscriber:
        start = tip(subscriber)
        seen: list[ChangeEvent] = []
        created: list[str] = []
        for batch in subscriber.batches(start):
            seen.extend(batch.events)
            if not created:
                created.append(sf.Lead.create({"LastName": "A", "Company": "Co"})["id"])
            elif len(seen) == 1 and len(created) == 1:
                box.reset_pubsub_streams()  # a failover: the call ends with UNAVAILABLE
                created.append(sf.Lead.create({"LastName": "B", "Company": "Co"})["id"])
            if len(seen) >= 2:
                break
        assert subscriber.reconnects == 1
    assert [e.record_ids[0] for e in seen] == created


def test_expired_session_is_renewed_and_bad_credentials_fail(box: Sandbox) -> None:
    client = client_for(box)
    with ChangeEventSubscriber(client) as subscriber:
        tip(subscriber)
        logins = client.logins
        box.expire_sessions()
        client.sf.Lead.create({"LastName": "After", "Company": "Co"})  # HTTP renews
        box.expire_sessions()
        assert subscriber.topic_schema_id()  # gRPC renews too
        assert client.logins > logins
    # A token of another org (a tenant id that does not match) is refused.
    channel = grpc.secure_channel(
        box.pubsub_endpoint,
        grpc.ssl_channel_credentials(Path(box.info["ca_bundle"]).read_bytes()),
    )
    stub = pb_grpc.PubSubStub(channel)
    metadata = (
        ("accesstoken", client.access_token),
        ("instanceurl", box.url),
        ("tenantid", "00D000000000001"),
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.GetTopic(pb.TopicRequest(topic_name="/data/LeadChangeEvent"), metadata=metadata)
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    channel.close()
    # An unknown topic is a configuration error, one line.
    with (
        ChangeEventSubscriber(client, "/data/NoSuchChangeEvent") as missing,
        pytest.raises(ConfigError) as error,
    ):
        missing.topic_schema_id()
    assert "enable Change Data Capture" in str(error.value)


def test_untrusted_ca_fails_tls(box: Sandbox, tmp_path: Path) -> None:
    with Sandbox(tmp_path / "other", leads=20, seed=1, as_of=AS_OF) as stranger:
        client = client_for(box)
        _ = client.sf  # logged in over HTTPS with the right CA
        bad = client_for(box, ca_bundle=stranger.info["ca_bundle"])
        bad.instance_url = client.instance_url
        bad._auth = client._auth  # the same session, another trust store for gRPC
        with ChangeEventSubscriber(bad) as subscriber, pytest.raises(TransientError) as info:
            subscriber.topic_schema_id()
    assert "UNAVAILABLE" in str(info.value)
