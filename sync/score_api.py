"""``POST /v1/score``: score posted records in milliseconds with each prediction's champion.

The body is one record or a list::

    {"prediction": "lead_conversion",            # optional when there is one prediction
     "as_of": "2026-12-05T09:00:00Z",            # optional: the scoring time (default: now,
                                                 #   floored to the hour as batch scoring does)
     "reasons": true,                            # optional: false skips the explanations
     "record": {"fields": {"Industry": "Technology", "CreatedDate": "...", ...},
                "events": [{"event": "task_call", "at": "2026-12-01T10:00:00Z", "value": 1}]}}

or ``"records": [...]`` with several. Features are computed in-process from the record with the
batch feature definitions (:func:`scoring.features.features_from_records`), then scored by the
same output code as batch scoring (:func:`scoring.pipeline.score_features`): no database round
trip per request. The champion is reloaded when its version changes (a promotion or rollback),
checked at most once a second.

Every bad body is a 400 with ``{"error": ..., "field": ...}`` naming the field; nothing a client
sends can make the endpoint answer 500.
"""

from __future__ import annotations

import hmac
import json
import math
import operator
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from itertools import repeat
from typing import Any, NoReturn

import numpy as np
import orjson
import pandas as pd

from connector.clock import parse_utc, utc_now
from scoring.events import ENTITIES, EVENT_SOURCES, Entity
from scoring.explain import Labels
from scoring.features import FeatureColumns, PostedEvents, features_from_records
from scoring.model import Predictor
from scoring.pipeline import score_features
from scoring.registry import ModelVersion, load_champion
from scoring.tiers import assign_tiers
from sync.capacity import all_cutoffs, stored_capacity_tiers
from sync.config import PredictionConfig, Settings
from sync.stages.score import score_time_for

# How often the champion pointer is read again (a promotion is seen within this time).
RELOAD_SECONDS = 1.0


class BadRequest(Exception):
    """A body the endpoint refuses: a 400 (or 413) naming the field."""

    def __init__(self, message: str, field: str | None = None, status: int = 400) -> None:
        """Describe the problem.

        Args:
            message: what is wrong, one line.
            field: the JSON path of the offending field (``records[0].fields.Industry``).
            status: HTTP status.
        """
        super().__init__(message)
        self.field = field
        self.status = status

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        return {"error": str(self), **({"field": self.field} if self.field else {})}


@dataclass
class _Loaded:
    version: str
    predictor: Predictor
    metadata: dict[str, Any]
    columns: FeatureColumns
    cutoffs: dict[str, float] | None
    checked: float


class Scorer:
    """The models behind ``/v1/score``, hot-swapped when a champion changes. Thread-safe."""

    def __init__(self, settings: Settings) -> None:
        """Bind to the configuration (models load on first use).

        Args:
            settings: configuration.
        """
        self.settings = settings
        self._loaded: dict[str, _Loaded] = {}
        self._lock = threading.Lock()
        lead = (settings.salesforce.streams if settings.salesforce else {}).get("Lead")
        self._stream_fields = set(lead.fields) if lead else set()

    def _spec(self, name: str | None) -> PredictionConfig:
        predictions = [p for p in self.settings.predictions if p.entity_table is None]
        if name is None:
            if len(predictions) != 1:
                raise BadRequest(
                    "several predictions are configured: name one",
                    "prediction",
                )
            return predictions[0]
        for p in predictions:
            if p.name == name:
                return p
        raise BadRequest(f"no prediction named '{name}'", "prediction")

    def model(self, spec: PredictionConfig) -> _Loaded | None:
        """The champion of a prediction, reloaded when its version changed.

        Args:
            spec: the prediction.

        Returns:
            The loaded model, or None when the prediction has no champion.
        """
        with self._lock:
            loaded = self._loaded.get(spec.name)
            now = time.monotonic()
            if loaded is not None and now - loaded.checked < RELOAD_SECONDS:
                return loaded
            champion = load_champion(self.settings.store.models_dir, spec.name)
            if champion is None:
                self._loaded.pop(spec.name, None)
                return None
            if loaded is not None and loaded.version == champion.version:
                loaded.checked = now
                return loaded
            loaded = _load(spec, champion, now)
            self._loaded[spec.name] = loaded
            return loaded

    def score(self, body: Any) -> tuple[int, dict[str, Any]]:
        """Score a parsed body.

        Args:
            body: the JSON body.

        Returns:
            (HTTP status, JSON answer).
        """
        try:
            return 200, self._score(body)
        except BadRequest as exc:
            return exc.status, exc.body()

    def _score(self, body: Any) -> dict[str, Any]:
        if isinstance(body, list):
            body = {"records": body}
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object or a list of records")
        unknown = sorted(set(body) - {"prediction", "as_of", "record", "records", "reasons"})
        if unknown:
            raise BadRequest(f"unknown key '{unknown[0]}'", unknown[0])
        reasons = body.get("reasons", True)
        if not isinstance(reasons, bool):
            raise BadRequest("reasons must be true or false", "reasons")
        name = body.get("prediction")
        if name is not None and not isinstance(name, str):
            raise BadRequest("prediction must be a string", "prediction")
        spec = self._spec(name)
        single = "record" in body
        if single == ("records" in body):
            raise BadRequest("give either record (one) or records (a list)", "records")
        raw = [body["record"]] if single else body["records"]
        if not isinstance(raw, list) or not raw:
            raise BadRequest("records must be a non-empty list", "records")
        fresh = self.settings.fresh
        limit = fresh.max_records if fresh else 5000
        if len(raw) > limit:
            raise BadRequest(f"at most {limit} records per request", "records", status=413)
        as_of = body.get("as_of")
        anchor = (
            _time(as_of, "as_of") if as_of is not None else score_time_for(utc_now())
        ).replace(microsecond=0)
        loaded = self.model(spec)
        if loaded is None:
            raise BadRequest(
                f"prediction '{spec.name}' has no trained model yet", "prediction", status=503
            )
        entity = ENTITIES[spec.entity]
        schema = _Schema.of(entity, loaded.columns, self._stream_fields)
        records: list[dict[str, Any]] = []
        collected = _Events()
        for i, item in enumerate(raw):
            where = "record" if single else f"records[{i}]"
            records.append(schema.record(item, where, i, collected))
        events = collected.finish(single)
        try:
            data = features_from_records(entity, records, events, anchor, loaded.columns)
        except ValueError as exc:
            raise BadRequest(str(exc), "prediction", status=422) from None
        scores = score_features(
            spec,
            loaded.predictor,
            loaded.metadata,
            data,
            score_time=anchor,
            reasons=reasons,
            labels=Labels.from_json(loaded.metadata.get("reason_labels")),
        )
        if spec.task == "binary":
            if loaded.cutoffs is not None:
                tiers = assign_tiers(
                    scores["probability"].to_numpy(dtype=float), loaded.cutoffs, spec.lowest_tier
                )
                scores = scores.assign(tier=tiers)
            elif spec.tier_by == "percentile":
                scores = scores.assign(tier=None)  # percentiles need the scored population
        # column lists, not to_dict(): boxing the scored_at column costs more than the model
        columns = {
            c: scores[c].tolist()
            for c in ("entity_id", "probability", "score", "tier", "reasons", "class_probabilities")
        }
        results = []
        for i, entity_id in enumerate(columns["entity_id"]):
            score = columns["score"][i]
            classes = columns["class_probabilities"][i]
            results.append(
                {
                    "id": entity_id or None,
                    "probability": _finite(columns["probability"][i]),
                    "score": None if pd.isna(score) else int(score),
                    "tier": columns["tier"][i],
                    "reasons": columns["reasons"][i],
                    **({"class_probabilities": json.loads(classes)} if classes else {}),
                }
            )
        head = {
            "prediction": spec.name,
            "model_version": loaded.version,
            "scored_at": anchor.isoformat() + "Z",
        }
        return {**head, **results[0]} if single else {**head, "results": results}


@dataclass(frozen=True)
class _Schema:
    """What a posted record of one model may hold, worked out once per request."""

    entity: Entity
    known: frozenset[str]
    numeric: frozenset[str]
    times: frozenset[str]
    conditions: frozenset[str]
    required: tuple[str, ...]
    own_sources: tuple[Any, ...]

    @classmethod
    def of(cls, entity: Entity, columns: FeatureColumns, stream_fields: set[str]) -> _Schema:
        own_sources = tuple(
            s for s in EVENT_SOURCES.get(entity.name, ()) if s.table == entity.table
        )
        times = {s.time_column for s in own_sources}
        if entity.created_column:
            times.add(entity.created_column)
        conditions = {c for s in own_sources if (c := s.condition_column)}
        conditions -= set(columns.categorical)
        known = (
            set(columns.categorical)
            | set(columns.numeric)
            | stream_fields
            | times
            | conditions
            | {entity.id_column}
        )
        return cls(
            entity=entity,
            known=frozenset(known),
            numeric=frozenset(columns.numeric),
            times=frozenset(times),
            conditions=frozenset(conditions),
            required=(*columns.categorical, *columns.numeric),
            own_sources=own_sources,
        )

    def record(self, item: Any, where: str, row: int, events: _Events) -> dict[str, Any]:
        """Validate one posted record; its events go to ``events`` (a 400 naming the field)."""
        if type(item) is not dict:
            raise BadRequest("a record must be an object with fields (and events)", where)
        if not item.keys() <= _RECORD_KEYS:
            extra = sorted(set(item) - _RECORD_KEYS)[0]
            raise BadRequest(f"unknown key '{extra}'", f"{where}.{extra}")
        fields = item.get("fields")
        if type(fields) is not dict:
            raise BadRequest("fields must be an object", f"{where}.fields")
        if not fields.keys() <= self.known:
            key = next(k for k in fields if k not in self.known)
            raise BadRequest(f"unknown field '{key}'", f"{where}.fields.{key}")
        out: dict[str, Any] = {}
        for key, value in fields.items():
            if value is None:
                out[key] = None
            elif key in self.numeric:
                if not _finite_number(value):
                    raise BadRequest(f"{key} must be a number or null", f"{where}.fields.{key}")
                out[key] = value
            elif key in self.times:
                out[key] = _time(value, f"{where}.fields.{key}")
            elif key in self.conditions:
                if type(value) is not bool:
                    raise BadRequest(f"{key} must be true, false or null", f"{where}.fields.{key}")
                out[key] = value
            elif type(value) not in (str, bool) and not _finite_number(value):
                raise BadRequest(
                    f"{key} must be a string, number, boolean or null", f"{where}.fields.{key}"
                )
            else:
                out[key] = value
        for c in self.required:
            if c not in fields:
                raise BadRequest(
                    f"missing field '{c}' (send null when it is unknown)", f"{where}.fields.{c}"
                )
        for source in self.own_sources:
            at = out.get(source.time_column)
            if at is None or not source.event_names:
                continue
            if source.condition_column and out.get(source.condition_column) is not True:
                continue
            events.own(row, source.event_names[0], at)
        posted = item.get("events", [])
        if type(posted) is not list:
            raise BadRequest("events must be a list", f"{where}.events")
        events.posted.append((row, posted))
        return out


class _Events:
    """The events of a request's records, checked and parsed all at once.

    A request of 1,000 records carries about 15,000 events: checked one by one in Python they
    cost more than scoring them. Here each check is one comprehension over all events, and times
    are read by pandas' C parser; only when a check fails are the events walked one by one, to
    name the first bad field exactly as the per-event checks word it.
    """

    def __init__(self) -> None:
        self.own_rows: list[int] = []
        self.own_names: list[str] = []
        self.own_at: list[datetime] = []
        self.posted: list[tuple[int, list[Any]]] = []

    def own(self, row: int, name: str, at: datetime) -> None:
        """An event the record's own fields imply (creation, conversion)."""
        self.own_rows.append(row)
        self.own_names.append(name)
        self.own_at.append(at)

    def finish(self, single: bool) -> PostedEvents:
        """All events as arrays (a 400 naming the first bad event field)."""
        flat = [event for _, events in self.posted for event in events]
        # map() over C functions: about 0.3 us an event for all the checks together
        try:
            if not set(map(type, flat)) <= {dict}:
                self._refuse(single)
            names = list(map(_EVENT_NAME, flat))
            texts = list(map(_EVENT_AT, flat))
        except KeyError:
            self._refuse(single)
        raw = list(map(dict.get, flat, repeat("value"), repeat(_ABSENT)))
        absent = raw.count(_ABSENT)
        plausible = (
            # event, at and maybe value: no other key
            sum(map(len, flat)) == 3 * len(flat) - absent
            and set(map(type, names)) <= {str}
            and all(names)
            and set(map(type, texts)) <= {str}
            and set(map(type, raw)) <= _VALUE_TYPES
        )
        if not plausible:
            self._refuse(single)
        try:
            values = (
                np.full(len(raw), math.nan)
                if absent == len(raw)  # events without values: the common case
                else np.array(
                    [math.nan if v is None or v is _ABSENT else v for v in raw], dtype=float
                )
            )
        except OverflowError:  # an integer beyond any float
            self._refuse(single)
        if np.isnan(values).sum() != absent + raw.count(None) or np.isinf(values).any():
            self._refuse(single)  # NaN or infinity posted as a value
        at = self._parse(texts, single) if texts else np.zeros(0, dtype="datetime64[us]")
        sizes = [len(events) for _, events in self.posted]
        rows = np.repeat(np.array([row for row, _ in self.posted], dtype=np.int64), sizes)
        return PostedEvents(
            row=np.concatenate([np.array(self.own_rows, dtype=np.int64), rows]),
            name=[*self.own_names, *names],
            at=np.concatenate([_datetimes(self.own_at), at]),
            value=np.concatenate([np.full(len(self.own_rows), math.nan), values]),
        )

    def _refuse(self, single: bool) -> NoReturn:
        """Walk the events one by one and raise the 400 of the first bad one."""
        for row, events in self.posted:
            where = "record" if single else f"records[{row}]"
            for j, event in enumerate(events):
                path = f"{where}.events[{j}]"
                if not isinstance(event, dict) or not event.keys() <= _EVENT_KEYS:
                    _bad_event(event, path)
                name, at, value = event.get("event"), event.get("at"), event.get("value")
                if not isinstance(name, str) or not name or not isinstance(at, str):
                    _bad_event(event, path)
                if value is not None and not _finite_number(value):
                    raise BadRequest("value must be a finite number or null", f"{path}.value")
        raise BadRequest("an event is not valid", "records")  # not reached: a check failed

    def _parse(self, texts: list[str], single: bool) -> np.ndarray:
        # pandas reads ISO 8601 in C (1.5 ms for 15,000 times, against 15 ms one by one); when
        # it refuses one (or is stricter than the one parser), read them one by one to name it
        try:
            # pandas also reads "now" and "today": an ISO time starts with its year
            if not {text[:1] for text in texts} <= _DIGITS:
                raise ValueError("not ISO 8601")
            parsed = pd.to_datetime(texts, format="ISO8601", utc=True)
            if not parsed.isna().any():
                return parsed.tz_convert(None).to_numpy().astype("datetime64[us]")
        except (ValueError, TypeError, OverflowError):
            pass
        out = []
        for row, events in self.posted:
            where = "record" if single else f"records[{row}]"
            for j, event in enumerate(events):
                out.append(_time(event["at"], f"{where}.events[{j}].at"))
        return np.array(out, dtype="datetime64[us]")


_RECORD_KEYS = frozenset({"fields", "events"})
_DIGITS = frozenset("0123456789")
_EVENT_KEYS = frozenset({"event", "at", "value"})
_EVENT_NAME = operator.itemgetter("event")
_EVENT_AT = operator.itemgetter("at")
_ABSENT = object()  # no "value" key (None is a posted null)
_VALUE_TYPES = frozenset({type(None), int, float, object})


def _datetimes(values: list[datetime]) -> np.ndarray:
    """Naive datetimes as ``datetime64[us]`` (pandas converts a list 10x faster than NumPy)."""
    try:
        return pd.DatetimeIndex(values).to_numpy().astype("datetime64[us]")
    except (ValueError, OverflowError):  # beyond pandas' nanosecond range (years 1677-2262)
        return np.array(values, dtype="datetime64[us]")


def _finite_number(value: Any) -> bool:
    """A JSON number that is a finite float (not a boolean, NaN, infinity or a 400-digit int)."""
    if type(value) is float:
        return math.isfinite(value)
    if type(value) is int:
        return abs(value) < 2**1023
    return False


def _bad_event(event: Any, path: str) -> NoReturn:
    """Raise the 400 that names what is wrong with a posted event."""
    if not isinstance(event, dict):
        raise BadRequest("an event must be an object with event and at", path)
    bad = sorted(set(event) - _EVENT_KEYS)
    if bad:
        raise BadRequest(f"unknown key '{bad[0]}'", f"{path}.{bad[0]}")
    name = event.get("event")
    if not isinstance(name, str) or not name:
        raise BadRequest("event must be a non-empty string", f"{path}.event")
    if "at" not in event:
        raise BadRequest("missing at (the event's time)", f"{path}.at")
    _time(event["at"], f"{path}.at")
    raise BadRequest("not a valid event", path)  # unreachable for the checks above


def _time(value: Any, field: str) -> datetime:
    """An ISO 8601 time (naive UTC), or a 400 naming the field."""
    if not isinstance(value, str):
        raise BadRequest("must be an ISO 8601 time string", field)
    try:
        return parse_utc(value)
    except ValueError:
        raise BadRequest(f"'{value[:40]}' is not an ISO 8601 time", field) from None


def read_body(data: bytes) -> Any:
    """Parse a request body.

    orjson reads a 1,000-record body in 3.8 ms where the standard library takes 6 ms; what it
    refuses but JSON as Python reads it allows (``NaN``, integers beyond 64 bits) is parsed by the
    standard library, so that validation names the field instead of refusing the whole body.

    Args:
        data: the body.

    Returns:
        The parsed JSON.

    Raises:
        ValueError: the body is not JSON (``UnicodeDecodeError`` when it is not text).
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def write_answer(answer: dict[str, Any]) -> bytes:
    """An answer as JSON bytes (orjson: 1,000 results in 0.07 ms instead of 1.3 ms).

    Args:
        answer: the JSON answer.

    Returns:
        Its bytes.
    """
    try:
        return orjson.dumps(answer)
    except TypeError:  # a type orjson does not know: the standard library's conversions
        return json.dumps(answer, default=str).encode()


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _load(spec: PredictionConfig, champion: ModelVersion, now: float) -> _Loaded:
    tiers = stored_capacity_tiers(champion) if spec.capacity and spec.task == "binary" else None
    return _Loaded(
        version=champion.version,
        predictor=champion.load(),
        metadata=champion.metadata,
        columns=FeatureColumns(**champion.metadata["features"]),
        cutoffs=all_cutoffs(spec, tiers) if tiers is not None else None,
        checked=now,
    )


def authorized(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries the bearer token (constant-time compare).

    Args:
        header: the header's value.
        token: the configured token.

    Returns:
        True when it matches.
    """
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].encode(), token.encode())
