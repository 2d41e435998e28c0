"""One source or target of a run failing on its own: the run is partial, the others proceed.

A pull reads several sources (Salesforce, Segment) and a push writes several targets (Salesforce
fields and campaigns, Segment); a Segment Profile API token that expired must not keep the scores
from reaching Salesforce. Each part runs through :func:`run_part`, which records its outcome in
the run's counts under ``parts`` (``{"segment": "failed: ..."}``), marks the run ``partial`` and
lets the next part go; ``sync/alerts.py`` raises one alert per failed part and clears it when the
part succeeds again. A stop request, the API budget and a busy store still end the whole run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from connector.errors import BudgetExceeded, Busy, Interrupted, LeadscoreError
from sync.run import JobResult

log = logging.getLogger("leadscore.jobs")

T = TypeVar("T")

# The failures of the parts of a running job, by id(result), until finish_parts.
_errors: dict[int, list[LeadscoreError]] = {}


def run_part(result: JobResult, part: str, action: Callable[[], T]) -> T | None:
    """Run one source or target of a job; its own failure is recorded and the job goes on.

    Args:
        result: the job's result (its counts get ``parts[part]``; a failure makes it partial).
        part: the source or target's name, as alerts and ``--json`` show it (``segment``).
        action: the work.

    Returns:
        What the work returned, or None when it failed.

    Raises:
        Interrupted, BudgetExceeded, Busy: these end the whole run, as before.
    """
    parts = result.counts.setdefault("parts", {})
    try:
        value = action()
    except (Interrupted, BudgetExceeded, Busy):
        raise
    except LeadscoreError as exc:
        _errors.setdefault(id(result), []).append(exc)
        result.counts.setdefault("parts", parts)[part] = f"failed: {exc}"
        result.status = "partial"
        # INFO, as `recorded` logs failures: the run result and the alert say it loudly
        log.info("%s: %s failed; the other parts go on: %s", result.job, part, exc)
        return None
    result.counts.setdefault("parts", parts)[part] = "ok"
    return value


def finish_parts(result: JobResult) -> None:
    """End a job's parts: when every one of them failed, the job failed with the first error.

    Args:
        result: the job's result.

    Raises:
        LeadscoreError: every part failed (the first failure, with its exit code).
    """
    errors = _errors.pop(id(result), [])
    parts = result.counts.get("parts") or {}
    if errors and all(outcome != "ok" for outcome in parts.values()):
        raise errors[0]


def part_outcomes(counts: dict) -> dict[str, str]:
    """The parts of a run (or of a sync's jobs) and their outcome: ``ok`` or ``failed: ...``.

    Args:
        counts: a run's counts.

    Returns:
        Part name -> outcome, for every part the run (and each job of a sync) ran.
    """
    out = dict(counts.get("parts") or {})
    for job in (counts.get("jobs") or {}).values():
        if isinstance(job, dict) and isinstance(job.get("counts"), dict):
            for part, outcome in (job["counts"].get("parts") or {}).items():
                if out.get(part, "ok") == "ok":
                    out[part] = outcome
    return out
