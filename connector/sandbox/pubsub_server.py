"""The sandbox's Pub/Sub API: gRPC over TLS on its own port, serving the org's change events.

``eventbus.v1.PubSub`` from the generated stubs in ``connector/pubsub_api`` (no hand-written wire
code), with the sandbox's CA and leaf certificate. What it implements, per
``shared/docs/api-contracts-realorg.md`` section 4:

- Every call must carry the metadata ``accesstoken`` (a token the sandbox's OAuth or SOAP login
  issued and that has not expired), ``instanceurl`` (the sandbox's HTTPS URL) and ``tenantid``
  (the org id); otherwise ``UNAUTHENTICATED`` (the status is inferred: the contract lists it as
  not found).
- ``GetTopic`` for ``/data/<Object>ChangeEvent`` (captured objects) and ``/data/ChangeEvents``;
  ``GetSchema`` for any schema id an event carries; ``Publish`` is refused (change events are
  not published by clients).
- ``Subscribe``: the first ``FetchRequest`` names the topic and the replay start (``LATEST``,
  ``EARLIEST``, ``CUSTOM`` = after that replay id); ``num_requested`` adds to the pending count,
  at most 100 outstanding; events are delivered as they commit, several per ``FetchResponse``;
  with nothing to deliver an empty ``FetchResponse`` carrying the latest replay id is sent every
  ``keepalive_seconds`` (270 s in Salesforce; configurable). A later request naming another
  topic ends the call with ``INVALID_ARGUMENT``.
- A ``CUSTOM`` replay id that is no longer retained (or was never issued) ends the call with
  ``INVALID_ARGUMENT`` and the trailer ``error-code:
  sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted``, the code Salesforce's
  Pub/Sub documentation gives for "The Replay ID validation failed ... within the retention
  window" (quoted in pozil/pub-sub-api-node-client issue 4; the status is inferred).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc

from connector.pubsub_api import pubsub_api_pb2 as pb
from connector.pubsub_api import pubsub_api_pb2_grpc as pb_grpc
from connector.sandbox.change_events import ChangeEventLog, replay_bytes, replay_number
from connector.sandbox.salesforce_api import SalesforceApi
from connector.sandbox.tls import TlsFiles

MAX_NUM_REQUESTED = 100
AUTH_ERROR = "sfdc.platform.eventbus.grpc.service.auth.error"
REPLAY_ERROR = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"
TOPIC_ERROR = "sfdc.platform.eventbus.grpc.service.topic.not.found"
_POLL_SECONDS = 0.05


class _Stream:
    """One Subscribe call's flow-control state, shared with its request-reading thread."""

    def __init__(self) -> None:
        self.pending = 0
        self.closed = False
        self.error: tuple[grpc.StatusCode, str, str] | None = None


class PubSubService(pb_grpc.PubSubServicer):
    """``eventbus.v1.PubSub`` over the sandbox's change event log.

    Args:
        api: The Salesforce API (tokens, org id, objects).
        events: The change event log.
        instance_url: Function returning the sandbox's HTTPS URL.
        keepalive_seconds: Interval of empty keepalive responses.
    """

    def __init__(
        self,
        api: SalesforceApi,
        events: ChangeEventLog,
        instance_url: Callable[[], str],
        keepalive_seconds: float = 270.0,
    ) -> None:
        self.api = api
        self.events = events
        self.instance_url = instance_url
        self.keepalive_seconds = keepalive_seconds
        self.calls: list[str] = []
        """Every RPC served, by method name (tests count reconnects)."""
        self._generation = 0
        self._lock = threading.Lock()

    def reset_streams(self) -> None:
        """End every open Subscribe call with ``UNAVAILABLE`` (a restart, as clients see it)."""
        with self._lock:
            self._generation += 1

    # Authentication and topics ------------------------------------------------------------

    def _abort(
        self, context: grpc.ServicerContext, code: grpc.StatusCode, error: str, msg: str
    ) -> Any:
        context.set_trailing_metadata((("error-code", error),))
        context.abort(code, msg)

    def _authenticate(self, context: grpc.ServicerContext, method: str) -> None:
        with self._lock:
            self.calls.append(method)
        metadata = {key: value for key, value in context.invocation_metadata()}
        token = str(metadata.get("accesstoken", ""))
        instance = str(metadata.get("instanceurl", "")).rstrip("/")
        tenant = str(metadata.get("tenantid", ""))
        org_id = self.api.credentials.org_id
        if not token or not self.api.token_is_valid(token):
            self._abort(
                context, grpc.StatusCode.UNAUTHENTICATED, AUTH_ERROR, "Session expired or invalid"
            )
        if instance != self.instance_url().rstrip("/") or tenant[:15] != org_id[:15]:
            self._abort(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                AUTH_ERROR,
                "instanceurl or tenantid does not match the access token's org",
            )

    def _topic_entities(self, topic: str) -> frozenset[str] | None:
        if topic == "/data/ChangeEvents":
            return self.events.entities
        for entity in self.events.entities:
            if topic == f"/data/{entity}ChangeEvent":
                return frozenset({entity})
        return None

    def _require_topic(self, context: grpc.ServicerContext, topic: str) -> frozenset[str]:
        entities = self._topic_entities(topic)
        if entities is None:
            self._abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                TOPIC_ERROR,
                f"Topic {topic!r} does not exist or change data capture is not enabled for it",
            )
        assert entities is not None
        return entities

    # RPCs ----------------------------------------------------------------------------------------

    def GetTopic(self, request: pb.TopicRequest, context: grpc.ServicerContext) -> pb.TopicInfo:
        """Describe a change event topic."""
        self._authenticate(context, "GetTopic")
        entities = self._require_topic(context, request.topic_name)
        obj = self.api.org_objects[sorted(entities)[0].lower()]
        return pb.TopicInfo(
            topic_name=request.topic_name,
            tenant_guid=self.api.credentials.org_id,
            can_publish=False,
            can_subscribe=True,
            schema_id=self.events.schema_for(obj).schema_id,
            rpc_id=str(uuid.uuid4()),
        )

    def GetSchema(self, request: pb.SchemaRequest, context: grpc.ServicerContext) -> pb.SchemaInfo:
        """The Avro schema (JSON) of a schema id."""
        self._authenticate(context, "GetSchema")
        schema = self.events.schema_by_id(request.schema_id)
        if schema is None:
            self._abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                "sfdc.platform.eventbus.grpc.schema.not.found",
                f"Schema {request.schema_id!r} not found",
            )
        assert schema is not None
        return pb.SchemaInfo(
            schema_json=schema.schema_json, schema_id=schema.schema_id, rpc_id=str(uuid.uuid4())
        )

    def Publish(self, request: pb.PublishRequest, context: grpc.ServicerContext) -> Any:
        """Refused: change events come from record changes, not from clients."""
        self._authenticate(context, "Publish")
        self._abort(
            context,
            grpc.StatusCode.PERMISSION_DENIED,
            "sfdc.platform.eventbus.grpc.publish.not.allowed",
            f"Publishing to {request.topic_name!r} is not allowed",
        )

    def Subscribe(
        self, request_iterator: Iterator[pb.FetchRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.FetchResponse]:
        """Stream a topic's change events under the client's flow control."""
        self._authenticate(context, "Subscribe")
        try:
            first = next(request_iterator)
        except StopIteration:
            return
        topic = first.topic_name
        entities = self._require_topic(context, topic)
        floor, latest = self.events.floor, self.events.latest()
        if first.replay_preset == pb.ReplayPreset.CUSTOM:
            position = replay_number(first.replay_id)
            if position is None or position < floor or position > latest:
                self._abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    REPLAY_ERROR,
                    "The Replay ID validation failed. Ensure that the replay_id field value in "
                    "FetchRequest is valid and refers to an event that is within the retention "
                    "window.",
                )
            assert position is not None
        elif first.replay_preset == pb.ReplayPreset.EARLIEST:
            position = floor
        else:
            position = latest
        stream = _Stream()
        stream.pending = min(max(first.num_requested, 0), MAX_NUM_REQUESTED)
        reader = threading.Thread(
            target=self._read_requests,
            args=(request_iterator, stream, topic),
            name="pubsub-fetch-requests",
            daemon=True,
        )
        reader.start()
        with self._lock:
            generation = self._generation
        last_sent = time.monotonic()
        while context.is_active():
            if stream.error is not None:
                self._abort(context, *stream.error)
            with self._lock:
                if self._generation != generation:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "The stream was reset")
            if stream.closed:
                return
            rows = []
            if stream.pending > 0:
                rows = self.events.after(entities, position, stream.pending)
            if rows:
                position = rows[-1][0]
                with self.events.changed:
                    stream.pending -= len(rows)
                yield pb.FetchResponse(
                    events=[
                        pb.ConsumerEvent(
                            event=pb.ProducerEvent(id=event_id, schema_id=schema_id, payload=data),
                            replay_id=replay_bytes(replay),
                        )
                        for replay, event_id, schema_id, data in rows
                    ],
                    latest_replay_id=replay_bytes(position),
                    rpc_id=str(uuid.uuid4()),
                    pending_num_requested=stream.pending,
                )
                last_sent = time.monotonic()
                continue
            if time.monotonic() - last_sent >= self.keepalive_seconds:
                # Nothing to deliver: the latest replay id, but never past an event the
                # client has not received yet (it may store this id as its cursor).
                undelivered = self.events.after(entities, position, 1)
                latest_id = position if undelivered else max(position, self.events.latest())
                yield pb.FetchResponse(
                    latest_replay_id=replay_bytes(latest_id),
                    rpc_id=str(uuid.uuid4()),
                    pending_num_requested=stream.pending,
                )
                last_sent = time.monotonic()
                continue
            with self.events.changed:
                self.events.changed.wait(_POLL_SECONDS)

    def _read_requests(
        self, request_iterator: Iterator[pb.FetchRequest], stream: _Stream, topic: str
    ) -> None:
        """Add each later FetchRequest's num_requested to the pending count (at most 100)."""
        try:
            for request in request_iterator:
                if request.topic_name and request.topic_name != topic:
                    stream.error = (
                        grpc.StatusCode.INVALID_ARGUMENT,
                        TOPIC_ERROR,
                        "topic_name differs from the first FetchRequest's",
                    )
                with self.events.changed:
                    stream.pending = min(
                        stream.pending + max(request.num_requested, 0), MAX_NUM_REQUESTED
                    )
                    self.events.changed.notify_all()
        except grpc.RpcError:
            pass  # the call ended
        finally:
            stream.closed = True
            with self.events.changed:
                self.events.changed.notify_all()


class PubSubServer:
    """A gRPC server on 127.0.0.1 serving :class:`PubSubService` over TLS.

    Args:
        service: The servicer.
        tls: The sandbox's TLS material (the same CA as its HTTPS port).
        host: Address to bind.
        port: Port (0 picks a free one).
    """

    def __init__(self, service: PubSubService, tls: TlsFiles, host: str, port: int = 0) -> None:
        self.service = service
        # Each open Subscribe call holds a worker thread; unary calls need a few more.
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="pubsub")
        )
        pb_grpc.add_PubSubServicer_to_server(service, self._server)
        credentials = grpc.ssl_server_credentials(
            [(tls.server_key.read_bytes(), tls.server_cert.read_bytes())]
        )
        self.port = self._server.add_secure_port(f"{host}:{port}", credentials)
        if self.port == 0:
            raise OSError(f"could not bind the Pub/Sub API to {host}:{port}")
        self._server.start()

    def stop(self) -> None:
        """Stop serving; open streams end."""
        self.service.reset_streams()
        self._server.stop(grace=0.5).wait(5)
