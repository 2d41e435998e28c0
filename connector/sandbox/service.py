"""The Sandbox: a generated org served over HTTPS on 127.0.0.1, plus inspection helpers."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pandas as pd

from connector.sandbox.change_events import DEFAULT_RETENTION_SECONDS, ChangeEventLog
from connector.sandbox.database import DATABASE_NAME, Database, create_indexes, create_schema
from connector.sandbox.faults import FaultPlan
from connector.sandbox.generator import (
    GENERATOR_VERSION,
    INTEGRATION_USERNAME,
    ORGS,
    generate_org,
    integration_user_id,
)
from connector.sandbox.ids import make_id
from connector.sandbox.oauth import REFRESH_TOKEN_PREFIX
from connector.sandbox.org_rules import OrgFeatures
from connector.sandbox.profiles import export_segment
from connector.sandbox.salesforce_api import (
    ApiRequest,
    ApiResponse,
    Credentials,
    RequestRecord,
    SalesforceApi,
)
from connector.sandbox.schema import API_VERSION
from connector.sandbox.security import INTEGRATION_PROFILE
from connector.sandbox.segment_api import SegmentApi, SegmentCredentials, SegmentOptions
from connector.sandbox.server import SandboxServer

if TYPE_CHECKING:
    from connector.sandbox.pubsub_server import PubSubServer
from connector.sandbox.tls import TlsFiles, ensure_tls_files, make_server_context

HOST = "127.0.0.1"
GROUND_TRUTH_COLUMNS = (
    "lead_id",
    "anchor_at",
    "p_true",
    "label",
    "window_closed",
    "converted_at",
    "product_usage_14d",
    "order_revenue_90d",
)


def _secret(seed: int, purpose: str, length: int) -> str:
    """Derive a stable, seed-specific credential (local test credentials, not secrets)."""
    digest = hashlib.sha256(f"leadscore-sandbox:{seed}:{purpose}".encode()).hexdigest()
    return digest[:length]


class _Routes:
    """Sends ``/v1/...`` to the Segment APIs and everything else to Salesforce (one HTTPS port)."""

    def __init__(self, salesforce: SalesforceApi, segment: SegmentApi) -> None:
        self.salesforce = salesforce
        self.segment = segment

    def handle(self, request: ApiRequest) -> ApiResponse:
        """Route one request."""
        if self.segment.handles(request.path):
            return self.segment.handle(request)
        return self.salesforce.handle(request)


def _now_floored_to_day() -> dt.datetime:
    # Anchors and campaigns fall on whole UTC days, so an as_of a few hours later is a different
    # org (issue 13, defect 17); a whole-day shift gives the same org, shifted.
    now = dt.datetime.now(dt.UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def _epoch(moment: dt.datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp())


class Sandbox:
    """A local stand-in for a Salesforce org: generated data served over real HTTPS.

    Args:
        workdir: Directory for ``sandbox.sqlite``, ``tls/`` and the JWT key.
        leads: Number of leads to generate.
        seed: Random seed of the generator.
        port: TCP port on 127.0.0.1 (0 picks a free one).
        as_of: End of the generated history (UTC); default today's start (now floored to the
            UTC day), so that one seed gives the same org, shifted by whole days, on every run.
        page_size: Cap on records per REST query page (may be below Salesforce's 200 minimum
            so that tests exercise paging).
        token_ttl_seconds: Lifetime of issued access tokens.
        daily_api_limit: ``DailyApiRequests`` allowance; past it requests get 403.
        regenerate: False reuses ``workdir/sandbox.sqlite`` when it holds an org generated with
            the same seed and lead count (and ``as_of``, when given).
        on_progress: Called as ``(stage, done, total)`` during generation.
        faults: The fault plan requests and record writes pass through (default: none).
        edit_converted_leads: The integration user holds "View and Edit Converted Leads", so
            scores can be written to converted leads; False makes them read-only
            (``CANNOT_UPDATE_CONVERTED_LEAD``), as in an org without that permission.
        bulk_polls_to_complete: Bulk API 2.0 jobs report ``JobComplete`` from this job-info
            request on (1: the first poll).
        new_field_access: Fields created through the Tooling API are visible and editable to the
            integration user at once; False models an org where field-level security must be
            granted first (``grant_field_access``).
        segment: Also generate the people's Segment profiles and events (their product usage
            then enters the hidden model). The Segment APIs are served either way.
        segment_options: Profile API rate limit and Tracking API 429 injection.
        field_security: ``granted`` (default: the integration user's and the sales profile
            already hold the org's custom fields) or ``enforced`` (a new org: no profile reads
            any custom field until a permission set grants it); see
            ``connector/sandbox/security.py``.
        setup_rights: The integration user may manage and assign permission sets and customize
            the application (Metadata API); False models one that ``setup`` cannot grant with.
        org_features: Validation and duplicate rules, record types, currencies and formula
            fields (``connector/sandbox/org_rules.py``).
        org: The hidden model: ``classic``, ``interacting`` or ``drifting``
            (``connector.sandbox.generator.ORGS``; ``docs/sandbox.md``).
        pubsub: Serve the Pub/Sub API (gRPC over TLS, same CA) on its own port and capture
            change events of ``cdc_entities`` (``connector/sandbox/pubsub_server.py``).
        pubsub_port: Its TCP port on 127.0.0.1 (0 picks a free one).
        pubsub_keepalive_seconds: Interval of the empty keepalive responses (270 in Salesforce).
        change_event_retention_seconds: How long change events stay replayable (72 h).
        cdc_entities: Objects selected for Change Data Capture.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        leads: int = 20_000,
        seed: int = 42,
        port: int = 0,
        as_of: dt.datetime | None = None,
        page_size: int = 2000,
        token_ttl_seconds: int = 7200,
        daily_api_limit: int = 100_000,
        regenerate: bool = True,
        on_progress: Callable[[str, int, int], None] | None = None,
        faults: FaultPlan | None = None,
        edit_converted_leads: bool = True,
        bulk_polls_to_complete: int = 1,
        new_field_access: bool = True,
        segment: bool = False,
        segment_options: SegmentOptions | None = None,
        field_security: str = "granted",
        setup_rights: bool = True,
        org_features: OrgFeatures | None = None,
        org: str = "classic",
        pubsub: bool = False,
        pubsub_port: int = 0,
        pubsub_keepalive_seconds: float = 270.0,
        change_event_retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        cdc_entities: Sequence[str] = ("Lead",),
    ) -> None:
        if org not in ORGS:
            raise ValueError(f"org must be one of {', '.join(ORGS)}, not {org!r}")
        self.org = org
        self.org_features = org_features
        self.workdir = Path(workdir)
        self.field_security = field_security
        self.setup_rights = setup_rights
        self.bulk_polls_to_complete = bulk_polls_to_complete
        self.new_field_access = new_field_access
        self.segment = segment
        self.segment_options = segment_options or SegmentOptions(seed=seed)
        self.segment_credentials = SegmentCredentials(
            write_key=_secret(seed, "segment-write-key", 32),
            access_token=_secret(seed, "segment-profile-token", 40),
            space_id=f"spa_{_secret(seed, 'segment-space', 16)}",
        )
        self.edit_converted_leads = edit_converted_leads
        self.leads = leads
        self.seed = seed
        self.port = port
        self._as_of = as_of
        self.page_size = page_size
        self.token_ttl_seconds = token_ttl_seconds
        self.daily_api_limit = daily_api_limit
        self.regenerate = regenerate
        self.on_progress = on_progress
        self._faults = faults or FaultPlan()
        self.credentials = Credentials(
            org_id=make_id("00D", 1),
            user_id=integration_user_id(),
            username=INTEGRATION_USERNAME,
            password=f"Sandbox-{_secret(seed, 'password', 12)}",
            security_token=_secret(seed, "token", 24),
            client_id=f"3MVG9{_secret(seed, 'client', 40)}",
            client_secret=_secret(seed, "secret", 48).upper(),
        )
        # The integration user's consent to the connected app, as if given once in a browser.
        self.refresh_token = REFRESH_TOKEN_PREFIX + _secret(seed, "refresh-token", 64)
        self._db: Database | None = None
        self._api: SalesforceApi | None = None
        self._segment_api: SegmentApi | None = None
        self._server: SandboxServer | None = None
        self._thread: threading.Thread | None = None
        self._tls: TlsFiles | None = None
        self._as_of_epoch: int | None = None
        self._stopped = threading.Event()
        self.pubsub = pubsub
        self.pubsub_port = pubsub_port
        self.pubsub_keepalive_seconds = pubsub_keepalive_seconds
        self.change_event_retention_seconds = change_event_retention_seconds
        self.cdc_entities = tuple(cdc_entities)
        self._change_events: ChangeEventLog | None = None
        self._pubsub_server: PubSubServer | None = None

    # Lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Generate the org if needed, bind 127.0.0.1:port and serve in a daemon thread.

        Returns:
            The sandbox itself.
        """
        if self._server is not None:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._tls = ensure_tls_files(self.workdir)
        self._prepare_database()
        self._db = Database(self.workdir / DATABASE_NAME)
        self._api = SalesforceApi(
            self._db,
            self.credentials,
            self._tls.jwt_cert.read_bytes(),
            lambda: self.url,
            page_size=self.page_size,
            token_ttl_seconds=self.token_ttl_seconds,
            daily_api_limit=self.daily_api_limit,
            faults=self._faults,
            edit_converted_leads=self.edit_converted_leads,
            bulk_polls_to_complete=self.bulk_polls_to_complete,
            new_field_access=self.new_field_access and self.field_security == "granted",
            field_security=self.field_security,
            setup_rights=self.setup_rights,
            seed=self.seed,
            org_features=self.org_features,
        )
        self._api.refresh_tokens.register(self.refresh_token, self.credentials.username)
        self._segment_api = SegmentApi(
            self._db,
            self.segment_credentials,
            self.segment_options,
            lambda: float(self._as_of_epoch or time.time()),
            faults=self._faults,
        )
        self._server = SandboxServer(
            (HOST, self.port), _Routes(self._api, self._segment_api), make_server_context(self._tls)
        )
        if self.pubsub:
            self._start_pubsub()
        self._stopped.clear()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"sandbox-{self._server.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def _start_pubsub(self) -> None:
        from connector.sandbox.pubsub_server import PubSubServer, PubSubService  # grpc: opt-in

        db, api, tls = self._require_db(), self._require_api(), self._tls
        assert tls is not None
        self._change_events = ChangeEventLog(
            db.connection, db.lock, self.cdc_entities, self.change_event_retention_seconds
        )
        self._change_events.expire(time.time())
        api.change_events = self._change_events
        service = PubSubService(
            api, self._change_events, lambda: self.url, self.pubsub_keepalive_seconds
        )
        self._pubsub_server = PubSubServer(service, tls, HOST, self.pubsub_port)

    def serve_forever(self) -> None:
        """Start (if needed) and block until ``stop()`` or KeyboardInterrupt."""
        self.start()
        try:
            while not self._stopped.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving, close connections and the database. Safe to call twice."""
        pubsub, self._pubsub_server = self._pubsub_server, None
        if pubsub is not None:
            pubsub.stop()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.close_connections()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._db is not None:
            self._db.close()
            self._db = None
        self._stopped.set()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # Generation ----------------------------------------------------------------------------------

    def _stored_meta(self, path: Path) -> dict[str, str] | None:
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                return dict(conn.execute("SELECT key, value FROM _meta").fetchall())
            finally:
                conn.close()
        except sqlite3.Error:
            return None

    def _prepare_database(self) -> None:
        path = self.workdir / DATABASE_NAME
        if not self.regenerate and path.exists():
            meta = self._stored_meta(path)
            wanted_as_of = None if self._as_of is None else str(_epoch(self._as_of))
            if (
                meta is not None
                and meta.get("seed") == str(self.seed)
                and meta.get("leads") == str(self.leads)
                and meta.get("generator_version") == GENERATOR_VERSION
                and meta.get("segment") == str(int(self.segment))
                and meta.get("org", "classic") == self.org
                and wanted_as_of in (None, meta.get("as_of"))
            ):
                self._as_of_epoch = int(meta["as_of"])
                return
        as_of = self._as_of if self._as_of is not None else _now_floored_to_day()
        self._as_of_epoch = _epoch(as_of)
        self._generate(path)

    def _generate(self, path: Path) -> None:
        """Generate into a temporary file, then move it into place (never a half-built org)."""
        assert self._as_of_epoch is not None
        partial = path.with_suffix(".sqlite.partial")
        partial.unlink(missing_ok=True)
        conn = sqlite3.connect(partial, isolation_level=None)
        try:
            # A fresh file we can rebuild: no journal, no fsync while loading.
            conn.execute("PRAGMA journal_mode=OFF")
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("BEGIN")
            create_schema(conn)
            generate_org(
                conn,
                seed=self.seed,
                leads=self.leads,
                as_of=self._as_of_epoch,
                on_progress=self.on_progress,
                segment=self.segment,
                org=self.org,
            )
            if self.on_progress:
                self.on_progress("indexes", 0, 1)
            create_indexes(conn)
            conn.executemany(
                "INSERT INTO _meta (key, value) VALUES (?, ?)",
                [
                    ("seed", str(self.seed)),
                    ("leads", str(self.leads)),
                    ("as_of", str(self._as_of_epoch)),
                    ("generator_version", GENERATOR_VERSION),
                    ("segment", str(int(self.segment))),
                    ("org", self.org),
                    ("generated_at", str(int(time.time()))),
                ],
            )
            conn.execute("COMMIT")
        finally:
            conn.close()
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        os.replace(partial, path)
        if self.on_progress:
            self.on_progress("indexes", 1, 1)

    # Properties and inspection ---------------------------------------------------------------

    def _require_api(self) -> SalesforceApi:
        if self._api is None:
            raise RuntimeError("the sandbox is not started")
        return self._api

    def _require_db(self) -> Database:
        if self._db is None:
            raise RuntimeError("the sandbox is not started")
        return self._db

    @property
    def faults(self) -> FaultPlan:
        """The fault plan every request and record write passes through."""
        return self._faults

    @faults.setter
    def faults(self, plan: FaultPlan) -> None:
        self._faults = plan
        if self._api is not None:
            self._api.faults = plan
        if self._segment_api is not None:
            self._segment_api.faults = plan

    @property
    def url(self) -> str:
        """The instance URL, ``https://127.0.0.1:PORT``."""
        if self._server is None:
            raise RuntimeError("the sandbox is not started")
        return f"https://{HOST}:{self._server.port}"

    @property
    def pubsub_endpoint(self) -> str:
        """The Pub/Sub API's ``host:port`` (gRPC over TLS, trusting ``ca_bundle``)."""
        if self._pubsub_server is None:
            raise RuntimeError("the sandbox's Pub/Sub API is not started (pubsub=True)")
        return f"{HOST}:{self._pubsub_server.port}"

    @property
    def pubsub_calls(self) -> list[str]:
        """Every Pub/Sub RPC served, by method name, in order."""
        if self._pubsub_server is None:
            raise RuntimeError("the sandbox's Pub/Sub API is not started (pubsub=True)")
        return list(self._pubsub_server.service.calls)

    def _require_change_events(self) -> ChangeEventLog:
        if self._change_events is None:
            raise RuntimeError("the sandbox's Pub/Sub API is not started (pubsub=True)")
        return self._change_events

    def emit_gap_event(self, sobject: str, ids: list[str], change_type: str = "GAP_UPDATE") -> int:
        """Commit a gap event naming records, as Salesforce does when it cannot build an event.

        Args:
            sobject: Object API name (captured).
            ids: The records.
            change_type: ``GAP_CREATE``, ``GAP_UPDATE``, ``GAP_DELETE``, ``GAP_UNDELETE`` or
                ``GAP_OVERFLOW``.

        Returns:
            The gap event's replay id (as a number).
        """
        events = self._require_change_events()
        obj = self._require_api().org_objects[sobject.lower()]
        return events.emit_gap(obj, ids, change_type, int(time.time()), self.credentials.user_id)

    def expire_change_events(self, retention_seconds: float = 0.0) -> int:
        """Drop change events older than a window now, as if time had passed (default: all).

        Args:
            retention_seconds: Keep events committed within this many seconds.

        Returns:
            The number of events dropped; replay ids up to the newest one dropped are expired.
        """
        return self._require_change_events().expire(time.time(), retention_seconds)

    def reset_pubsub_streams(self) -> None:
        """End every open Subscribe call with ``UNAVAILABLE`` (a failover, as clients see it)."""
        if self._pubsub_server is None:
            raise RuntimeError("the sandbox's Pub/Sub API is not started (pubsub=True)")
        self._pubsub_server.service.reset_streams()

    @property
    def as_of(self) -> dt.datetime:
        """End of the generated history (UTC)."""
        if self._as_of_epoch is None:
            raise RuntimeError("the sandbox is not started")
        return dt.datetime.fromtimestamp(self._as_of_epoch, dt.UTC)

    @property
    def info(self) -> dict[str, Any]:
        """Connection details for clients (JSON-safe)."""
        tls = self._tls
        if tls is None:
            raise RuntimeError("the sandbox is not started")
        return {
            "salesforce_url": self.url,
            "login_url": self.url,
            "client_id": self.credentials.client_id,
            "client_secret": self.credentials.client_secret,
            "username": self.credentials.username,
            "password": self.credentials.password,
            "security_token": self.credentials.security_token,
            "refresh_token": self.refresh_token,
            "jwt_private_key": str(tls.jwt_private_key),
            "ca_bundle": str(tls.ca_cert),
            "api_version": API_VERSION,
            "seed": self.seed,
            "leads": self.leads,
            "org": self.org,
            "as_of": self.as_of.isoformat(),
            # Segment: both APIs are served on the same port, under /v1/.
            "segment_url": self.url,
            "segment_write_key": self.segment_credentials.write_key,
            "profile_api_url": self.url,
            "profile_api_token": self.segment_credentials.access_token,
            "space_id": self.segment_credentials.space_id,
            "segment_data": self.segment,
            # Pub/Sub API (gRPC over TLS, same CA); None unless started with pubsub=True.
            "pubsub_endpoint": self.pubsub_endpoint if self._pubsub_server else None,
            "org_id": self.credentials.org_id,
            # Sales reps log in with the OAuth username-password flow (UI API as a rep).
            "sales_users": [
                {"username": user.username, "password": user.password}
                for user in self._require_api().security.sales_users
            ],
        }

    @property
    def request_log(self) -> list[RequestRecord]:
        """Every HTTP request served, in order."""
        return self._require_api().request_log

    @property
    def segment_requests(self) -> list[RequestRecord]:
        """Every Segment request served (categories ``tracking`` and ``profiles``), in order."""
        if self._segment_api is None:
            raise RuntimeError("the sandbox is not started")
        return self._segment_api.request_log

    @property
    def segment_api(self) -> SegmentApi:
        """The Segment stand-in (counters such as ``rate_limited``)."""
        if self._segment_api is None:
            raise RuntimeError("the sandbox is not started")
        return self._segment_api

    def export_segment(self, directory: Path | None = None) -> dict[str, Path]:
        """Write the CDP history as a warehouse / Profiles Sync export (JSON lines).

        Args:
            directory: where to write (default ``workdir/segment_export``).

        Returns:
            ``{"tracks": path, "identifies": path, "id_graph": path}``.
        """
        self._require_db()
        target = Path(directory) if directory is not None else self.workdir / "segment_export"
        reader = sqlite3.connect(f"file:{self.workdir / DATABASE_NAME}?mode=ro", uri=True)
        try:
            return export_segment(reader, target)
        finally:
            reader.close()

    def api_calls(self) -> int:
        """Number of ``/services/data`` requests counted against the daily allowance.

        Returns:
            The count.
        """
        return self._require_api().api_used

    def expire_sessions(self) -> None:
        """Invalidate every issued token: the next call answers 401 ``INVALID_SESSION_ID``."""
        self._require_api().expire_sessions()

    def remove_field(self, sobject: str, field_name: str) -> None:
        """Make a field disappear from describe and SOQL, as in an org that lacks it.

        Args:
            sobject: Object API name.
            field_name: Field API name (e.g. ``Lead_Score__c``).
        """
        self._require_api().set_field(sobject, field_name, remove=True)

    def set_field_access(self, sobject: str, field_name: str, *, updateable: bool) -> None:
        """Change the integration user's field-level security on a field.

        Args:
            sobject: Object API name.
            field_name: Field API name.
            updateable: False makes the field read-only (describe ``updateable: false``; writes
                fail with ``INVALID_FIELD_FOR_INSERT_UPDATE``). For custom fields this is the
                profile's field permission, so a permission set granting Edit overrides it.
        """
        api = self._require_api()
        obj = api.org_objects.get(sobject.lower())
        definition = obj.field(field_name) if obj is not None else None
        if obj is not None and definition is not None and definition.custom:
            # Custom fields: the integration user's profile's FieldPermissions row, which a
            # permission set granting Edit can override (as in a real org).
            api.security.grant_profile(
                INTEGRATION_PROFILE, obj.name, definition.name, edit=updateable
            )
            return
        api.set_field(sobject, field_name, updateable=updateable)

    def grant_field_access(self, sobject: str, field_name: str) -> None:
        """Grant access to a field created through the Tooling API with ``new_field_access=False``.

        Args:
            sobject: Object API name.
            field_name: Field API name.
        """
        self._require_api().tooling.grant(sobject, field_name)

    def set_formula_values(self, sobject: str, values: dict[str, dict[str, Any]]) -> None:
        """Change formula or roll-up results without moving ``SystemModstamp``.

        Args:
            sobject: Object API name.
            values: Record id -> {formula field: new value}.
        """
        self._require_api().rules.set_formula_values(sobject, values)

    def sql(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only SQL statement against the sandbox database.

        Datetimes are stored as UTC epoch seconds and dates as ``YYYY-MM-DD`` text (see
        ``connector/sandbox/schema.py``).

        Args:
            query: SQL text.
            params: Bound parameters.

        Returns:
            The rows.
        """
        return self._require_db().inspect(query, params)

    def update_records(self, sobject: str, rows: list[dict[str, Any]]) -> None:
        """Simulate a user editing records in the UI.

        Sets the fields and bumps ``LastModifiedDate``/``SystemModstamp`` to now; such edits are
        not API writes, so they do not appear in ``write_log``.

        Args:
            sobject: Object API name.
            rows: Records with ``Id`` plus the fields to set.
        """
        self._require_api().update_records_as_user(sobject, rows)

    def create_records(self, sobject: str, rows: list[dict[str, Any]]) -> list[str]:
        """Simulate a user creating records in the UI (a Campaign for an audience, say).

        Such records are not API writes, so they do not appear in ``write_log``.

        Args:
            sobject: Object API name.
            rows: The records' fields (required fields included).

        Returns:
            The new ids.
        """
        return self._require_api().create_records_as_user(sobject, rows)

    def delete_records(self, sobject: str, ids: list[str]) -> None:
        """Simulate a user deleting records in the UI: they go to the recycle bin.

        Such deletes are not API writes, so they do not appear in ``write_log``.

        Args:
            sobject: Object API name.
            ids: The records' ids.
        """
        self._require_api().delete_records_as_user(sobject, ids)

    def empty_recycle_bin(self, sobject: str) -> int:
        """Purge an object's deleted records, as Salesforce does after 15 days.

        Args:
            sobject: Object API name.

        Returns:
            The number of records purged (gone from ``queryAll`` too).
        """
        return self._require_api().empty_recycle_bin(sobject)

    def ground_truth(self) -> pd.DataFrame:
        """The hidden model's answer, one row per lead with an anchor.

        Returns:
            Columns ``lead_id``, ``anchor_at`` (tz-naive UTC midnight of the first response),
            ``p_true``, ``label`` (0/1: converts within 30 days of the anchor, as drawn by the
            generator), ``window_closed`` (anchor_at + 30 days <= as_of) and ``converted_at``
            (tz-naive UTC time of the drawn conversion, NaT if none; after as_of it has not
            happened yet in Salesforce).
        """
        rows = self._require_db().inspect(
            "SELECT lead_id, anchor_at, p_true, label, window_closed, converted_at, "
            "product_usage_14d, order_revenue_90d FROM _ground_truth ORDER BY lead_id"
        )
        frame = pd.DataFrame(rows, columns=list(GROUND_TRUTH_COLUMNS))
        frame["lead_id"] = frame["lead_id"].astype(object)
        frame["anchor_at"] = pd.to_datetime(frame["anchor_at"], unit="s")
        frame["p_true"] = frame["p_true"].astype(float)
        frame["label"] = frame["label"].astype(int)
        frame["window_closed"] = frame["window_closed"].astype(bool)
        frame["converted_at"] = pd.to_datetime(frame["converted_at"], unit="s")
        for name in ("product_usage_14d", "order_revenue_90d"):
            frame[name] = frame[name].astype(float)
        return frame
