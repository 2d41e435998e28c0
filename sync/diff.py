"""Diffing, for every target: what should each field or trait hold, and what must be sent?

The write-back ledger holds, per target, object, record and field, the last value the target
*confirmed*. A push sends only what differs from it, with these rules:

- **Values.** Each mapped output (probability, score, tier, percentile, ...) is computed from the
  latest scores (:func:`output_values`) and JSON-encoded the way the ledger stores it.
- **Nulls.** An output with no value (no reasons, no score change yet) is left alone unless its
  kind is listed in the target's ``sync_nulls``; then the null is written (clearing the field).
- **Hysteresis.** A record whose probability moved by less than ``epsilon`` since its last
  confirmed write, and whose tier did not change, is not sent again (so list views and field
  history are not churned by noise). The comparison is always with the last *written* value, so
  small moves add up and are sent once they pass ``epsilon``. Fields never confirmed are sent.
- **Score change and trend** are measured against the last written score when a record's score
  is sent: ``score_change`` is the difference in points and ``trend`` is ``rising``, ``steady`` or
  ``falling`` (by ``trend_threshold`` points). A first write has neither.
- **Retries.** A rejected row waits for its ``next_attempt_at`` (backoff); ``dead`` rows wait for
  ``leadscore retry --dead``; ``gone`` rows (deleted or merged records) are never sent again.
- **Validation.** An optional check (Salesforce describe: picklist values, lengths, number
  ranges) marks records whose values the target would reject as invalid: they are not sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from connector.store import utc_now
from scoring.audiences import score_frame

TREND_RISING, TREND_STEADY, TREND_FALLING = "rising", "steady", "falling"

Check = Callable[[str, Any], str | None]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _encode(values: pd.Series) -> pd.Series:
    return values.map(lambda v: json.dumps(None if _missing(v) else v))


def _class_probabilities(text: Any, structured: bool) -> Any:
    if not isinstance(text, str):
        return None
    return json.loads(text) if structured else text


def output_values(
    scores: pd.DataFrame,
    fields: dict[str, str],
    *,
    task: str = "binary",
    structured: bool = False,
) -> pd.DataFrame:
    """The value each target field should hold, in long form (score change and trend excepted).

    Args:
        scores: the latest scores (``entity_id, model_version, probability, score, tier,
            reasons, scored_at``, optionally ``class_probabilities``).
        fields: output kind -> target field (or trait) name.
        task: the prediction's task (regression: ``probability`` holds the predicted value).
        structured: the target takes objects (Segment traits): class probabilities are sent as
            an object rather than as JSON text.

    Returns:
        ``record_id, field, kind, value`` with ``value`` JSON-encoded (the ledger's form).
        ``score_change`` and ``trend`` are left out: they depend on the diff
        (:func:`diff_outputs`).
    """
    frame = scores if "percentile" in scores.columns else score_frame(scores, task)
    encoders: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
        "score": lambda s: s["score"].astype(int).map(json.dumps),
        "tier": lambda s: _encode(s["tier"].astype(object)),
        "predicted_class": lambda s: _encode(s["predicted_class"].astype(object)),
        "probability": lambda s: _encode(s["probability"].astype(float).round(4)),
        "predicted_value": lambda s: _encode(s["predicted_value"].astype(float).round(4)),
        "percentile": lambda s: s["percentile"].astype(int).map(json.dumps),
        "model_version": lambda s: s["model_version"].astype(str).map(json.dumps),
        "scored_at": lambda s: (
            pd.to_datetime(s["scored_at"]).dt.strftime("%Y-%m-%dT%H:%M:%SZ").map(json.dumps)
        ),
        # reasons fit a 255-character text field by construction (scoring.explain); the cut is
        # a guard. No reasons is null, not an empty string (an empty Segment trait is a value).
        "reasons": lambda s: s["reasons"].map(
            lambda v: json.dumps(v[:255] if isinstance(v, str) else None)
        ),
        "class_probabilities": lambda s: (
            s["class_probabilities"]
            if "class_probabilities" in s.columns
            else pd.Series([None] * len(s), index=s.index)
        ).map(lambda v: json.dumps(_class_probabilities(v, structured))),
    }
    parts = [
        pd.DataFrame(
            {
                "record_id": frame["entity_id"].astype(str),
                "field": name,
                "kind": kind,
                "value": encoders[kind](frame),
            }
        )
        for kind, name in fields.items()
        if kind in encoders
    ]
    if not parts:
        return pd.DataFrame(columns=["record_id", "field", "kind", "value"])
    return pd.concat(parts, ignore_index=True)


def _differs(values: pd.Series, confirmed: pd.Series) -> np.ndarray:
    """Row by row: does the desired JSON value differ from the confirmed one (NULL: never)?"""
    v = values.to_numpy(dtype=object)
    c = confirmed.to_numpy(dtype=object)
    out = np.ones(len(v), dtype=bool)
    known = pd.notna(confirmed).to_numpy()
    same_text = known & (v == c)
    out[same_text] = False
    # DuckDB may re-serialise JSON (spacing, number forms); compare meaning where the text differs
    for i in np.flatnonzero(known & ~same_text):
        out[i] = json.loads(c[i]) != json.loads(v[i])
    return out


def changed_values(desired: pd.DataFrame, ledger: pd.DataFrame) -> pd.DataFrame:
    """The desired values that differ from the last confirmed ones (no hysteresis, no nulls rule).

    Args:
        desired: ``record_id, field, value`` (more columns are kept).
        ledger: ledger rows (``record_id, field, value`` with the confirmed value, NULL if never
            confirmed).

    Returns:
        The subset of ``desired`` to send.
    """
    if ledger.empty or desired.empty:
        return desired.reset_index(drop=True)
    merged = desired.merge(
        ledger[["record_id", "field", "value"]].rename(columns={"value": "confirmed"}),
        on=["record_id", "field"],
        how="left",
    )
    keep = _differs(merged["value"], merged["confirmed"])
    return merged.loc[keep, list(desired.columns)].reset_index(drop=True)


@dataclass
class Diff:
    """What a push would send to one target object, and why the rest is not sent.

    Attributes:
        changes: rows to send: ``record_id, field, kind, value, before`` (JSON; ``before`` is the
            last confirmed value, None when never confirmed).
        invalid: rows the target would reject: ``record_id, field, kind, value, error``.
        records: scored records considered.
        create: records with something to send that the target never confirmed anything for.
        update: records with something to send and earlier confirmed values.
        unchanged: records with nothing to send.
        hysteresis: records held back by hysteresis only.
        invalid_records: records not sent because a value is invalid.
        deferred: records with a rejected row waiting for its next attempt (backoff).
        dead: records with a dead-letter row.
        gone: records deleted or merged away in the target.
    """

    changes: pd.DataFrame
    invalid: pd.DataFrame
    records: int = 0
    create: int = 0
    update: int = 0
    unchanged: int = 0
    hysteresis: int = 0
    invalid_records: int = 0
    deferred: int = 0
    dead: int = 0
    gone: int = 0

    @property
    def to_send(self) -> int:
        """Records with something to send."""
        return self.create + self.update

    # the counts' names (``invalid`` is ``invalid_records``), in the order reports show them
    COUNTS: ClassVar[tuple[str, ...]] = (
        "records",
        "create",
        "update",
        "unchanged",
        "hysteresis",
        "invalid",
        "deferred",
        "dead",
        "gone",
    )

    def counts(self) -> dict[str, int]:
        """The counts (JSON-serialisable)."""
        return {
            name: getattr(self, "invalid_records" if name == "invalid" else name)
            for name in self.COUNTS
        }

    def sample(self, n: int) -> list[dict[str, Any]]:
        """Up to ``n`` records' changes, ``{record_id, changes: {field: [before, after]}}``."""
        out: list[dict[str, Any]] = []
        if n <= 0 or self.changes.empty:
            return out
        first = set(self.changes["record_id"].drop_duplicates().head(n))
        rows = self.changes[self.changes["record_id"].isin(first)]
        for record_id, group in rows.groupby("record_id", sort=False):
            out.append(
                {
                    "record_id": record_id,
                    "changes": {
                        name: [None if before is None else json.loads(before), json.loads(after)]
                        for name, before, after in zip(
                            group["field"], group["before"], group["value"], strict=True
                        )
                    },
                }
            )
        return out

    def records_to_send(self) -> dict[str, dict[str, Any]]:
        """Record id -> ``{field: value}`` (decoded), in a stable order."""
        out: dict[str, dict[str, Any]] = {}
        for record_id, name, value in zip(
            self.changes["record_id"], self.changes["field"], self.changes["value"], strict=True
        ):
            out.setdefault(record_id, {})[name] = json.loads(value)
        return out


def merge_diffs(diffs: list[Diff]) -> Diff:
    """One diff of the batches a push diffed one by one (batches hold disjoint records).

    Args:
        diffs: the batches' diffs.

    Returns:
        Their changes and invalid rows together, their counts added.
    """
    out = Diff(
        changes=pd.concat([d.changes for d in diffs], ignore_index=True),
        invalid=pd.concat([d.invalid for d in diffs], ignore_index=True),
    )
    for name in (
        "records",
        "create",
        "update",
        "unchanged",
        "hysteresis",
        "invalid_records",
        "deferred",
        "dead",
        "gone",
    ):
        setattr(out, name, sum(getattr(d, name) for d in diffs))
    return out


def _confirmed_number(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values.astype(object).where(values.notna(), None), errors="coerce")


def diff_outputs(
    scores: pd.DataFrame,
    ledger: pd.DataFrame,
    fields: dict[str, str],
    *,
    task: str = "binary",
    epsilon: float = 0.0,
    sync_nulls: frozenset[str] | set[str] | list[str] = frozenset(),
    trend_threshold: int = 5,
    structured: bool = False,
    check: Check | None = None,
    now: datetime | None = None,
) -> Diff:
    """Compare the latest scores with the ledger of one target object.

    Args:
        scores: the latest scores (:func:`scoring.audiences.score_frame` columns, or the raw
            scoring run).
        ledger: the target object's ledger (``Store.ledger``).
        fields: output kind -> field or trait name.
        task: the prediction's task.
        epsilon: hysteresis threshold on the probability (0 disables it).
        sync_nulls: output kinds whose null value is written.
        trend_threshold: score points for a rising / falling trend.
        structured: the target takes objects (Segment).
        check: ``(field, value) -> error or None``; records with an error are invalid.
        now: reference time for backoffs (default now, naive UTC).

    Returns:
        The diff.
    """
    now = now or utc_now()
    frame = scores if "percentile" in scores.columns else score_frame(scores, task)
    frame = frame.assign(entity_id=frame["entity_id"].astype(str))
    diff = Diff(
        changes=pd.DataFrame(columns=["record_id", "field", "kind", "value", "before"]),
        invalid=pd.DataFrame(columns=["record_id", "field", "kind", "value", "error"]),
        records=len(frame),
    )
    if frame.empty:
        return diff
    nulls = set(sync_nulls)
    plain = {k: v for k, v in fields.items() if k not in ("score_change", "trend")}
    desired = output_values(frame, plain, task=task, structured=structured)
    columns = ["record_id", "field", "value", "status", "next_attempt_at"]
    book = (ledger[columns] if not ledger.empty else pd.DataFrame(columns=columns)).rename(
        columns={"value": "before"}
    )
    merged = desired.merge(book, on=["record_id", "field"], how="left")
    # nulls are left alone unless their kind syncs nulls
    merged = merged[(merged["value"] != "null") | merged["kind"].isin(nulls)].reset_index(drop=True)
    differs = _differs(merged["value"], merged["before"])
    status = merged["status"].fillna("new").to_numpy()
    retry_at = pd.to_datetime(merged["next_attempt_at"]).to_numpy()
    blocked_dead = differs & (status == "dead")
    blocked_gone = status == "gone"
    blocked_wait = differs & (status == "failed") & (retry_at > np.datetime64(now))
    blocked = blocked_dead | blocked_gone | blocked_wait
    diff.dead = merged.loc[blocked_dead, "record_id"].nunique()
    diff.gone = merged.loc[blocked_gone, "record_id"].nunique()
    diff.deferred = merged.loc[blocked_wait, "record_id"].nunique()
    gone_ids = set(merged.loc[blocked_gone, "record_id"])
    send = merged[differs & ~blocked & ~merged["record_id"].isin(gone_ids).to_numpy()]

    # Hysteresis: per record, the basis moved less than epsilon and the tier stayed the same.
    held: set[str] = set()
    if epsilon > 0 and not send.empty:
        basis = _basis_values(merged, fields, task)
        if basis is not None:
            by_id = frame.set_index("entity_id")
            old = basis["old"].reindex(by_id.index)
            calm = old.notna() & ((basis["new"].reindex(by_id.index) - old).abs() < epsilon)
            tier_kind = "predicted_class" if "predicted_class" in fields else "tier"
            if tier_kind in fields:
                tiers = merged[merged["kind"] == tier_kind].set_index("record_id")
                old_tier = tiers["before"].reindex(by_id.index)
                new_tier = tiers["value"].reindex(by_id.index)
                calm &= old_tier.notna() & (old_tier == new_tier)
            calm_ids = set(calm[calm].index)
            # a field never confirmed is sent whatever the hysteresis
            holdable = send["record_id"].isin(calm_ids) & send["before"].notna()
            held_ids = set(send.loc[holdable, "record_id"])
            send = send[~holdable]
            held = held_ids - set(send["record_id"])
            diff.hysteresis = len(held)

    # Score change and trend travel with a score that is sent.
    if {"score_change", "trend"} & set(fields) and not send.empty:
        extra = _trend_rows(send, fields, ledger, trend_threshold, nulls)
        if not extra.empty:
            send = pd.concat([send, extra], ignore_index=True)

    if check is not None and not send.empty:
        errors = [
            check(name, json.loads(value))
            for name, value in zip(send["field"], send["value"], strict=True)
        ]
        bad = np.array([e is not None for e in errors], dtype=bool)
        if bad.any():
            diff.invalid = send[bad].assign(error=[e for e in errors if e is not None])[
                ["record_id", "field", "kind", "value", "error"]
            ]
            bad_ids = set(diff.invalid["record_id"])
            diff.invalid_records = len(bad_ids)
            send = send[~send["record_id"].isin(bad_ids)]

    changes = send[["record_id", "field", "kind", "value", "before"]].reset_index(drop=True)
    changes["before"] = changes["before"].astype(object).where(changes["before"].notna(), None)
    diff.changes = changes
    sending = set(changes["record_id"])
    known = set(merged.loc[merged["before"].notna(), "record_id"])
    diff.update = len(sending & known)
    diff.create = len(sending) - diff.update
    invalid_ids = set(diff.invalid["record_id"])
    blocked_ids = set(merged.loc[blocked, "record_id"]) | gone_ids
    diff.unchanged = diff.records - len(sending | held | invalid_ids | blocked_ids)
    return diff


def _basis_values(merged: pd.DataFrame, fields: dict[str, str], task: str) -> pd.DataFrame | None:
    """Per record, the 0-1 number hysteresis compares: confirmed (``old``) and desired (``new``).

    Taken from the most precise mapped output, the same one on both sides: the probability,
    else the score, else the percentile (regression: the percentile, else the score).
    """
    order = (
        [("percentile", 100.0), ("score", 100.0)]
        if task == "regression"
        else [("probability", 1.0), ("score", 100.0), ("percentile", 100.0)]
    )
    for kind, scale in order:
        if kind in fields:
            rows = merged[merged["kind"] == kind]
            return pd.DataFrame(
                {
                    "old": (_confirmed_number(rows["before"]) / scale).to_numpy(),
                    "new": (_confirmed_number(rows["value"]) / scale).to_numpy(),
                },
                index=rows["record_id"].to_numpy(),
            )
    return None


def _trend_rows(
    send: pd.DataFrame,
    fields: dict[str, str],
    ledger: pd.DataFrame,
    threshold: int,
    nulls: set[str],
) -> pd.DataFrame:
    """``score_change`` / ``trend`` rows for the records whose score is sent."""
    scores = send[send["kind"] == "score"]
    new = pd.to_numeric(scores["value"]).to_numpy(dtype=float)
    old = _confirmed_number(scores["before"]).to_numpy(dtype=float)
    change = new - old
    step = max(threshold, 1)
    rows = []
    for kind in ("score_change", "trend"):
        if kind not in fields:
            continue
        name = fields[kind]
        if kind == "score_change":
            values: list[Any] = [None if np.isnan(c) else int(c) for c in change]
        else:
            values = [
                None
                if np.isnan(c)
                else TREND_RISING
                if c >= step
                else TREND_FALLING
                if c <= -step
                else TREND_STEADY
                for c in change
            ]
        part = pd.DataFrame(
            {
                "record_id": scores["record_id"].to_numpy(),
                "field": name,
                "kind": kind,
                "value": [json.dumps(v) for v in values],
            }
        )
        book = ledger[ledger["field"] == name][["record_id", "value"]] if not ledger.empty else None
        if book is not None and not book.empty:
            part = part.merge(book.rename(columns={"value": "before"}), on="record_id", how="left")
        else:
            part["before"] = None
        part = part[(part["value"] != "null") | (kind in nulls)]
        part = part[_differs(part["value"], part["before"])]
        rows.append(part)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
