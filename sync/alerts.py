"""Alerts: one message per state change, not one per run.

Each thing worth an alert is a *condition* with a key (``failed:push``, ``rejected:sync``,
``missed:train``, ``drift:lead_conversion``, ``gate:lead_conversion``) that is either active or not
after each evaluation. The state of every condition is kept in the store (``alert_state``), so a
condition that stays active is announced once (FIRING), and announced again only when it clears
(RESOLVED). A notification that could not be delivered (webhook down) stays pending and is retried
at the next evaluation; nothing else is held up by it.

Messages pass through the log redactor, so configured secrets never leave in an alert.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connector.errors import Busy, LeadscoreError, TransientError
from connector.notify import send_email, send_webhook
from connector.store import Store, utc_now
from connector.store.runs import read_alert_states, write_alert_state
from sync.config import AlertSettings, Settings
from sync.lock import RunLock, lock_path
from sync.logs import Redactor, secret_values
from sync.parts import part_outcomes
from sync.run import open_store

log = logging.getLogger("leadscore.alerts")


@dataclass(frozen=True)
class Condition:
    """One alertable condition as observed now.

    Attributes:
        key: stable identifier (``failed:push``).
        active: whether it holds.
        title: short headline (``push failed``).
        detail: what happened and what to do (one or two lines).
    """

    key: str
    active: bool
    title: str
    detail: str = ""


@dataclass(frozen=True)
class Notification:
    """A message to send about a state change.

    Attributes:
        key: condition key.
        state: ``firing`` or ``resolved``.
        title: headline.
        detail: details.
        since: when the condition changed.
    """

    key: str
    state: str
    title: str
    detail: str
    since: datetime

    @property
    def subject(self) -> str:
        """Email subject / first line."""
        return f"[leadscore] {self.state.upper()}: {self.title}"


def transition(
    previous: dict[str, Any] | None, condition: Condition, now: datetime
) -> tuple[dict[str, Any] | None, Notification | None]:
    """The alert state machine for one condition.

    - inactive -> active: FIRING; active -> inactive: RESOLVED; no change: nothing,
    - unless the last change's notification was not delivered: it is sent again (same state).

    Args:
        previous: stored state (``active, since, message, notified``) or None (never active).
        condition: the condition now.
        now: the time of this evaluation.

    Returns:
        The new state to store (None when nothing changes) and the notification to send, if any.
    """
    was_active = bool(previous and previous["active"])
    if condition.active != was_active:
        state = {
            "active": condition.active,
            "since": now,
            "message": condition.detail or condition.title,
            "notified": False,
        }
        note = Notification(
            condition.key,
            "firing" if condition.active else "resolved",
            condition.title,
            condition.detail,
            now,
        )
        return state, note
    if previous is not None and not previous["notified"]:
        note = Notification(
            condition.key,
            "firing" if was_active else "resolved",
            condition.title,
            previous["message"] if was_active else condition.detail,
            previous["since"],
        )
        return dict(previous), note
    return None, None


def _format(note: Notification, settings: Settings) -> str:
    where = f"{socket.gethostname()}, store {settings.store.path}"
    lines = [note.subject, note.detail, f"since {note.since:%Y-%m-%d %H:%M:%S} UTC ({where})"]
    return "\n".join(line for line in lines if line)


def deliver(note: Notification, settings: Settings) -> list[LeadscoreError]:
    """Send a notification to every configured channel.

    Args:
        note: the notification.
        settings: configuration (``[alerts]``).

    Returns:
        One error per channel that failed (empty when all succeeded); the message is redacted.
    """
    alerts: AlertSettings = settings.alerts
    redact = Redactor(secret_values(settings))
    text = redact(_format(note, settings))
    problems: list[LeadscoreError] = []
    if alerts.webhook_url is not None:
        try:
            send_webhook(
                alerts.webhook_url.get_secret_value(),
                text,
                timeout_seconds=alerts.timeout_seconds,
                max_attempts=alerts.webhook_attempts,
                max_backoff_seconds=alerts.webhook_max_backoff_seconds,
            )
        except LeadscoreError as exc:
            problems.append(type(exc)(redact(exc.message), hint=exc.hint))
    if alerts.email_to:
        assert alerts.smtp_host is not None and alerts.email_from is not None
        try:
            send_email(
                host=alerts.smtp_host,
                port=alerts.smtp_port,
                security=alerts.smtp_security,
                sender=alerts.email_from,
                recipients=alerts.email_to,
                subject=redact(note.subject),
                body=text,
                username=alerts.smtp_username,
                password=(
                    alerts.smtp_password.get_secret_value() if alerts.smtp_password else None
                ),
                timeout_seconds=alerts.timeout_seconds,
            )
        except LeadscoreError as exc:
            problems.append(type(exc)(redact(exc.message), hint=exc.hint))
    return problems


def evaluate(
    store: Store,
    settings: Settings,
    conditions: Iterable[Condition],
    *,
    now: datetime | None = None,
) -> list[Notification]:
    """Update the stored state of each condition and send what changed.

    Never raises for delivery problems: they are logged as warnings and the notification stays
    pending for the next evaluation.

    Args:
        store: the store (``alert_state``).
        settings: configuration.
        conditions: the conditions observed now.
        now: evaluation time (naive UTC; default now).

    Returns:
        The notifications that were due (delivered or not).
    """
    now = now or utc_now()
    states = read_alert_states(store)
    due: list[Notification] = []
    for condition in conditions:
        new_state, note = transition(states.get(condition.key), condition, now)
        if new_state is None:
            continue
        if note is not None:
            due.append(note)
            if settings.alerts.enabled:
                problems = deliver(note, settings)
                for problem in problems:
                    log.warning("alert %s not delivered: %s", note.subject, problem)
                # Only a transient failure keeps the notification pending: a refused one (a
                # webhook answering 404) would be retried forever.
                new_state["notified"] = not any(isinstance(p, TransientError) for p in problems)
            else:
                new_state["notified"] = True
            # INFO: serve logs it; the CLI has already printed the failure itself.
            log.info(
                "%s%s",
                note.subject,
                f": {note.detail}" if note.detail else "",
            )
        write_alert_state(
            store,
            condition.key,
            active=new_state["active"],
            since=new_state["since"],
            message=new_state["message"],
            notified=new_state["notified"],
        )
    return due


# -- conditions from job results -------------------------------------------------------------------


def _rejected(counts: dict[str, Any]) -> tuple[int, int]:
    """(rejected, answered) records of a push or sync run."""
    failed = int(counts.get("failed") or 0)
    written = int(counts.get("written") or 0)
    return failed, failed + written


def job_conditions(
    job: str,
    status: str,
    counts: dict[str, Any],
    error: str | None,
    settings: Settings,
) -> list[Condition]:
    """The conditions a finished run settles.

    Args:
        job: job name.
        status: ``ok``, ``partial``, ``failed`` or ``skipped``.
        counts: the run's counts.
        error: its error line.
        settings: configuration (thresholds).

    Returns:
        Conditions to evaluate (a skipped run settles nothing).
    """
    if status == "skipped":
        return []
    out = [
        Condition(
            f"failed:{job}",
            status == "failed",
            f"{job} failed",
            (error or "") if status == "failed" else f"{job} finished {status}",
        )
    ]
    for part, outcome in part_outcomes(counts).items():
        # one alert per source or target that failed on its own (the run went on: partial)
        out.append(
            Condition(
                f"part:{part}",
                outcome != "ok",
                f"{job}: {part} failed",
                outcome.removeprefix("failed: ") + "; the other sources and targets went on"
                if outcome != "ok"
                else f"{part} ok again",
            )
        )
    if job in ("push", "sync") and status != "failed":
        rejected, answered = _rejected(counts)
        share = rejected / answered if answered else 0.0
        limit = settings.alerts.max_rejected_share
        out.append(
            Condition(
                f"rejected:{job}",
                share > limit,
                f"{job}: Salesforce rejected {rejected:,} of {answered:,} records",
                f"{share:.1%} rejected (alerts.max_rejected_share = {limit:.1%}); the ledger "
                "holds each record's error and they are retried on the next push"
                if share > limit
                else f"{job}: {share:.1%} rejected",
            )
        )
    if job in ("train", "sync") and status != "failed":
        models = counts.get("predictions") if job == "train" else counts.get("models")
        for name, model in (models or {}).items():
            if not isinstance(model, dict) or "champion" not in model:
                continue
            rejected_model = model["champion"] is False
            # train reports the gate as {"promote": bool, "reason": str} (scoring's quality gate)
            gate = model.get("gate")
            reason = model.get("reason") or (gate.get("reason") if isinstance(gate, dict) else "")
            reason = reason or ""
            out.append(
                Condition(
                    f"gate:{name}",
                    rejected_model,
                    f"{name}: new model {model.get('version')} was rejected by the quality gate",
                    f"it stays a challenger; the champion is unchanged. {reason}".strip()
                    if rejected_model
                    else f"{name}: model {model.get('version')} is champion",
                )
            )
    return out


def settle_service_alerts(settings: Settings, conditions: list[Condition]) -> None:
    """Evaluate conditions found by ``serve`` itself (missed schedules), without waiting.

    The watchdog must work while a job runs: when the run lock is held by this very process (its
    worker thread), the store is opened alongside the worker's connection; when another process
    holds it, the pass is skipped and the next one catches up.

    Args:
        settings: configuration.
        conditions: the conditions.
    """
    lock = RunLock(lock_path(settings.store.path), "alerts", wait_seconds=0)
    try:
        lock.acquire()
    except Busy:
        holder = lock.holder()
        if holder is None or holder.pid != os.getpid():
            return
        with Store(settings.store.path) as store:
            evaluate(store, settings, conditions)
        return
    try:
        with Store(settings.store.path) as store:
            evaluate(store, settings, conditions)
    finally:
        lock.release()


def settle_alerts(
    settings: Settings,
    job: str,
    status: str,
    counts: dict[str, Any],
    error: str | None,
    *,
    extra: list[Condition] | None = None,
) -> None:
    """Evaluate the alert conditions a run settles; never raises (alerts must not fail a job).

    Args:
        settings: configuration.
        job: job name.
        status: run status.
        counts: run counts.
        error: error line of a failed run.
        extra: more conditions (drift from ``monitor``, missed schedules from ``serve``).
    """
    conditions = [*job_conditions(job, status, counts, error, settings), *(extra or [])]
    if not conditions:
        return
    try:
        with open_store(settings, f"alerts after {job}") as store:
            evaluate(store, settings, conditions)
    except Exception as exc:  # an alert problem is logged, never raised into the job's outcome
        log.warning("alerts after %s were not evaluated: %s", job, exc)
