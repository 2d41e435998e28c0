"""Is the score used, and does it pay? Adoption, speed to lead and realized value, per rep.

Pure functions over DataFrames (the store reads them; nothing here does I/O). The inputs:

- ``leads``: ``lead_id, owner_id, created_at`` and optionally ``responded_at`` (when the lead
  became workable, e.g. its first campaign response), ``converted_at`` and ``opportunity_id``;
- ``touches``: sales touches (calls, emails, meetings) ``lead_id, touched_at``;
- ``scores``: the score history ``entity_id, probability, tier, scored_at``;
- ``opportunities`` (optional): ``opportunity_id, amount, is_won``;
- ``users`` (optional): ``user_id, name, team``.

Definitions (README "Impact" and docs/sandbox.md use the same words):

- A lead *enters its owner's queue* when it is workable (``responded_at``, else ``created_at``)
  and scored, and leaves it at its first touch or after ``open_days``. Its *entry tier* is the
  tier of its first score; queue counts and the adoption index use it, so that a rep picking at
  random scores 1 whatever later rescoring did.
- The *score at first touch* is the latest score written at or before the touch (point in time:
  a score written after the touch never counts). A touch before any score is *unscored*.
- *Adoption index* of a rep: top-tier first touches divided by the number expected if the rep
  had picked from the open queue at random (the sum, over the rep's first touches, of the top
  tiers' share of the queue at that moment). 1 means the score makes no difference to whom the
  rep calls first; 2 means twice as many top-tier leads as a random pick.
- A first touch is *out of rank* when the rep's queue held a lead of a better tier at that
  moment.
- *Realized conversion* counts leads whose conversion window (``window_days`` after they
  entered the queue) has closed by the end of the period.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

Z95 = 1.959963984540054
MIN_TOUCHES = 20
"""First touches a rep needs before an adoption index is reported with an interval."""
MIN_LEADS = 30
"""Matured leads a group needs before its conversion rate is compared."""
HOUR_NS = 3_600 * 10**9


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (None without trials).

    Args:
        successes: events.
        trials: trials.
        z: normal quantile (1.96: 95 %).

    Returns:
        ``(low, high)`` or None when there are no trials.
    """
    if trials <= 0:
        return None
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def ratio_interval(
    k1: int, n1: int, k0: int, n0: int, z: float = Z95
) -> tuple[float, float, float] | None:
    """Ratio of two proportions with its Katz log interval (None when undefined).

    Args:
        k1: events in the first group.
        n1: size of the first group.
        k0: events in the second group.
        n0: size of the second group.
        z: normal quantile.

    Returns:
        ``(ratio, low, high)``, or None when a group is empty or has no events.
    """
    if min(k1, k0) <= 0 or min(n1, n0) <= 0:
        return None
    ratio = (k1 / n1) / (k0 / n0)
    se = math.sqrt(1 / k1 - 1 / n1 + 1 / k0 - 1 / n0)
    return ratio, ratio * math.exp(-z * se), ratio * math.exp(z * se)


def _num(value: Any, digits: int = 4) -> float | None:
    """A JSON-safe rounded float: None for missing, NaN or infinite values."""
    if value is None:
        return None
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def _share(part: float, whole: float) -> float | None:
    return _num(part / whole) if whole else None


def _rate_row(converted: int, leads: int) -> dict[str, Any]:
    interval = wilson_interval(converted, leads)
    return {
        "leads": int(leads),
        "conversions": int(converted),
        "rate": _share(converted, leads),
        "rate_low": _num(interval[0]) if interval else None,
        "rate_high": _num(interval[1]) if interval else None,
    }


SALES_TOUCH_TYPES = ("Call", "Email", "Meeting")
"""Task types that are a rep reaching out (marketing automation logs other types)."""

# -- lead-level facts ------------------------------------------------------------------------


def _arrow_strings(values: Any) -> pa.Array:
    """Values as an Arrow string array (ids stay Arrow-backed: no Python objects per row)."""
    if isinstance(values, pd.Series):
        array = pa.array(values, from_pandas=True)
    else:
        array = pa.array(np.asarray(values, dtype=object), from_pandas=True)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not pa.types.is_string(array.type):
        array = array.cast(pa.string())
    return array


def _positions(keys: Any, values: Any) -> np.ndarray:
    """Position of each value among ``keys`` (-1 when absent or missing), by one hash lookup.

    Done in Arrow: lookups of millions of string ids stay well under a second.
    """
    found = pc.index_in(_arrow_strings(values), value_set=_arrow_strings(keys))
    return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _times(values: Any) -> np.ndarray:
    """Tz-naive datetime64[ns] values (NaT for missing)."""
    series = pd.to_datetime(pd.Series(values), utc=False)
    if getattr(series.dt, "tz", None) is not None:
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    return series.to_numpy(dtype="datetime64[ns]")


def touches_from_tasks(
    tasks: pd.DataFrame,
    leads: pd.DataFrame,
    *,
    types: Sequence[str] = SALES_TOUCH_TYPES,
) -> pd.DataFrame:
    """Sales touches per lead from Task rows, following converted leads to their contact.

    Salesforce moves a converted lead's tasks to its new contact (``WhoId``), so tasks are
    matched on the lead's id or on its ``converted_contact_id``.

    Args:
        tasks: ``who_id, type, created_at``.
        leads: ``lead_id`` and optionally ``converted_contact_id``.
        types: task types that count as a touch.

    Returns:
        ``lead_id, touched_at``.
    """
    sales = _positions(list(types), tasks["type"]) >= 0
    who = _arrow_strings(tasks["who_id"]).filter(pa.array(sales))
    lead_ids = np.asarray(leads["lead_id"], dtype=object)
    position = _positions(lead_ids, who)
    if "converted_contact_id" in leads.columns:
        contacts = np.asarray(leads["converted_contact_id"], dtype=object)
        known = pd.notna(contacts)
        by_contact = _positions(contacts[known], who)
        owner_row = np.flatnonzero(known)
        missing = (position < 0) & (by_contact >= 0)
        position[missing] = owner_row[by_contact[missing]]
    found = position >= 0
    return pd.DataFrame(
        {
            "lead_id": lead_ids[position[found]],
            "touched_at": _times(tasks["created_at"])[sales][found],
        }
    )


def first_touches(leads: pd.DataFrame, touches: pd.DataFrame) -> np.ndarray:
    """Each lead's first sales touch at or after it became workable.

    Cold outreach before a lead responded is not its first touch as a workable lead.

    Args:
        leads: ``lead_id, start_at``.
        touches: ``lead_id, touched_at``.

    Returns:
        First touch time per lead, aligned with ``leads`` (NaT when never touched).
    """
    start = _times(leads["start_at"])
    position = _positions(leads["lead_id"], touches["lead_id"])
    moment = _times(touches["touched_at"])
    keep = position >= 0
    keep[keep] = moment[keep] >= start[position[keep]]
    first = np.full(len(start), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, position[keep], moment[keep].astype(np.int64))
    out = first.view("datetime64[ns]").copy()
    out[first == np.iinfo(np.int64).max] = np.datetime64("NaT")
    return out


def score_at(moments: pd.DataFrame, scores: pd.DataFrame, *, time_column: str) -> pd.DataFrame:
    """The latest score of each lead written at or before a moment (point in time).

    Args:
        moments: ``lead_id`` and ``time_column`` (rows with a missing time get no score).
        scores: ``entity_id, probability, tier, scored_at``.
        time_column: the moment's column.

    Returns:
        ``lead_id, probability, tier, scored_at`` aligned with ``moments`` (missing values where
        no score had been written yet).
    """
    n = len(moments)
    moment = _times(moments[time_column])
    key = _positions(moments["lead_id"], scores["entity_id"])
    scored_at = _times(scores["scored_at"])
    usable = (key >= 0) & ~np.isnat(scored_at)
    known = np.flatnonzero(~np.isnat(moment))
    # merge_asof needs integer keys and times sorted: far faster than by string id.
    left = pd.DataFrame({"row": known, "at": moment[known]}).sort_values("at", kind="stable")
    right = pd.DataFrame(
        {
            "row": key[usable],
            "at": scored_at[usable],
            "score": np.flatnonzero(usable),
        }
    ).sort_values("at", kind="stable")
    matched = pd.merge_asof(
        left, right, on="at", by="row", direction="backward", allow_exact_matches=True
    )
    index = np.full(n, -1, dtype=np.int64)
    found = matched["score"].notna().to_numpy()
    index[matched["row"].to_numpy()[found]] = matched["score"].to_numpy()[found].astype(np.int64)
    hit = index >= 0
    out = pd.DataFrame({"lead_id": np.asarray(moments["lead_id"], dtype=object)})
    probability = np.full(n, np.nan)
    probability[hit] = np.asarray(scores["probability"], dtype=float)[index[hit]]
    tier = np.full(n, None, dtype=object)
    tier[hit] = np.asarray(scores["tier"], dtype=object)[index[hit]]
    when = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    when[hit] = scored_at[index[hit]]
    out["probability"], out["tier"], out["scored_at"] = probability, tier, when
    return out


def lead_facts(
    leads: pd.DataFrame,
    touches: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    window_days: int,
    open_days: int,
) -> pd.DataFrame:
    """One row per lead: when it became workable, entry and touch scores, outcome.

    Args:
        leads: see the module docstring.
        touches: sales touches.
        scores: score history.
        window_days: conversion window after entering the queue.
        open_days: days a lead stays in its owner's queue untouched.

    Returns:
        ``lead_id, owner_id, start_at, entered_at, entry_probability, entry_tier,
        first_touch_at, touch_probability, touch_tier, converted_at, converted_in_window,
        opportunity_id``.
    """
    frame = leads.copy()
    for column in ("responded_at", "converted_at", "opportunity_id"):
        if column not in frame.columns:
            frame[column] = pd.NaT if column.endswith("_at") else None
    frame["start_at"] = frame["responded_at"].fillna(frame["created_at"])
    frame["created_at"] = _times(frame["created_at"])
    frame["converted_at"] = _times(frame["converted_at"])
    frame["start_at"] = _times(frame["start_at"])
    frame["first_touch_at"] = first_touches(frame[["lead_id", "start_at"]], touches)
    # The first score of each lead: its entry tier.
    history = scores[["entity_id", "probability", "tier", "scored_at"]]
    key = _positions(frame["lead_id"], history["entity_id"])
    scored_at = _times(history["scored_at"])
    usable = np.flatnonzero((key >= 0) & ~np.isnat(scored_at))
    order = usable[np.lexsort((scored_at[usable], key[usable]))]
    firsts = order[np.r_[True, key[order][1:] != key[order][:-1]]] if len(order) else order
    n = len(frame)
    entry_probability = np.full(n, np.nan)
    entry_probability[key[firsts]] = np.asarray(history["probability"], dtype=float)[firsts]
    entry_tier = np.full(n, None, dtype=object)
    entry_tier[key[firsts]] = np.asarray(history["tier"], dtype=object)[firsts]
    first_scored = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    first_scored[key[firsts]] = scored_at[firsts]
    frame["entry_probability"], frame["entry_tier"] = entry_probability, entry_tier
    frame["entered_at"] = np.where(
        np.isnat(first_scored),
        np.datetime64("NaT"),
        np.maximum(frame["start_at"].to_numpy(), first_scored),
    ).astype("datetime64[ns]")
    at_touch = score_at(frame, history, time_column="first_touch_at")
    frame["touch_probability"] = at_touch["probability"].to_numpy()
    frame["touch_tier"] = at_touch["tier"].to_numpy()
    window = pd.Timedelta(days=window_days)
    frame["converted_in_window"] = frame["converted_at"].notna() & (
        frame["converted_at"] < frame["entered_at"] + window
    )
    frame["open_until"] = frame["entered_at"] + pd.Timedelta(days=open_days)
    return frame


# -- adoption ---------------------------------------------------------------------------------


def queue_touches(
    facts: pd.DataFrame, tier_order: Sequence[str], top: Sequence[str]
) -> pd.DataFrame:
    """Each scored first touch with its owner's open queue at that moment.

    Args:
        facts: from :func:`lead_facts`.
        tier_order: tier names from the best to the worst.
        top: the top tiers.

    Returns:
        ``lead_id, owner_id, touched_at, touch_rank, is_top, queue_size, queue_top,
        out_of_rank`` for every first touch of a lead that was in its owner's queue.
    """
    rank_of = {name: i for i, name in enumerate(tier_order)}
    k = len(tier_order)
    # A lead touched before its first score never waited in a queue ordered by the score.
    scored = facts[
        facts["entered_at"].notna()
        & facts["entry_tier"].isin(rank_of)
        & ~(facts["first_touch_at"] < facts["entered_at"])
    ]
    touched_in_queue = scored["first_touch_at"].notna()
    exit_at = np.where(
        touched_in_queue & (scored["first_touch_at"] < scored["open_until"]),
        scored["first_touch_at"].to_numpy(),
        scored["open_until"].to_numpy(),
    ).astype("datetime64[ns]")
    is_touch = (touched_in_queue & (scored["first_touch_at"] < scored["open_until"])).to_numpy()
    owners = pd.Categorical(scored["owner_id"])
    rank = scored["entry_tier"].map(rank_of).to_numpy(dtype=np.int64)
    n = len(scored)
    owner_code = np.concatenate([owners.codes, owners.codes]).astype(np.int64)
    moment = np.concatenate([scored["entered_at"].to_numpy(), exit_at]).astype(np.int64)
    delta = np.concatenate([np.ones(n, np.int64), -np.ones(n, np.int64)])
    ranks = np.concatenate([rank, rank])
    # Entries sort before exits at the same moment, so a lead touched the second it arrives was
    # in the queue when it was picked.
    order = np.lexsort((-delta, moment, owner_code))
    owner_code, moment, delta, ranks = owner_code[order], moment[order], delta[order], ranks[order]
    counts = np.zeros((2 * n, k), dtype=np.int64)
    counts[np.arange(2 * n), ranks] = delta
    counts = counts.cumsum(axis=0)
    # Subtract the running total at the start of each owner's block (queues are per owner).
    starts = np.flatnonzero(np.r_[True, owner_code[1:] != owner_code[:-1]])
    block = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, 2 * n]))
    offsets = np.vstack([np.zeros((1, k), np.int64), counts[starts[1:] - 1]])
    base = offsets[block]
    queue = counts - base
    lead_index = np.concatenate([np.arange(n), np.arange(n)])[order]
    exits = np.flatnonzero((delta < 0) & is_touch[lead_index])
    before = queue[exits].copy()
    before[np.arange(len(exits)), ranks[exits]] += 1  # the touched lead itself was still queued
    top_ranks = [rank_of[t] for t in top if t in rank_of]
    better = np.cumsum(before, axis=1) - before  # leads of strictly better tiers
    rows = scored.iloc[lead_index[exits]]
    return pd.DataFrame(
        {
            "lead_id": rows["lead_id"].to_numpy(),
            "owner_id": rows["owner_id"].to_numpy(),
            "touched_at": rows["first_touch_at"].to_numpy(),
            "entry_rank": ranks[exits],
            # The entry tier, as in the queue counts: a random pick then has index 1 exactly.
            "is_top": np.isin(ranks[exits], top_ranks),
            "queue_size": before.sum(axis=1),
            "queue_top": before[:, top_ranks].sum(axis=1),
            "out_of_rank": better[np.arange(len(exits)), ranks[exits]] > 0,
        }
    )


def adoption_row(touches: pd.DataFrame) -> dict[str, Any]:
    """Adoption figures of a group of first touches (a rep, a team, everyone).

    Args:
        touches: rows of :func:`queue_touches`.

    Returns:
        ``first_touches, top_touches, expected_top, adoption_index (+ low, high),
        out_of_rank, out_of_rank_share, note``.
    """
    n = len(touches)
    observed = int(touches["is_top"].sum())
    share = touches["queue_top"].to_numpy(float) / np.maximum(touches["queue_size"], 1)
    expected = float(share.sum())
    out = int(touches["out_of_rank"].sum())
    row: dict[str, Any] = {
        "first_touches": n,
        "top_touches": observed,
        "expected_top": _num(expected, 2),
        "adoption_index": None,
        "adoption_low": None,
        "adoption_high": None,
        "out_of_rank": out,
        "out_of_rank_share": _share(out, n),
        "note": None,
    }
    if n == 0:
        row["note"] = "no first touches in the period"
    elif expected <= 0:
        row["note"] = "no top-tier lead was ever open in this queue"
    else:
        row["adoption_index"] = _num(observed / expected, 3)
        if n < MIN_TOUCHES:
            row["note"] = f"too few first touches for an interval ({n} < {MIN_TOUCHES})"
        else:
            # Normal approximation of the count of top-tier picks (a sum of Bernoulli draws).
            se = math.sqrt(max(float((share * (1 - share)).sum()), 1e-12)) / expected
            row["adoption_low"] = _num(max(0.0, observed / expected - Z95 * se), 3)
            row["adoption_high"] = _num(observed / expected + Z95 * se, 3)
    return row


# -- speed, realized value --------------------------------------------------------------------


def speed_by_tier(
    facts: pd.DataFrame, tier_order: Sequence[str], *, until: datetime
) -> list[dict[str, Any]]:
    """Hours from workable to first touch, and the share touched within 24 h, by entry tier.

    Args:
        facts: leads that entered the queue in the period.
        tier_order: tier names, best first.
        until: end of the period (24 h windows still open then are left out of the share).

    Returns:
        One row per tier.
    """
    rows = []
    end = np.datetime64(pd.Timestamp(until).tz_localize(None))
    for tier in tier_order:
        group = facts[facts["entry_tier"] == tier]
        hours = ((group["first_touch_at"] - group["start_at"]).dt.total_seconds() / 3600).dropna()
        hours = hours[hours >= 0]
        closed = group["start_at"].to_numpy() + np.timedelta64(24, "h") <= end
        within = (
            group["first_touch_at"].notna()
            & (group["first_touch_at"] - group["start_at"] <= pd.Timedelta(hours=24))
        ).to_numpy()
        rows.append(
            {
                "tier": tier,
                "leads": len(group),
                "touched": len(hours),
                "median_hours": _num(hours.median(), 1) if len(hours) else None,
                "within_24h": _share(int((within & closed).sum()), int(closed.sum())),
            }
        )
    return rows


def realized_by(
    facts: pd.DataFrame,
    keys: Sequence[str],
    opportunities: pd.DataFrame | None,
) -> list[dict[str, Any]]:
    """Realized conversion (with its interval) next to the mean predicted probability.

    Args:
        facts: matured leads.
        keys: grouping columns (``entry_tier``, ``owner_id``...).
        opportunities: ``opportunity_id, amount, is_won`` (optional).

    Returns:
        One row per group: leads, conversions, rate (+ interval), predicted, within_interval,
        won, won_amount.
    """
    frame = facts
    if opportunities is not None and len(opportunities):
        won = opportunities[opportunities["is_won"].astype(bool)]
        amount = won.set_index("opportunity_id")["amount"]
        frame = facts.assign(
            won=facts["opportunity_id"].isin(amount.index),
            won_amount=amount.reindex(facts["opportunity_id"]).fillna(0).to_numpy(float),
        )
    else:
        frame = facts.assign(won=False, won_amount=0.0)
    rows = []
    for key, group in frame.groupby(list(keys), sort=True, dropna=True):
        values = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys, values, strict=True))
        row.update(_rate_row(int(group["converted_in_window"].sum()), len(group)))
        predicted = group["entry_probability"].mean()
        row["predicted"] = _num(predicted)
        row["within_interval"] = (
            bool(row["rate_low"] <= predicted <= row["rate_high"])
            if row["rate_low"] is not None and row["predicted"] is not None
            else None
        )
        row["won"] = int(group["won"].sum())
        row["won_amount"] = _num(group["won_amount"].sum(), 2)
        rows.append(row)
    return rows


def calibration_by_week(facts: pd.DataFrame) -> list[dict[str, Any]]:
    """Predicted against realized conversion of matured leads, by the week they entered.

    Args:
        facts: matured leads.

    Returns:
        One row per week (Monday): leads, predicted, rate with interval.
    """
    week = facts["entered_at"].dt.to_period("W-SUN").dt.start_time
    rows = []
    for start, group in facts.groupby(week, sort=True):
        row = {"week": pd.Timestamp(start).date().isoformat()}
        row.update(_rate_row(int(group["converted_in_window"].sum()), len(group)))
        row["predicted"] = _num(group["entry_probability"].mean())
        rows.append(row)
    return rows


def value_statement(
    reps: list[dict[str, Any]], matured: pd.DataFrame, top_label: str
) -> dict[str, Any]:
    """The score's value in plain words, only where the data supports it.

    Reps whose adoption interval lies above 1 (they work top-tier leads first) are compared with
    the others on how their matured leads converted *against what the score predicted for those
    leads* (observed / expected conversions): a team that simply got better leads does not
    count as a team that used the score better. The raw conversion ratio is reported beside it.

    Args:
        reps: rows of per-rep adoption (``owner_id, adoption_low``).
        matured: matured leads (``owner_id, converted_in_window, entry_probability``).
        top_label: how the top tier is named in the sentence (``A``).

    Returns:
        ``sentence, ratio, low, high, raw_ratio, reason``: ``ratio`` compares observed/expected
        conversions of the two groups; ratio and sentence are None when unsupported.
    """
    followers = {r["owner_id"] for r in reps if (r.get("adoption_low") or 0) > 1}
    others = {r["owner_id"] for r in reps if r["owner_id"] not in followers}
    result: dict[str, Any] = {
        "sentence": None,
        "ratio": None,
        "low": None,
        "high": None,
        "raw_ratio": None,
    }
    if not followers or not others:
        result["reason"] = (
            f"no rep works {top_label} leads first measurably"
            if not followers
            else f"every rep works {top_label} leads first: nobody to compare with"
        )
        return result
    a = matured[matured["owner_id"].isin(followers)]
    b = matured[matured["owner_id"].isin(others)]
    if min(len(a), len(b)) < MIN_LEADS:
        result["reason"] = f"too few matured leads to compare (fewer than {MIN_LEADS} in a group)"
        return result
    k1, k0 = int(a["converted_in_window"].sum()), int(b["converted_in_window"].sum())
    e1, e0 = float(a["entry_probability"].sum()), float(b["entry_probability"].sum())
    raw = ratio_interval(k1, len(a), k0, len(b))
    result["raw_ratio"] = _num(raw[0], 3) if raw else None
    if min(k1, k0) <= 0 or min(e1, e0) <= 0:
        result["reason"] = "no conversions (or no predictions) in one of the groups"
        return result
    # Observed/expected in each group; log(O/E) has variance about 1/O.
    value = (k1 / e1) / (k0 / e0)
    se = math.sqrt(1 / k1 + 1 / k0)
    low, high = value * math.exp(-Z95 * se), value * math.exp(Z95 * se)
    result.update({"ratio": _num(value, 3), "low": _num(low, 3), "high": _num(high, 3)})
    if low > 1:
        result["sentence"] = (
            f"Reps who worked {top_label} leads first converted {value - 1:.0%} more of their "
            f"leads than the score predicted, compared with the other reps (95 % interval "
            f"{low - 1:.0%} to {high - 1:.0%})."
        )
        result["reason"] = None
    elif high < 1:
        result["sentence"] = (
            f"Reps who worked {top_label} leads first converted {1 - value:.0%} fewer of their "
            f"leads than the score predicted, compared with the other reps (95 % interval "
            f"{1 - high:.0%} to {1 - low:.0%})."
        )
        result["reason"] = None
    else:
        result["reason"] = (
            f"no measurable difference between reps who work {top_label} leads first and the "
            f"others, once their leads' predicted conversion is accounted for (ratio "
            f"{value:.2f}, 95 % interval {low:.2f} to {high:.2f})"
        )
    return result


# -- everything --------------------------------------------------------------------------------


@dataclass
class ImpactResult:
    """Adoption and impact of the score over one period (JSON-safe through :meth:`to_dict`).

    Attributes:
        since: start of the period.
        until: end of the period.
        tiers: tier names, best first; ``top`` the top tiers.
        overall: adoption over every rep.
        reps: adoption, speed and realized conversion per rep.
        teams: the same per team.
        speed: time to first touch by tier.
        realized: realized conversion and won amount by tier.
        realized_by_rep: by rep and tier.
        calibration: predicted against realized, by week.
        lift: realized lift of the top tiers over all matured leads.
        value: the plain-words value statement.
        notes: what could not be measured, and why.
    """

    since: str
    until: str
    tiers: list[str]
    top: list[str]
    overall: dict[str, Any]
    reps: list[dict[str, Any]] = field(default_factory=list)
    teams: list[dict[str, Any]] = field(default_factory=list)
    speed: list[dict[str, Any]] = field(default_factory=list)
    realized: list[dict[str, Any]] = field(default_factory=list)
    realized_by_rep: list[dict[str, Any]] = field(default_factory=list)
    calibration: list[dict[str, Any]] = field(default_factory=list)
    lift: dict[str, Any] = field(default_factory=dict)
    value: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict (no NaN: missing figures are None)."""
        return asdict(self)


def top_lift(matured: pd.DataFrame, top: Sequence[str]) -> dict[str, Any]:
    """Realized conversion of the top tiers divided by that of all matured leads.

    Args:
        matured: matured leads with ``entry_tier`` and ``converted_in_window``.
        top: top tier names.

    Returns:
        ``lift, low, high, top_leads, leads`` (None figures with a ``note`` when undefined).
    """
    in_top = matured["entry_tier"].isin(list(top))
    k1, n1 = int(matured.loc[in_top, "converted_in_window"].sum()), int(in_top.sum())
    k0, n0 = int(matured["converted_in_window"].sum()), len(matured)
    ratio = ratio_interval(k1, n1, k0, n0)
    out: dict[str, Any] = {"top_leads": n1, "leads": n0, "lift": None, "low": None, "high": None}
    if ratio is None:
        out["note"] = "no matured top-tier leads" if not n1 else "no conversions to compare yet"
    else:
        out.update(lift=_num(ratio[0], 3), low=_num(ratio[1], 3), high=_num(ratio[2], 3))
        out["note"] = None
    return out


def compute_impact(
    leads: pd.DataFrame,
    touches: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    tier_order: Sequence[str],
    since: datetime,
    until: datetime,
    top: Sequence[str] | None = None,
    opportunities: pd.DataFrame | None = None,
    users: pd.DataFrame | None = None,
    window_days: int = 30,
    open_days: int = 14,
) -> ImpactResult:
    """Adoption, speed to lead and realized value of the score, per rep, team and overall.

    Args:
        leads: ``lead_id, owner_id, created_at`` (+ ``responded_at, converted_at,
            opportunity_id``).
        touches: sales touches ``lead_id, touched_at``.
        scores: score history ``entity_id, probability, tier, scored_at``.
        tier_order: tier names from the best to the worst.
        since: start of the period (leads entering the queue and first touches from then).
        until: end of the period.
        top: the top tiers (default: the best one).
        opportunities: ``opportunity_id, amount, is_won``.
        users: ``user_id, name, team``.
        window_days: conversion window after entering the queue.
        open_days: days an untouched lead stays in its owner's queue.

    Returns:
        The figures, with notes where something could not be measured.
    """
    top = list(top) if top else list(tier_order[:1])
    since_ts, until_ts = (
        pd.Timestamp(since).tz_localize(None),
        pd.Timestamp(until).tz_localize(None),
    )
    notes: list[str] = []
    facts = lead_facts(leads, touches, scores, window_days=window_days, open_days=open_days)
    queue = queue_touches(facts, tier_order, top)
    queue = queue[(queue["touched_at"] >= since_ts) & (queue["touched_at"] < until_ts)]
    touched = facts["first_touch_at"].between(since_ts, until_ts, inclusive="left")
    unscored = int((touched & facts["touch_tier"].isna()).sum())
    if unscored:
        notes.append(f"{unscored:,} first touches happened before the lead had any score")
    if not len(queue):
        notes.append("no scored first touches in the period")
    if scores.empty:
        notes.append("no score history: nothing was scored yet")
    period = facts[
        facts["entered_at"].notna()
        & (facts["entered_at"] >= since_ts)
        & (facts["entered_at"] < until_ts)
    ]
    matured = period[period["entered_at"] + pd.Timedelta(days=window_days) <= until_ts]
    if len(period) and not len(matured):
        notes.append(
            f"no lead's {window_days}-day conversion window has closed yet: realized figures "
            "wait for it"
        )
    names, teams = {}, {}
    if users is not None and len(users):
        names = dict(zip(users["user_id"], users["name"], strict=True))
        if "team" in users.columns:
            teams = dict(zip(users["user_id"], users["team"], strict=True))
    reps = []
    by_rep_touches = dict(tuple(queue.groupby("owner_id", sort=True)))
    by_rep_matured = dict(tuple(matured.groupby("owner_id", sort=True)))
    for owner in sorted(set(by_rep_touches) | set(period["owner_id"].dropna())):
        row = {"owner_id": owner, "name": names.get(owner, owner), "team": teams.get(owner)}
        row.update(adoption_row(by_rep_touches.get(owner, queue.iloc[:0])))
        mine = by_rep_matured.get(owner, matured.iloc[:0])
        conv = _rate_row(int(mine["converted_in_window"].sum()), len(mine))
        row.update({f"matured_{k}": v for k, v in conv.items()})
        row["matured_note"] = (
            f"too few matured leads to judge their conversion ({len(mine)} < {MIN_LEADS})"
            if len(mine) < MIN_LEADS
            else None
        )
        reps.append(row)
    team_rows = []
    if teams:
        team_of = queue["owner_id"].map(teams)
        for team, group in queue.groupby(team_of, sort=True):
            team_rows.append({"team": team, **adoption_row(group)})
    tier_rows = realized_by(matured, ["entry_tier"], opportunities)
    order = {t: i for i, t in enumerate(tier_order)}
    tier_rows.sort(key=lambda r: order.get(r["entry_tier"], len(order)))
    for row in tier_rows:
        row["tier"] = row.pop("entry_tier")
    rep_tier = realized_by(matured, ["owner_id", "entry_tier"], opportunities)
    for row in rep_tier:
        row["tier"] = row.pop("entry_tier")
        row["name"] = names.get(row["owner_id"], row["owner_id"])
    return ImpactResult(
        since=since_ts.isoformat(),
        until=until_ts.isoformat(),
        tiers=list(tier_order),
        top=top,
        overall={**adoption_row(queue), "leads": len(period), "matured": len(matured)},
        reps=reps,
        teams=team_rows,
        speed=speed_by_tier(period, tier_order, until=until_ts.to_pydatetime()),
        realized=tier_rows,
        realized_by_rep=rep_tier,
        calibration=calibration_by_week(matured),
        lift=top_lift(matured, top),
        value=value_statement(reps, matured, "/".join(top)),
        notes=notes,
    )
