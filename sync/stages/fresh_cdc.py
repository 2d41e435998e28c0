"""The fresh job's change data capture trigger: ``fresh.trigger = "cdc"``.

``serve`` runs :meth:`CdcTrigger.run` on the fresh thread instead of the polling cycles. It
subscribes to ``/data/LeadChangeEvent`` through the Pub/Sub API
(:mod:`connector.salesforce.pubsub`) from the replay id stored with the last handled batch, and
turns every group of events that arrived together into one :class:`~sync.stages.fresh.FreshBatch`
for the fresh job's seam (:func:`~sync.stages.fresh.run_fresh`): the leads are read, scored and
written, and the batch's last replay id is committed in the store in the same transaction as the
events' rows (``change_events``) and the first-write latencies. A restart resumes right after
that replay id: an event whose work was not committed is delivered again, one whose work was is
not (and the write-back ledger turns a repeated write into none).

What an event becomes (its ``outcome`` in ``change_events``):

- ``scored``: a create or undelete of a Lead, or an update that changed a configured field
  (``[salesforce.streams.Lead] fields``);
- ``ignored_fields``: an update of fields leadscore does not read (its own score writes among
  them), ``ignored_object``: an event of another object; both are counted, nothing is read;
- ``deleted``: a delete (nothing to score);
- ``gap``: a ``GAP_*`` event, Salesforce's "something changed, read it yourself": the named
  records are read (the seam reads every lead of a batch from Salesforce); a gap naming no
  record or a wildcard (``GAP_OVERFLOW``, ``00Q*``) runs a polling catch-up instead.

Fallback: a replay id outside the retention window, or a subscription that fails after the
session's retries, runs a polling catch-up (the ``poll`` trigger's cycle) and raises the alert
``fresh:cdc``; the subscription is then opened again (from the stored replay id, or from the tip
after an expired one, the catch-up having covered the gap), polling every ``fresh.every`` until
it holds. The alert resolves with the first batch handled after that.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from connector.errors import BudgetExceeded, LeadscoreError, ReplayIdExpired
from connector.salesforce import SalesforceClient
from connector.salesforce.pubsub import LEAD_TOPIC, ChangeBatch, ChangeEvent, ChangeEventSubscriber
from sync.config import Settings
from sync.run import JobResult, open_store, salesforce_settings
from sync.stages.fresh import LEAD, FreshBatch

log = logging.getLogger("leadscore.fresh.cdc")

TRIGGER = f"cdc:{LEAD_TOPIC}"
ALERT_KEY = "fresh:cdc"
_SCORED_TYPES = frozenset({"CREATE", "UNDELETE"})
# After the subscription's first request left: time for the server to fix its start.
_SETTLE_SECONDS = 0.5
_RETRY_CYCLE_SECONDS = 1.0
_ID_CHARS = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


class _CycleIncomplete(LeadscoreError):
    """A cycle for a group of events was skipped or failed: its events must come again."""


@dataclass(frozen=True)
class Plan:
    """What a group of events asks for.

    Attributes:
        lead_ids: leads to read, score and write.
        events: one row per event for ``change_events`` (its outcome).
        catch_up: an event asks for a polling catch-up (a gap naming no readable record).
        changes: the Lead events that change what leadscore stores (creates, updates of
            watched fields, deletes, gaps), in stream order: the leads are built from them.
        new_leads: leads created by these events.
    """

    lead_ids: frozenset[str]
    events: tuple[dict[str, Any], ...]
    catch_up: bool
    changes: tuple[ChangeEvent, ...] = ()
    new_leads: frozenset[str] = frozenset()


def watched_fields(settings: Settings) -> frozenset[str]:
    """The Lead fields leadscore reads: an update of any other field is ignored."""
    sf = salesforce_settings(settings)
    for name, stream in sf.streams.items():
        if name.lower() == LEAD.lower():
            return frozenset(stream.fields)
    return frozenset()


def _field_name(changed: str) -> str:
    """``Name.FirstName`` (a compound field's part) -> ``FirstName``, the field leadscore reads."""
    return changed.rsplit(".", 1)[-1]


def _is_record_id(value: str) -> bool:
    return len(value) in (15, 18) and set(value) <= _ID_CHARS


def plan_batch(batches: Iterable[ChangeBatch], watched: frozenset[str]) -> Plan:
    """Decide, event by event, which leads a group of batches asks to score.

    Args:
        batches: the batches that arrived together.
        watched: the Lead fields leadscore reads (:func:`watched_fields`).

    Returns:
        The plan.
    """
    leads: set[str] = set()
    rows: list[dict[str, Any]] = []
    changes: list[ChangeEvent] = []
    created: set[str] = set()
    catch_up = False
    for batch in batches:
        received = datetime.fromtimestamp(batch.received_at, UTC).replace(tzinfo=None)
        for event in batch.events:
            outcome = _outcome(event, watched)
            if outcome in ("scored", "gap", "deleted"):
                changes.append(event)
                if event.change_type == "CREATE":
                    created.update(event.record_ids)
            if outcome in ("scored", "gap"):
                ids = [i for i in event.record_ids if _is_record_id(i)]
                if outcome == "gap" and (not ids or len(ids) < len(event.record_ids)):
                    catch_up = True
                if event.change_type != "GAP_DELETE":
                    leads.update(ids)
            rows.append(
                {
                    "replay_id": event.replay_id.hex(),
                    "entity": event.entity,
                    "change_type": event.change_type,
                    "record_ids": list(event.record_ids),
                    "outcome": outcome,
                    "committed_at": event.commit_time,
                    "received_at": received,
                }
            )
    return Plan(frozenset(leads), tuple(rows), catch_up, tuple(changes), frozenset(created & leads))


def _outcome(event: ChangeEvent, watched: frozenset[str]) -> str:
    if event.entity != LEAD:
        return "ignored_object"
    if event.is_gap:
        return "gap"
    if event.change_type in _SCORED_TYPES:
        return "scored"
    if event.change_type == "DELETE":
        return "deleted"
    if event.change_type == "UPDATE":
        changed = {_field_name(name) for name in event.changed_fields}
        return "scored" if changed & watched else "ignored_fields"
    return "ignored_fields"  # SNAPSHOT and types added later: nothing to read


@dataclass
class CdcCounts:
    """What the trigger did since it started (``serve`` logs it; the benchmark reads it).

    Attributes:
        batches: groups of events handed to the seam (or committed without work).
        events: change events received.
        outcomes: events by outcome.
        catch_ups: polling catch-ups run (first start, expired replay id, failures, gaps).
        failures: subscriptions that failed (after the session's retries).
        reconnects: transient failures the subscriber healed by itself.
        budget_waits: waits at ``salesforce.max_share_of_daily_limit`` (nothing handed over).
        lag_seconds: per event, commit in Salesforce -> received here.
    """

    batches: int = 0
    events: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    catch_ups: int = 0
    failures: int = 0
    reconnects: int = 0
    budget_waits: int = 0
    lag_seconds: list[float] = field(default_factory=list)


class CdcTrigger:
    """Follows change events and hands each group of them to the fresh job's seam.

    Args:
        settings: configuration (``[fresh]``, ``[salesforce]``).
        client: a Salesforce client kept for the trigger's life.
        run_cycle: runs one fresh cycle: ``run_cycle(batch)`` for a batch of events,
            ``run_cycle(None)`` for a polling catch-up; returns the cycle's result, or None when
            it was skipped or failed (the events are then delivered again).
        alert: ``alert(active, detail)`` sets or clears the ``fresh:cdc`` alert.
        stop: set to end :meth:`run`.
        observe: told each group's outcomes and per-event lags (``serve``'s ``/metrics``).
    """

    def __init__(
        self,
        settings: Settings,
        client: SalesforceClient,
        run_cycle: Callable[[FreshBatch | None], JobResult | None],
        alert: Callable[[bool, str], None],
        stop: threading.Event,
        observe: Callable[[dict[str, int], list[float]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.observe = observe
        self.client = client
        self.run_cycle = run_cycle
        self.alert = alert
        self.stop = stop
        self.watched = watched_fields(settings)
        fresh = settings.fresh
        self.interval = fresh.interval_seconds if fresh is not None else 30
        self.wait_seconds = fresh.max_wait_seconds if fresh is not None else 10.0
        self.window = fresh.cdc_window_seconds if fresh is not None else 2.0
        self.counts = CdcCounts()
        self._alerting = False
        self._budget_said = False
        self._subscriber: ChangeEventSubscriber | None = None

    # The loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        """Subscribe and handle events until ``stop`` is set; fall back to polling on failure."""
        position = self._stored_position()
        # First start: nothing stored to resume from: subscribe at the tip, then catch up by
        # polling what changed before it (from the poll trigger's cursor).
        catch_up = "first start of the cdc trigger" if position is None else None
        while not self.stop.is_set():
            try:
                self._follow(position, catch_up)
            except ReplayIdExpired as exc:
                self.counts.failures += 1
                self._fail(f"{exc}; subscribing at the tip after a polling catch-up")
                # The catch-up runs once the new subscription stands, so nothing falls between.
                position, catch_up = None, "the stored replay id expired"
                continue
            except BudgetExceeded as exc:
                # The org reached salesforce.max_share_of_daily_limit: nothing was spent and
                # nothing committed. The events wait in the Pub/Sub API's retention (72 h);
                # /limits (not counted) tells when the 24-hour window has made room again.
                self.counts.budget_waits += 1
                if not self._budget_said:
                    log.warning("cdc: %s; waiting, checking every %d s", exc, self.interval)
                    self._budget_said = True
                    # new leads go unscored meanwhile: ops must hear of it (cleared by the
                    # first group handled once there is room)
                    self._fail(f"{exc}; change events wait in the Pub/Sub API until there is room")
                if self.stop.wait(self.interval):
                    return
                self.client.refresh_usage()
                position, catch_up = self._resume()
                continue
            except _CycleIncomplete as exc:
                # The store was busy or the cycle failed: nothing was committed, so the same
                # events come again from the stored replay id (no alert: the cycle said why).
                log.warning("cdc: %s; resubscribing from the stored replay id", exc)
                if self.stop.wait(_RETRY_CYCLE_SECONDS):
                    return
                position, catch_up = self._resume()
                continue
            except LeadscoreError as exc:
                self.counts.failures += 1
                self._fail(f"{exc}; polling every {self.interval} s until it subscribes again")
                self._catch_up(str(exc))
                if self.stop.wait(self.interval):
                    return
                position, catch_up = self._resume()
                continue
            return

    def close(self) -> None:
        """End the subscription (from another thread): :meth:`run` returns soon after."""
        self.stop.set()
        subscriber = self._subscriber
        if subscriber is not None:
            subscriber.close()

    def _follow(self, position: bytes | None, catch_up: str | None = None) -> None:
        """One subscription: read batches on a thread, hand each group to the seam.

        Args:
            position: resume after this replay id; None: at the tip.
            catch_up: run a polling catch-up once the subscription stands (why, for the log).
        """
        subscriber = ChangeEventSubscriber(self.client, LEAD_TOPIC)
        self._subscriber = subscriber
        arrived: queue.Queue[ChangeBatch | BaseException | None] = queue.Queue(maxsize=8)

        def read() -> None:
            try:
                for batch in subscriber.batches(position):
                    arrived.put(batch)  # blocks when the seam falls behind: flow control
                    if self.stop.is_set():
                        break
            except BaseException as exc:  # handed to the loop, which decides
                arrived.put(exc)
            finally:
                arrived.put(None)

        reader = threading.Thread(target=read, name="leadscore-cdc-reader", daemon=True)
        reader.start()
        try:
            if catch_up is not None:
                # The server fixes a LATEST subscription's start when its first request
                # arrives; poll after that, so that every change is in one or the other.
                subscriber.started.wait(self.wait_seconds)
                time.sleep(_SETTLE_SECONDS)
                self._catch_up(catch_up)
            while not self.stop.is_set():
                try:
                    first = arrived.get(timeout=0.5)
                except queue.Empty:
                    continue
                group = [first]
                # Events that arrive within fresh.cdc_window_seconds of the first go as one
                # batch: one write call for all their leads. The window counts from when the
                # first arrived, not from when it left the queue: events that queued behind a
                # slow cycle have waited already and go at once, with what queued beside them.
                until = time.time()
                if isinstance(first, ChangeBatch) and first.events:
                    until = first.received_at + self.window
                while group[-1] is not None and not isinstance(group[-1], BaseException):
                    try:
                        group.append(arrived.get(timeout=max(0.0, until - time.time())))
                    except queue.Empty:
                        break
                batches = [item for item in group if isinstance(item, ChangeBatch)]
                if batches:
                    self._handle(batches)
                for item in group:
                    if isinstance(item, BaseException):
                        raise item
                    if item is None:
                        if not self.stop.is_set():
                            raise LeadscoreError(f"the subscription to {LEAD_TOPIC} ended")
                        return
        finally:
            self.counts.reconnects += subscriber.reconnects
            subscriber.close()
            self._subscriber = None
            reader.join(5)

    # Work ---------------------------------------------------------------------------------------

    def _handle(self, batches: list[ChangeBatch]) -> None:
        """Hand one group of batches to the seam, the replay id committed with the work."""
        latest = next((b.latest_replay_id for b in reversed(batches) if b.latest_replay_id), b"")
        plan = plan_batch(batches, self.watched)
        now = time.time()
        lags: list[float] = []
        for batch in batches:
            self.counts.events += len(batch.events)
            for event in batch.events:
                made = event.commit_time.replace(tzinfo=UTC).timestamp()
                lags.append(max(0.0, batch.received_at - made))
        self.counts.lag_seconds.extend(lags)
        outcomes: dict[str, int] = {}
        for row in plan.events:
            outcomes[row["outcome"]] = outcomes.get(row["outcome"], 0) + 1
        for outcome, count in outcomes.items():
            self.counts.outcomes[outcome] = self.counts.outcomes.get(outcome, 0) + count
        if self.observe is not None and plan.events:
            self.observe(outcomes, lags)
        if not latest:
            return
        position = {"replay_id": latest.hex()}
        if plan.catch_up:
            self._catch_up("a gap event named no readable record")
        if plan.lead_ids:
            # The daily share is decided before a counted call, as for every run: at the share
            # the group is not handed over (BudgetExceeded ends this subscription, run() waits).
            self.client.budget.check(self.client.counter)
            self._budget_said = False
            result = self.run_cycle(
                FreshBatch(
                    plan.lead_ids,
                    TRIGGER,
                    position,
                    events=plan.events,
                    changes=plan.changes,
                    new_leads=plan.new_leads,
                )
            )
            if result is None:
                # Skipped or failed: nothing was committed, so resubscribe from the stored
                # position and get these events again.
                raise _CycleIncomplete("a fresh cycle for change events did not complete")
        elif plan.events or self._stored_position() != latest:
            # Nothing to score (our own writes' events, keepalives): commit the position alone.
            with open_store(
                self.settings, "fresh", wait_seconds=self.wait_seconds, borrow=True
            ) as store:
                store.commit_fresh_position(TRIGGER, position, (), plan.events)
        self.counts.batches += 1
        log.debug("cdc: %d events handled in %.3f s", len(plan.events), time.time() - now)
        if self._alerting and plan.events:
            self._alerting = False
            self.alert(False, "change events are handled again")

    def _catch_up(self, why: str) -> None:
        log.info("cdc: polling catch-up (%s)", why)
        self.counts.catch_ups += 1
        self.run_cycle(None)

    def _fail(self, detail: str) -> None:
        log.warning("cdc: %s", detail)
        self._alerting = True
        self.alert(True, detail)

    def _resume(self) -> tuple[bytes | None, str | None]:
        """Where to subscribe again after a group was not handled (and whether to catch up).

        From the stored replay id: its events come again. Before any was stored (the first
        start), at the tip with a polling catch-up, which covers the unhandled group's changes.
        """
        position = self._stored_position()
        return position, None if position is not None else "no replay id stored yet"

    def _stored_position(self) -> bytes | None:
        with open_store(
            self.settings, "fresh", wait_seconds=self.wait_seconds, borrow=True
        ) as store:
            stored = store.fresh_position(TRIGGER)
        if isinstance(stored, dict) and stored.get("replay_id"):
            return bytes.fromhex(str(stored["replay_id"]))
        return None
