"""How the sandbox's sales reps pick which lead to call first: the ground truth of adoption.

Each generated rep owns the leads of their region (``generator.SALES_REPS``) and works the leads
that responded since their last working session, at fixed hours of the day (``sessions``), once
to three times a day, some only every fifth day (``every_days``): that is their response time.
Within a session the rep calls every waiting lead once, in an order set by their ``style``:

- ``score``: highest visible score first (``adherence`` 1);
- ``mostly score`` / ``partly score``: a blend of the score order and arrival order, with weight
  ``adherence`` (0.67, 0.33) on the score;
- ``arrival``: oldest response first (``adherence`` 0);
- ``random``: in no particular order (``adherence`` 0).

Every workable lead's response time, visible score and scheduled first call are kept in the
bookkeeping table ``_rep_first_touch`` (:func:`read_first_touches`), so that a benchmark can
build the score history the reps saw. The visible score is what a perfect lead score would have
shown: the hidden model's probability
(``_ground_truth.p_true``) at the lead's first response. The intended ranking of the reps by how
much they follow the score is :func:`rep_truth`'s ``intended_rank``; leadscore's adoption index
should reproduce it (``benchmarks/impact.py`` measures the Spearman correlation). Calls are
spread over a two-hour session in priority order, so the order does not depend on how the
generator splits leads into chunks. docs/sandbox.md describes the same.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import numpy as np
import pandas as pd

from connector.sandbox.ids import make_ids

DAY = 86_400
HOUR = 3_600
SESSION_SECONDS = 2 * HOUR
"""A working session: calls are spread over two hours in the rep's priority order."""


@dataclass(frozen=True)
class RepBehaviour:
    """One rep's habits.

    Attributes:
        style: ``score``, ``mostly score``, ``partly score``, ``arrival`` or ``random``.
        adherence: weight of the score in the rep's order (0 to 1).
        sessions: hours of the day (UTC) at which the rep works new leads.
        every_days: the rep works on one day out of this many (1: every day).
    """

    style: str
    adherence: float
    sessions: tuple[int, ...]
    every_days: int = 1


REP_BEHAVIOURS: tuple[RepBehaviour, ...] = (
    # NA: Avery Chen, Jordan Blake, Taylor Reed
    RepBehaviour("score", 1.0, (10, 15)),
    RepBehaviour("arrival", 0.0, (16,), every_days=5),
    RepBehaviour("mostly score", 0.67, (9, 13, 17)),
    # EU: Sophie Keller, Luca Romano, Emma Visser
    RepBehaviour("partly score", 0.33, (11,)),
    RepBehaviour("random", 0.0, (10, 15), every_days=5),
    RepBehaviour("score", 1.0, (16,)),
    # APAC: Kenji Mori, Aisha Rahman, Liam OConnor
    RepBehaviour("mostly score", 0.67, (10, 15)),
    RepBehaviour("partly score", 0.33, (10, 15)),
    RepBehaviour("arrival", 0.0, (10, 15), every_days=5),
    # LATAM: Camila Rocha, Diego Alvarez, Valeria Ortiz
    RepBehaviour("random", 0.0, (9, 13, 17), every_days=5),
    RepBehaviour("score", 1.0, (11,)),
    RepBehaviour("partly score", 0.33, (10, 15)),
)
"""One behaviour per generated sales rep, in ``generator.SALES_REPS`` order (user ids 005...1
onwards). Response speed varies: sessions once to three times a day, and the four reps who
ignore the score work new leads only every fifth day (so that about 30 % of first touches come
days after the response, as before reps had habits). Their adoption index stays near 1 however
long their queue: a bigger queue only magnifies a preference that exists."""


def rep_truth() -> pd.DataFrame:
    """The generated reps' behaviour and the intended adoption ranking.

    Returns:
        ``user_id, style, adherence, sessions, every_days, intended_rank``; rank 1 follows the
        score most (ties share their mean rank, as the reps' behaviour is the same).
    """
    frame = pd.DataFrame(
        {
            "user_id": make_ids("005", 1, len(REP_BEHAVIOURS)),
            "style": [b.style for b in REP_BEHAVIOURS],
            "adherence": [b.adherence for b in REP_BEHAVIOURS],
            "sessions": [",".join(f"{h:02d}:00" for h in b.sessions) for b in REP_BEHAVIOURS],
            "every_days": [b.every_days for b in REP_BEHAVIOURS],
        }
    )
    frame["intended_rank"] = frame["adherence"].rank(ascending=False, method="average")
    return frame


def _next_session(
    ready: np.ndarray, hours: tuple[int, ...], every_days: int, first_day: int = 0
) -> np.ndarray:
    """The start of the rep's first session at or after ``ready`` (epoch seconds).

    Sessions happen at ``hours`` on days whose number, counted from ``first_day`` (days since the
    epoch), is a multiple of ``every_days``: anchored at the org's own first day, so that a
    whole-day shift of ``as_of`` gives the same org.
    """
    ready_day = ready // DAY
    candidates = []
    for offset in range(every_days + 1):
        day = ready_day + offset
        for hour in sorted(hours):
            start = day * DAY + hour * HOUR
            works = ((day - first_day) % every_days == 0) & (start >= ready)
            candidates.append(np.where(works, start, np.iinfo(np.int64).max))
    return np.min(np.stack(candidates, axis=1), axis=1)


TRUTH_TABLE = "_rep_first_touch"
_TRUTH_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {TRUTH_TABLE} (lead_id TEXT PRIMARY KEY, owner_id TEXT, "
    "responded_at INTEGER, visible_score REAL, scheduled_at INTEGER)"
)


def read_first_touches(conn: sqlite3.Connection) -> pd.DataFrame:
    """The recorded first calls of workable leads.

    Args:
        conn: the sandbox database.

    Returns:
        ``lead_id, owner_id, responded_at, visible_score, scheduled_at`` (times tz-naive UTC).
    """
    cursor = conn.execute(f"SELECT * FROM {TRUTH_TABLE} ORDER BY lead_id")
    frame = pd.DataFrame(cursor.fetchall(), columns=[c[0] for c in cursor.description])
    for column in ("responded_at", "scheduled_at"):
        frame[column] = pd.to_datetime(frame[column], unit="s")
    return frame


def first_touch_times(
    rng: np.random.Generator,
    *,
    owner: np.ndarray,
    response: np.ndarray,
    visible: np.ndarray,
    rep_ids: np.ndarray,
    conn: sqlite3.Connection | None = None,
    lead_ids: np.ndarray | None = None,
    first_day: int = 0,
) -> np.ndarray:
    """When each lead's owner first calls it, given the rep's habits.

    Args:
        rng: the random stream (``random`` reps' order).
        owner: owner user id per lead.
        response: when each lead became workable (epoch seconds).
        visible: the score each rep saw per lead (higher first for score followers).
        rep_ids: the reps' user ids, in :data:`REP_BEHAVIOURS` order.
        conn: where to record the schedule of leads with a visible score (``_rep_first_touch``).
        lead_ids: the leads' ids (with ``conn``).
        first_day: the org's first day (days since the epoch), where every rep's rotation of
            working days starts.

    Returns:
        First touch time per lead (epoch seconds); leads of owners without a behaviour keep
        ``response`` + one hour.
    """
    n = len(response)
    touched = response + HOUR
    noise = rng.random(n)
    finite = np.isfinite(visible)
    # Score percentile within this batch of leads: a fixed scale shared by every rep, so that a
    # blend of score and arrival order weighs the two alike.
    score_rank = np.ones(n)
    k = int(finite.sum())
    if k:
        order = np.argsort(-np.where(finite, visible, -np.inf), kind="stable")[:k]
        score_rank[order] = np.arange(k) / max(k - 1, 1)
    for rep_id, behaviour in zip(rep_ids.tolist(), REP_BEHAVIOURS, strict=False):
        mine = np.flatnonzero(owner == rep_id)
        if not len(mine):
            continue
        start = _next_session(response[mine], behaviour.sessions, behaviour.every_days, first_day)
        # Arrival: how long before the session the lead responded, oldest first (0 to 1 over the
        # longest possible wait).
        waited = np.clip((start - response[mine]) / (behaviour.every_days * DAY), 0.0, 1.0)
        fallback = noise[mine] if behaviour.style == "random" else 1.0 - waited
        key = behaviour.adherence * score_rank[mine] + (1 - behaviour.adherence) * fallback
        touched[mine] = start + 60 + (key * (SESSION_SECONDS - 120)).astype(np.int64)
    if conn is not None and lead_ids is not None:
        conn.execute(_TRUTH_SCHEMA)
        rows = np.flatnonzero(finite)
        conn.executemany(
            f"INSERT INTO {TRUTH_TABLE} VALUES (?, ?, ?, ?, ?)",
            zip(
                np.asarray(lead_ids, dtype=object)[rows].tolist(),
                owner[rows].tolist(),
                response[rows].tolist(),
                visible[rows].tolist(),
                touched[rows].tolist(),
                strict=True,
            ),
        )
    return touched
