"""Change Data Capture through Salesforce's Pub/Sub API: subscribe, decode, batch.

The real gRPC client (``grpcio``, the generated stubs in ``connector/pubsub_api``) over TLS to
``[salesforce] pubsub_endpoint``, trusting ``[salesforce] ca_bundle`` (or the system store).
Every call carries ``accesstoken``, ``instanceurl`` and ``tenantid``
(``shared/docs/api-contracts-realorg.md`` section 4.2). Payloads are raw Avro binary, decoded
with the schema ``GetSchema`` returns for the event's schema id (cached by id: a schema changes
when a field is added). ``changedFields`` bitmaps become field names as Salesforce's
``ChangeEventHeaderUtility`` reads them (bit i of element 0 = top-level field i; ``'p-0xNN'`` =
fields of the compound field at position p, named ``Parent.Child``).

Flow control: the subscriber asks for ``batch_size`` events (at most 100) and asks again only
when the server reports none pending and the caller has handled what it got, so a slow caller
is never flooded. Each ``FetchResponse`` is one :class:`ChangeBatch` (events that arrived
together); keepalives are empty batches carrying the latest replay id.

Failures go through ``connector/errors.py`` (``classify_grpc``): transient ones reconnect after
the last replay id handed to the caller, waiting the HTTP session's backoff
(``connector/http.py``: ``backoff_seconds``); an expired session logs in again once; a replay
id outside the retention window raises :class:`~connector.errors.ReplayIdExpired`.
"""

from __future__ import annotations

import io
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import fastavro
import grpc

from connector.clock import from_epoch_millis
from connector.errors import (
    REPLAY_ID_INVALID,
    Action,
    ReplayIdExpired,
    TransientError,
    classify_grpc,
    error_for,
)
from connector.http import HttpSettings, backoff_seconds
from connector.pubsub_api import pubsub_api_pb2 as pb
from connector.pubsub_api import pubsub_api_pb2_grpc as pb_grpc
from connector.salesforce.session import SalesforceClient

log = logging.getLogger("leadscore.salesforce.pubsub")

LEAD_TOPIC = "/data/LeadChangeEvent"
MAX_BATCH = 100
GAP_TYPES = frozenset({"GAP_CREATE", "GAP_UPDATE", "GAP_DELETE", "GAP_UNDELETE", "GAP_OVERFLOW"})


@dataclass(frozen=True)
class ChangeEvent:
    """One decoded change event.

    Attributes:
        replay_id: Opaque position in the stream (store it as hex).
        entity: Object API name (``Lead``).
        record_ids: The records changed (several when Salesforce merged identical changes).
        change_type: ``CREATE``, ``UPDATE``, ``DELETE``, ``UNDELETE`` or a ``GAP_*`` type.
        changed_fields: Names of the fields an update changed (``Name.FirstName`` for parts of
            compound fields); empty for creates and gap events.
        commit_time: When the change committed (naive UTC, the store's convention).
        transaction_key: Shared by all events of one transaction.
        sequence_number: Order within the transaction.
        commit_user: The user who made the change.
        values: The event's non-null fields (compound fields as dicts).
        carried: Every field the event's schema has, compound fields' parts under their own
            names (``FirstName``): a field not here never reaches the subscriber (formula
            fields, ``SystemModstamp``, ``IsDeleted``), one here but absent from ``values`` is
            null (or, in an update, unchanged).
    """

    replay_id: bytes
    entity: str
    record_ids: tuple[str, ...]
    change_type: str
    changed_fields: tuple[str, ...]
    commit_time: datetime
    transaction_key: str
    sequence_number: int
    commit_user: str
    values: dict[str, Any] = field(default_factory=dict)
    carried: frozenset[str] = frozenset()

    @property
    def field_values(self) -> dict[str, Any]:
        """The non-null values by field name, compound fields' parts flattened (``FirstName``)."""
        out: dict[str, Any] = {}
        for name, value in self.values.items():
            if isinstance(value, dict):
                out.update((part, v) for part, v in value.items() if v is not None)
            else:
                out[name] = value
        return out

    @property
    def is_gap(self) -> bool:
        """Whether Salesforce could not build the event (the records must be read)."""
        return self.change_type in GAP_TYPES


@dataclass(frozen=True)
class ChangeBatch:
    """The events of one ``FetchResponse`` (empty for a keepalive).

    Attributes:
        events: Decoded events, in stream order.
        latest_replay_id: The stream position after this batch: committing it with the batch's
            work resumes a later subscription right after it.
        received_at: ``time.time()`` when the batch arrived.
    """

    events: tuple[ChangeEvent, ...]
    latest_replay_id: bytes
    received_at: float


def changed_field_names(bitmaps: list[str], schema: dict[str, Any]) -> tuple[str, ...]:
    """Turn ``changedFields`` (or ``nulledFields``/``diffFields``) bitmaps into field names.

    Args:
        bitmaps: E.g. ``['0x650004E0', '4-0x10']``.
        schema: The event's Avro schema (JSON, as parsed by ``json.loads``).

    Returns:
        Field names in schema order, ``Parent.Child`` for compound fields' parts.
    """
    fields = schema["fields"]
    names: list[str] = []
    for entry in bitmaps:
        parent, _, text = entry.rpartition("-")
        bits = int(text, 16)
        if not parent:
            names.extend(fields[i]["name"] for i in range(bits.bit_length()) if bits >> i & 1)
            continue
        compound = fields[int(parent)]
        record = next(
            part for part in compound["type"] if isinstance(part, dict) and "fields" in part
        )
        names.extend(
            f"{compound['name']}.{record['fields'][i]['name']}"
            for i in range(bits.bit_length())
            if bits >> i & 1
        )
    return tuple(names)


def schema_field_names(schema: dict[str, Any]) -> frozenset[str]:
    """The record fields a change event schema carries, compound fields' parts by their names.

    Args:
        schema: The event's Avro schema (JSON, as parsed by ``json.loads``).

    Returns:
        Field names, without the header (``Name`` -> ``FirstName``, ``LastName``, ...).
    """
    names: set[str] = set()
    for entry in schema["fields"]:
        if entry["name"] == "ChangeEventHeader":
            continue
        kinds = entry["type"] if isinstance(entry["type"], list) else [entry["type"]]
        record = next((k for k in kinds if isinstance(k, dict) and "fields" in k), None)
        if record is None:
            names.add(entry["name"])
        else:
            names.update(part["name"] for part in record["fields"])
    return frozenset(names)


class ChangeEventSubscriber:
    """Subscribes to a change event topic and yields decoded batches.

    Args:
        client: The connected org (token, instance URL, org id, TLS and retry settings).
        topic: The channel, ``/data/LeadChangeEvent`` by default.
        batch_size: Events requested at a time (1-100).
        sleep: How to wait between reconnects (default: the client's).
    """

    def __init__(
        self,
        client: SalesforceClient,
        topic: str = LEAD_TOPIC,
        *,
        batch_size: int = MAX_BATCH,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.client = client
        self.topic = topic
        self.batch_size = max(1, min(batch_size, MAX_BATCH))
        self.sleep = sleep or client.sleep
        settings = client.settings
        self.http = HttpSettings(
            timeout_seconds=settings.timeout_seconds, max_attempts=settings.max_attempts
        )
        self._schemas: dict[str, tuple[Any, dict[str, Any]]] = {}
        self._carried: dict[str, frozenset[str]] = {}
        self._channel: grpc.Channel | None = None
        self._stub: pb_grpc.PubSubStub | None = None
        self._call: Any = None
        self._closed = threading.Event()
        self.started = threading.Event()
        """Set once a Subscribe call was opened (its first request is on its way)."""
        self.reconnects = 0
        """Subscriptions opened again after a transient failure."""
        self.events_received = 0

    # Connection ---------------------------------------------------------------------------------

    def _connect(self) -> pb_grpc.PubSubStub:
        if self._stub is None:
            bundle = self.client.settings.ca_bundle
            roots = bundle.read_bytes() if bundle else None
            credentials = grpc.ssl_channel_credentials(root_certificates=roots)
            self._channel = grpc.secure_channel(self.client.settings.pubsub_endpoint, credentials)
            self._stub = pb_grpc.PubSubStub(self._channel)
        return self._stub

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        token = self.client.access_token
        assert self.client.instance_url is not None  # set by the login above
        return (
            ("accesstoken", token),
            ("instanceurl", self.client.instance_url),
            ("tenantid", self.client.tenant_id),
        )

    def close(self) -> None:
        """End an open subscription (from any thread) and close the channel."""
        self._closed.set()
        call = self._call
        if call is not None:
            call.cancel()
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._stub = None

    def __enter__(self) -> ChangeEventSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Unary calls --------------------------------------------------------------------------------

    def _unary(self, what: str, call: Callable[..., Any], request: Any) -> Any:
        """One unary RPC under the error table: refresh once, retry transient failures."""
        refreshed = False
        attempt = 0
        while True:
            token = self.client.access_token
            try:
                return call(request, metadata=self._metadata(), timeout=self.http.timeout_seconds)
            except grpc.RpcError as error:
                rule = classify_grpc(*_status(error))
                if rule.action is Action.REFRESH and not refreshed:
                    refreshed = True
                    self.client.renew_token(token)
                    continue
                attempt += 1
                if rule.action is Action.RETRY and attempt < self.http.max_attempts:
                    self.sleep(backoff_seconds(self.http, attempt))
                    continue
                raise self._error(what, error) from None

    def topic_schema_id(self) -> str:
        """``GetTopic``: the topic's current schema id (also checks access to the topic)."""
        stub = self._connect()
        info = self._unary(
            f"GetTopic {self.topic}", stub.GetTopic, pb.TopicRequest(topic_name=self.topic)
        )
        return str(info.schema_id)

    def schema(self, schema_id: str) -> tuple[Any, dict[str, Any]]:
        """``GetSchema`` once per schema id: (fastavro's parsed schema, the schema as JSON)."""
        cached = self._schemas.get(schema_id)
        if cached is None:
            stub = self._connect()
            info = self._unary(
                f"GetSchema {schema_id}", stub.GetSchema, pb.SchemaRequest(schema_id=schema_id)
            )
            document = json.loads(info.schema_json)
            cached = (fastavro.parse_schema(document), document)
            self._schemas[schema_id] = cached
        return cached

    # Subscription -------------------------------------------------------------------------------

    def batches(self, replay_id: bytes | None = None) -> Iterator[ChangeBatch]:
        """Subscribe and yield batches until :meth:`close` (or the caller stops iterating).

        Args:
            replay_id: Resume right after this position (a replay id committed with earlier
                work); None starts at the tip of the stream (``LATEST``).

        Yields:
            One batch per ``FetchResponse``; the next events are requested when the caller
            asks for the next batch.

        Raises:
            ReplayIdExpired: ``replay_id`` is outside the retention window.
            LeadscoreError: A failure the error table does not retry, or retries ran out.
        """
        position = replay_id
        failures = 0
        refreshed = False
        while not self._closed.is_set():
            token = self.client.access_token
            try:
                for batch in self._subscribe_once(position):
                    failures = 0
                    refreshed = False
                    position = batch.latest_replay_id or position
                    yield batch
                if self._closed.is_set():
                    return
                raise TransientError(f"the Pub/Sub API ended the subscription to {self.topic}")
            except grpc.RpcError as error:
                if self._closed.is_set():
                    return
                status, code = _status(error)
                rule = classify_grpc(status, code)
                if rule.action is Action.REFRESH and not refreshed:
                    refreshed = True
                    self.client.renew_token(token)
                    continue
                if rule.action is not Action.RETRY:
                    raise self._error(f"subscription to {self.topic}", error) from None
                failures += 1
                if failures >= self.http.max_attempts:
                    raise self._error(f"subscription to {self.topic}", error) from None
            except TransientError:
                failures += 1
                if failures >= self.http.max_attempts:
                    raise
            self.reconnects += 1
            wait = backoff_seconds(self.http, failures)
            log.info("Pub/Sub subscription to %s ended; reconnecting in %.1f s", self.topic, wait)
            self.sleep(wait)

    def _subscribe_once(self, position: bytes | None) -> Iterator[ChangeBatch]:
        stub = self._connect()
        requests: queue.Queue[pb.FetchRequest | None] = queue.Queue()
        first = pb.FetchRequest(topic_name=self.topic, num_requested=self.batch_size)
        if position:
            first.replay_preset = pb.ReplayPreset.CUSTOM
            first.replay_id = position
        else:
            first.replay_preset = pb.ReplayPreset.LATEST
        requests.put(first)

        def outgoing() -> Iterator[pb.FetchRequest]:
            while True:
                request = requests.get()
                if request is None:
                    return
                yield request

        call = stub.Subscribe(outgoing(), metadata=self._metadata())
        self._call = call
        self.started.set()
        try:
            for response in call:
                events = tuple(self._decode(event) for event in response.events)
                self.events_received += len(events)
                # After events, resume after the last one handed over (never past it).
                latest = events[-1].replay_id if events else bytes(response.latest_replay_id)
                yield ChangeBatch(events, latest, time.time())
                # Ask for more only when the server has delivered all it was asked for (the
                # official example's rule), after the caller handled this batch.
                if response.pending_num_requested == 0:
                    requests.put(pb.FetchRequest(num_requested=self.batch_size))
        finally:
            requests.put(None)
            self._call = None
            call.cancel()

    def _decode(self, consumer_event: pb.ConsumerEvent) -> ChangeEvent:
        event = consumer_event.event
        parsed, document = self.schema(event.schema_id)
        record = fastavro.schemaless_reader(io.BytesIO(event.payload), parsed)
        assert isinstance(record, dict)
        header = record.pop("ChangeEventHeader")
        carried = self._carried.get(event.schema_id)
        if carried is None:
            carried = self._carried[event.schema_id] = schema_field_names(document)
        return ChangeEvent(
            replay_id=bytes(consumer_event.replay_id),
            entity=str(header["entityName"]),
            record_ids=tuple(header["recordIds"]),
            change_type=str(header["changeType"]),
            changed_fields=changed_field_names(list(header.get("changedFields") or []), document),
            commit_time=from_epoch_millis(header["commitTimestamp"]),
            transaction_key=str(header["transactionKey"]),
            sequence_number=int(header["sequenceNumber"]),
            commit_user=str(header["commitUser"]),
            values={name: value for name, value in record.items() if value is not None},
            carried=carried,
        )

    def _error(self, what: str, error: grpc.RpcError) -> Exception:
        status, code = _status(error)
        rule = classify_grpc(status, code)
        endpoint = self.client.settings.pubsub_endpoint
        details = (error.details() if hasattr(error, "details") else "") or ""
        message = f"Pub/Sub API {what} at {endpoint}: {rule.meaning} ({status}: {details[:160]})"
        if code == REPLAY_ID_INVALID:
            return ReplayIdExpired(message, hint="catching up by polling, then subscribing anew")
        hint = {
            "UNAUTHENTICATED": "check the [salesforce] login settings",
            "NOT_FOUND": "enable Change Data Capture for the object in Setup",
            "PERMISSION_DENIED": "grant the integration user access to change events",
        }.get(status, "check salesforce.pubsub_endpoint; the next cycle tries again")
        return error_for(rule, message, hint=hint)


def _status(error: grpc.RpcError) -> tuple[str, str | None]:
    """(gRPC status name, ``error-code`` trailer) of a failed call."""
    code = error.code() if hasattr(error, "code") else None
    status = code.name if code is not None else "UNKNOWN"
    trailer: str | None = None
    if hasattr(error, "trailing_metadata"):
        for key, value in error.trailing_metadata() or ():
            if key == "error-code":
                trailer = str(value)
    return status, trailer
