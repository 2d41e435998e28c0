"""Configuration: one TOML file plus secrets, validated into typed settings.

- ``config.toml`` holds everything but secrets; see ``config.example.toml`` for every key.
- Secrets (fields typed ``SecretStr``) come from environment variables
  ``LEADSCORE_<SECTION>__<KEY>`` (e.g. ``LEADSCORE_SALESFORCE__CLIENT_SECRET``) or from a
  git-ignored ``secrets.toml`` beside the config file (or at ``LEADSCORE_SECRETS_FILE``); the
  environment wins. A secret found in ``config.toml`` is an error.
- Relative paths are relative to the config file's directory.
- Any problem is one :class:`~connector.errors.ConfigError` line naming the file and the key path.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
import types
import typing
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from connector.errors import ConfigError
from connector.salesforce import SalesforceSettings
from connector.segment import SegmentSettings
from scoring.audiences import AudienceError, audience_columns, validate_expression
from scoring.spec import PredictionSpec
from scoring.traits import TraitSpec
from sync.job_names import JOB_NAMES

ENV_PREFIX = "LEADSCORE_"
SECRETS_FILE = "secrets.toml"

# What a prediction can write (sync/diff.py computes each): calibrated probability, 0-100 score,
# tier, percentile in the scored population, predicted class and every class's probability
# (multiclass), predicted value (regression), reasons text, score change since the last written
# score and its trend (rising / steady / falling), model version and scoring time.
OutputKind = Literal[
    "probability",
    "score",
    "tier",
    "percentile",
    "predicted_class",
    "class_probabilities",
    "predicted_value",
    "reasons",
    "score_change",
    "trend",
    "model_version",
    "scored_at",
]
# Outputs that a task does not have.
TASK_OUTPUTS: dict[str, frozenset[str]] = {
    "binary": frozenset({"predicted_class", "class_probabilities", "predicted_value"}),
    "multiclass": frozenset({"predicted_value"}),
    "regression": frozenset({"probability", "predicted_class", "class_probabilities"}),
}


class _TargetOptions(BaseModel):
    """Diff options shared by every output target.

    Attributes:
        epsilon: hysteresis: a record whose probability moved by less than this since the last
            confirmed write and whose tier did not change is not sent again (0 sends every
            change). Regression predictions compare percentiles (0-1) instead.
        sync_nulls: outputs whose null value is written as a null (clearing the field or
            trait); any other output with no value is left as it is.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epsilon: float = Field(0.02, ge=0, le=1)
    sync_nulls: list[OutputKind] = Field(default_factory=list)


class RetentionSettings(BaseModel):
    """The ``[store.retention]`` section: what old rows the store keeps (``leadscore vacuum``).

    Score history keeps, per lead, every row whose tier changed or whose score moved by more
    than ``score_change_points`` since the lead's previous row, and otherwise one row per lead
    per day (the day's last); the latest run of each prediction is always kept whole. Unset
    numbers of days keep everything.

    Attributes:
        score_history_days: days of score history kept (older rows are deleted).
        score_change_points: a move of more than this many points is always kept.
        compact_scores: thin the score history as above (False: keep every row).
        run_log_days: days of run-log rows kept (each job's last run is always kept).
        import_reject_days: days of import rejects kept (by the file's import time).
        vacuum_after_score: apply the retention and reclaim space after every score job.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    score_history_days: int | None = Field(default=None, ge=1, le=36_500)
    score_change_points: int = Field(default=5, ge=0, le=100)
    compact_scores: bool = True
    run_log_days: int | None = Field(default=None, ge=1, le=36_500)
    import_reject_days: int | None = Field(default=None, ge=1, le=36_500)
    vacuum_after_score: bool = False


class StoreSettings(BaseModel):
    """The ``[store]`` section.

    Attributes:
        path: the DuckDB file.
        models_dir: where model versions are kept.
        batch_size: entities scored, diffed and pushed per batch (memory does not grow with the
            number of leads, only with this).
        retention: what old rows are kept (``[store.retention]``).
        memory_limit_mb: DuckDB's memory limit for job runs (its cache of the store's blocks
            grows with the store up to it); None: DuckDB's default (80 % of RAM).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path = Path("leadscore.duckdb")
    models_dir: Path = Path("models")
    batch_size: int = Field(default=50_000, ge=10, le=5_000_000)
    retention: RetentionSettings = RetentionSettings()
    memory_limit_mb: int | None = Field(default=None, ge=64, le=1_048_576)


TimeFormat = Literal[
    "timestamp", "date", "epoch_seconds", "epoch_milliseconds", "yyyymmdd", "row_order"
]


class DerivedEntities(BaseModel):
    """An entity table derived from an event table (``[sources.entities]``).

    Attributes:
        table: the entity table to create (``<id_column>, first_event_at``).
        id_column: the event table's column holding the entity id.
        time_column: the event table's time column.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    id_column: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    time_column: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class SourceSettings(BaseModel):
    """A ``[[sources]]`` entry: a CSV or Parquet file imported into a store table.

    Column names that are not plain identifiers are cleaned on import (``Lead Origin`` becomes
    ``Lead_Origin``), so predictions can name them.

    Attributes:
        path: the file (relative to the config file).
        table: the store table it is imported into (replaced on each import).
        id_column: a column that must hold unique, non-empty values.
        delimiter: CSV delimiter (default: detected).
        null_values: CSV strings that mean "missing" (e.g. ``"Select"``).
        row_id: add a column of this name numbering the rows 1..n, for files without an id.
        as_of: how recent the export is (its data is complete up to then); default: the newest
            date or timestamp in the data (the file's modification time when it has none).
            Label windows ending later are not used.
        time_formats: how time columns are written, converted to timestamps on import:
            ``timestamp``, ``date``, ``epoch_seconds``, ``epoch_milliseconds``, ``yyyymmdd``
            (an integer such as 20240131) or ``row_order`` (an integer that only orders rows).
        entities: also derive an entity table from this event table: one row per
            ``id_column`` value with its first event time (``first_event_at``).
        allow_empty: a file without rows may empty the table (refused by default, so that a
            truncated export does not wipe the data).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path
    table: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    id_column: str | None = None
    delimiter: str | None = Field(None, min_length=1, max_length=10)
    null_values: list[str] = Field(default_factory=list)
    row_id: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    as_of: datetime | None = None
    time_formats: dict[str, TimeFormat] = Field(default_factory=dict)
    entities: DerivedEntities | None = None
    allow_empty: bool = False

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str | None) -> str | None:
        if value is not None and len(value) != 1 and value != "whitespace":
            raise ValueError('give one character, or "whitespace" (runs of spaces or tabs)')
        return value


class SalesforceOutput(_TargetOptions):
    """Where a prediction's results are written in Salesforce (``[predictions.salesforce]``).

    Attributes:
        object: the object whose records are the scored entities (``Lead``, ``Contact``, any
            object with an id or an external id).
        fields: output -> field API name, e.g. ``{score = "Lead_Score__c", tier = "Lead_Tier__c"}``.
        mode: ``update`` records by ``Id`` (the entity id), or ``upsert`` them by
            ``external_id_field`` (records missing in Salesforce are created).
        external_id_field: the upsert key: an external id (or idLookup) field of the object; the
            entity's field of the same name in the store gives each record's key.
    """

    object: str = Field("Lead", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    fields: dict[OutputKind, str] = Field(min_length=1)
    mode: Literal["update", "upsert"] = "update"
    external_id_field: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="after")
    def _mode(self) -> SalesforceOutput:
        if self.mode == "upsert" and not self.external_id_field:
            raise ValueError('mode = "upsert" needs external_id_field (e.g. "Email")')
        if self.mode == "update" and self.external_id_field:
            raise ValueError('external_id_field applies to mode = "upsert" only')
        return self

    @field_validator("fields")
    @classmethod
    def _field_names(cls, value: dict[str, str]) -> dict[str, str]:
        for kind, name in value.items():
            if not name.replace("_", "").isalnum():
                raise ValueError(f"{kind}: '{name}' is not a field API name")
        return value


SegmentOutputKind = OutputKind


class SegmentOutput(_TargetOptions):
    """Where a prediction's results go in Segment (``[predictions.segment]``): profile traits.

    Attributes:
        traits: output -> trait name, e.g. ``{ score = "lead_score", tier = "lead_tier" }``.
        unmatched: records whose person has no Segment profile with a user or anonymous id
            (a profile without a user id is addressed by one of its anonymous ids) are
            ``skip``-ped (counted), or identified by their ``record_id`` (which creates
            profiles keyed by the CRM id).
    """

    traits: dict[SegmentOutputKind, str] = Field(min_length=1)
    unmatched: Literal["skip", "record_id"] = "skip"

    @field_validator("traits")
    @classmethod
    def _trait_names(cls, value: dict[str, str]) -> dict[str, str]:
        for kind, name in value.items():
            if not name or len(name) > 100 or any(not c.isprintable() for c in name):
                raise ValueError(f"{kind}: '{name}' is not a usable Segment trait name")
        if len(set(value.values())) != len(value):
            raise ValueError("two outputs are written to the same trait")
        return value


class PredictionConfig(PredictionSpec):
    """A ``[[predictions]]`` entry: the ML spec plus where its results go."""

    salesforce: SalesforceOutput | None = None
    segment: SegmentOutput | None = None

    @model_validator(mode="after")
    def _outputs_fit_the_task(self) -> PredictionConfig:
        for where, outputs in (
            ("salesforce.fields", self.salesforce.fields if self.salesforce else {}),
            ("segment.traits", self.segment.traits if self.segment else {}),
        ):
            wrong = sorted(set(outputs) & TASK_OUTPUTS[self.task])
            if wrong:
                raise ValueError(
                    f"{where}: {', '.join(wrong)}: not an output of a {self.task} prediction"
                )
            if ({"score_change", "trend"} & set(outputs)) and "score" not in outputs:
                raise ValueError(
                    f"{where}: score_change and trend are measured against the last written "
                    "score: map score too"
                )
        return self


class WritebackSettings(BaseModel):
    """The ``[writeback]`` section: retries of rejected writes, dead letters and plans.

    Attributes:
        max_attempts: a ledger row rejected this many times becomes a dead letter: listed by
            ``leadscore status``, not sent again until ``leadscore retry --dead``.
        retry_backoff_seconds: a rejected row waits this long before a push sends it again,
            doubled after each further rejection.
        max_backoff_seconds: the longest wait between two attempts.
        trend_threshold: score points (0-100) a score must rise or fall by, against the last
            written score, for ``trend`` to say rising or falling rather than steady.
        plan_sample: changes shown per target by ``leadscore plan`` (before -> after).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(5, ge=1, le=100)
    retry_backoff_seconds: float = Field(600.0, ge=0)
    max_backoff_seconds: float = Field(86_400.0, ge=0)
    trend_threshold: int = Field(5, ge=0, le=100)
    plan_sample: int = Field(5, ge=0, le=1000)


class AudienceSalesforce(BaseModel):
    """Where an audience goes in Salesforce: a Campaign whose members mirror the audience.

    Attributes:
        campaign_id: the Campaign (``701...``). Members are added when they enter the audience
            and removed when they leave it; members added by hand are removed too (mirror).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    campaign_id: str = Field(pattern=r"^701[0-9A-Za-z]{12}(?:[0-9A-Za-z]{3})?$")


class AudienceSegment(BaseModel):
    """Where an audience goes in Segment.

    Attributes:
        trait: a boolean trait set to true on entry and false on exit (optional).
        unmatched: records without a Segment user or anonymous id are ``skip``-ped (counted
            apart from those entering and leaving), or identified by their ``record_id``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    trait: str | None = Field(None, min_length=1, max_length=100)
    unmatched: Literal["skip", "record_id"] = "skip"


class AudienceConfig(BaseModel):
    """An ``[[audiences]]`` entry: a named SQL condition over a prediction's latest scores.

    Attributes:
        name: identifier (the Segment ``properties.audience`` and the ledger's field).
        prediction: the prediction whose scores it reads.
        where: a SQL boolean expression over the score columns (``probability, score, tier,
            percentile, predicted_class, predicted_value, model_version, scored_at``),
            ``created_at`` and the entity's fields, e.g. ``tier = 'A' AND created_at >=
            scored_at - INTERVAL 7 DAY``.
        salesforce: the Campaign it mirrors.
        segment: its Segment events (``Audience Entered`` / ``Audience Exited``) and trait.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    prediction: str
    where: str = Field(min_length=1, max_length=4000)
    salesforce: AudienceSalesforce | None = None
    segment: AudienceSegment | None = None

    @field_validator("where")
    @classmethod
    def _expression(cls, value: str) -> str:
        try:
            validate_expression(value)
        except AudienceError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _somewhere(self) -> AudienceConfig:
        if self.salesforce is None and self.segment is None:
            raise ValueError("an audience needs a salesforce or a segment target (or both)")
        return self


# -- operations: [schedule], [serve], [alerts], [monitor] ------------------------------------------


_EVERY = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _cron_day_of_week(field: str) -> str:
    """Translate a crontab day-of-week field to APScheduler's names.

    Standard cron counts 0 (and 7) as Sunday; APScheduler 3's ``from_crontab`` counts 0 as Monday,
    so ``1-5`` would silently mean Tuesday to Saturday. Expanding the field to day names keeps the
    crontab meaning (https://github.com/agronholm/apscheduler/issues/286).
    """
    if field == "*":
        return field
    days: set[int] = set()
    number = {name: i for i, name in enumerate(_DOW_NAMES)}
    for part in field.lower().split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() else None
        if step_text and step is None:
            raise ValueError(f"bad step in day of week '{part}'")
        if base == "*":
            first, last = 0, 6
        else:
            lo, _, hi = base.partition("-")
            try:
                first = int(lo) if lo.isdigit() else number[lo[:3]]
                last = (int(hi) if hi.isdigit() else number[hi[:3]]) if hi else first
            except KeyError:
                raise ValueError(f"unknown day of week '{part}'") from None
            if not (0 <= first <= 7 and 0 <= last <= 7) or first > last:
                raise ValueError(f"day of week '{part}' is out of range 0-7")
            if step and not hi:
                last = 6
        days |= {d % 7 for d in range(first, last + 1, step or 1)}
    return ",".join(_DOW_NAMES[d] for d in sorted(days))


def cron_trigger(expression: str, timezone: ZoneInfo) -> CronTrigger:
    """Build a trigger from a five-field crontab expression with standard cron meaning.

    Args:
        expression: ``minute hour day month day-of-week`` (``*/15 * * * *``, ``0 3 * * 1-5``).
        timezone: the zone the expression is read in.

    Returns:
        The trigger.

    Raises:
        ValueError: the expression is not valid (the message says which field and why).
    """
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"needs 5 fields (minute hour day month day-of-week), got {len(fields)}")
    minute, hour, day, month, dow = fields
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=_cron_day_of_week(dow),
        timezone=timezone,
    )


class JobSchedule(BaseModel):
    """When one job runs: a cron expression or a fixed interval (``[schedule]`` entries).

    Attributes:
        cron: five-field crontab expression read in ``schedule.timezone``
            (``"*/15 * * * *"``, ``"0 3 * * sun"``); day 0 and 7 are Sunday, as in crontab.
        every: a fixed interval: a number and a unit, ``s``, ``m``, ``h`` or ``d`` (``"15m"``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: str | None = None
    every: str | None = None

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            cron_trigger(value, ZoneInfo("UTC"))  # validity does not depend on the zone
        except ValueError as exc:
            raise ValueError(f"not a valid cron expression: {exc}") from None
        return value

    @field_validator("every")
    @classmethod
    def _check_every(cls, value: str | None) -> str | None:
        if value is None:
            return value
        match = _EVERY.match(value)
        if not match or int(match.group(1)) == 0:
            raise ValueError("not an interval; write a number and a unit s, m, h or d, e.g. '15m'")
        return value

    @model_validator(mode="after")
    def _one_of(self) -> JobSchedule:
        if (self.cron is None) == (self.every is None):
            raise ValueError('give exactly one of cron = "..." or every = "..."')
        return self

    @property
    def interval_seconds(self) -> int | None:
        """The interval in seconds, or None for a cron schedule."""
        if self.every is None:
            return None
        match = _EVERY.match(self.every)
        assert match is not None
        return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]

    def describe(self) -> str:
        """A short human description (``every 15m``, ``cron */15 * * * *``)."""
        return f"every {self.every.strip()}" if self.every else f"cron {self.cron}"


class ScheduleSettings(BaseModel):
    """The ``[schedule]`` section: when ``leadscore serve`` runs each job.

    Attributes:
        timezone: IANA time zone cron expressions are read in (``Europe/Paris``).
        misfire_grace_seconds: a run that could not start within this many seconds of its time (the
            machine slept, the previous run was still going) is skipped and reported as missed;
            overdue runs are coalesced into one.
        lock_wait_seconds: how long a job waits for another run on the same store to finish before
            it gives up with a clear message (scheduled runs are recorded as skipped).
        pull: schedule of the ``pull`` job.
        score: schedule of the ``score`` job.
        push: schedule of the ``push`` job.
        sync: schedule of ``sync`` (pull, score, push; trains first when no model exists).
        train: schedule of ``train`` (retrain; the new model becomes champion).
        monitor: schedule of ``monitor`` (drift and realized performance).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str = "UTC"
    misfire_grace_seconds: int = Field(600, ge=1, le=86400)
    lock_wait_seconds: float = Field(120.0, ge=0, le=86400)
    pull: JobSchedule | None = None
    score: JobSchedule | None = None
    push: JobSchedule | None = None
    sync: JobSchedule | None = None
    train: JobSchedule | None = None
    monitor: JobSchedule | None = None
    vacuum: JobSchedule | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_jobs(cls, data: Any) -> Any:
        if isinstance(data, dict):
            options = {"timezone", "misfire_grace_seconds", "lock_wait_seconds"}
            for key in data:
                if key not in options and key not in JOB_NAMES:
                    close = difflib.get_close_matches(str(key), [*JOB_NAMES, *options], n=1)
                    raise ValueError(
                        f"'{key}' is not a job"
                        + (f" (did you mean '{close[0]}'?)" if close else "")
                        + f"; jobs are {', '.join(JOB_NAMES)}"
                    )
        return data

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            close = difflib.get_close_matches(value, sorted(available_timezones()), n=1)
            raise ValueError(
                "unknown time zone"
                + (f" (did you mean '{close[0]}'?)" if close else "")
                + "; use an IANA name such as 'UTC' or 'Europe/Paris'"
            ) from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The configured time zone."""
        return ZoneInfo(self.timezone)

    def jobs(self) -> dict[str, JobSchedule]:
        """The scheduled jobs, in pipeline order.

        Returns:
            Job name -> its schedule, for the jobs that have one.
        """
        return {n: getattr(self, n) for n in JOB_NAMES if getattr(self, n) is not None}

    def trigger(self, job: str) -> BaseTrigger:
        """The APScheduler trigger of a scheduled job.

        Args:
            job: job name.

        Returns:
            A cron or interval trigger in the configured time zone.
        """
        entry = self.jobs()[job]
        if entry.cron is not None:
            return cron_trigger(entry.cron, self.zone)
        return IntervalTrigger(seconds=entry.interval_seconds or 0, timezone=self.zone)


class ServeSettings(BaseModel):
    """The ``[serve]`` section: how ``leadscore serve`` runs.

    Attributes:
        health_port: port of the ``/healthz`` and ``/metrics`` endpoint; None disables it.
        health_host: address the endpoint binds to (loopback by default: put a reverse proxy in
            front rather than exposing it).
        stop_timeout_seconds: after SIGTERM/SIGINT, how long the running job may take to reach its
            next checkpoint (page or batch) before the process exits anyway.
        log_format: ``text`` for people, ``json`` for log shippers (one object per line).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    health_port: int | None = Field(None, ge=0, le=65535)
    health_host: str = "127.0.0.1"
    stop_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    log_format: Literal["text", "json"] = "text"


class FreshSettings(BaseModel):
    """The ``[fresh]`` section: speed to lead (the ``fresh`` job and ``POST /v1/score``).

    Attributes:
        every: how often ``serve`` runs a fresh cycle (``"30s"``), on its own thread beside the
            ``[schedule]`` jobs; leave the section out to run no fresh cycles.
        trigger: how a cycle learns which leads changed: ``poll`` (SOQL on SystemModstamp of
            Lead, Task and CampaignMember since the job's own cursor) or ``cdc`` (change events).
        max_wait_seconds: how long a cycle waits for the store when a sync or train holds it;
            long jobs lend the store to a waiting cycle at their next checkpoint, so the wait
            stays short (the cycle is skipped, and retried next time, beyond this).
        max_leads: leads one cycle scores at most (the rest wait for the next cycle).
        api_token: bearer token ``POST /v1/score`` requires (secret: ``secrets.toml`` or
            ``LEADSCORE_FRESH__API_TOKEN``); without one the endpoint answers 503.
        max_body_bytes: larger request bodies get a 413 without being read.
        max_records: records one request may score.
        cdc_window_seconds: ``trigger = "cdc"``: after an event arrives, wait this long for more
            before handing them to the job as one batch: one score write (sObject Collections
            call) per window, so about 3,600 / (window + a cycle) calls an hour under a steady
            stream, at up to this much added latency; 0 takes only what already arrived.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    every: str = "30s"
    trigger: Literal["poll", "cdc"] = "poll"
    max_wait_seconds: float = Field(10.0, ge=0, le=600)
    max_leads: int = Field(2000, ge=1, le=100_000)
    api_token: SecretStr | None = None
    max_body_bytes: int = Field(1_000_000, ge=1024, le=100_000_000)
    max_records: int = Field(5000, ge=1, le=100_000)
    cdc_window_seconds: float = Field(2.0, ge=0, le=60)

    @field_validator("every")
    @classmethod
    def _check_every(cls, value: str) -> str:
        # the same interval syntax as [schedule]
        match = _EVERY.match(value)
        if not match or int(match.group(1)) == 0:
            raise ValueError("not an interval; write a number and a unit s, m, h or d, e.g. '30s'")
        return value

    @property
    def interval_seconds(self) -> int:
        """The cycle interval in seconds."""
        match = _EVERY.match(self.every)
        assert match is not None
        return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


class AlertSettings(BaseModel):
    """The ``[alerts]`` section: where alerts go and when a partial run is worth one.

    Attributes:
        webhook_url: Slack-compatible incoming webhook (secret: it embeds a token).
        email_to: recipients of alert emails.
        email_from: sender address.
        smtp_host: SMTP server.
        smtp_port: SMTP port.
        smtp_security: ``starttls``, ``ssl`` (implicit TLS) or ``none`` (local relays only).
        smtp_username: SMTP login, if the server needs one.
        smtp_password: SMTP password (secret).
        timeout_seconds: per delivery attempt.
        webhook_attempts: attempts per webhook delivery when it fails transiently (a lost alert
            is worse than a rare duplicate, but a dead webhook must not stall the job).
        webhook_max_backoff_seconds: the longest wait between two attempts.
        max_rejected_share: a partial run alerts when more than this share of the records it sent
            was rejected.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    webhook_url: SecretStr | None = None
    email_to: list[str] = Field(default_factory=list)
    email_from: str | None = None
    smtp_host: str | None = None
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_security: Literal["starttls", "ssl", "none"] = "starttls"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    timeout_seconds: float = Field(10.0, gt=0, le=120)
    webhook_attempts: int = Field(2, ge=1, le=10)
    webhook_max_backoff_seconds: float = Field(2.0, ge=0, le=60)
    max_rejected_share: float = Field(0.01, ge=0, le=1)

    @model_validator(mode="after")
    def _email_complete(self) -> AlertSettings:
        if self.email_to and (not self.smtp_host or not self.email_from):
            raise ValueError("email_to needs smtp_host and email_from")
        return self

    @property
    def enabled(self) -> bool:
        """Whether any channel is configured."""
        return self.webhook_url is not None or bool(self.email_to)


class MonitorSettings(BaseModel):
    """The ``[monitor]`` section: drift thresholds.

    Attributes:
        psi_warn: population stability index from which a feature or the score is flagged.
        psi_alert: PSI from which drift raises an alert (0.25 is the usual "significant shift").
        min_top_tier_lift: an alert fires when the top tier's realized conversion falls below
            this many times the average lead's (``leadscore impact``); None: no alert.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    psi_warn: float = Field(0.1, gt=0)
    psi_alert: float = Field(0.25, gt=0)
    min_top_tier_lift: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> MonitorSettings:
        if self.psi_warn > self.psi_alert:
            raise ValueError("psi_warn must not exceed psi_alert")
        return self


class Settings(BaseModel):
    """The whole configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: StoreSettings = Field(default_factory=StoreSettings)
    salesforce: SalesforceSettings | None = None
    segment: SegmentSettings | None = None
    traits: list[TraitSpec] = Field(default_factory=list)
    sources: list[SourceSettings] = Field(default_factory=list)
    predictions: list[PredictionConfig] = Field(min_length=1)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    fresh: FreshSettings | None = None
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    writeback: WritebackSettings = Field(default_factory=WritebackSettings)
    audiences: list[AudienceConfig] = Field(default_factory=list)
    _path: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _audience_targets(self) -> Settings:
        names = [a.name for a in self.audiences]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"audience names must be unique; repeated: {', '.join(repeated)}")
        predictions = {p.name: p for p in self.predictions}
        streams = {
            k.lower(): v for k, v in (self.salesforce.streams if self.salesforce else {}).items()
        }
        for index, audience in enumerate(self.audiences):
            where = f"audiences[{index}]"
            spec = predictions.get(audience.prediction)
            if spec is None:
                close = difflib.get_close_matches(audience.prediction, list(predictions), n=1)
                raise ValueError(
                    f"{where}.prediction: no prediction named '{audience.prediction}'"
                    + (f" (did you mean '{close[0]}'?)" if close else "")
                )
            if audience.salesforce is not None and self.salesforce is None:
                raise ValueError(f"{where}.salesforce needs the [salesforce] section")
            if audience.segment is not None and self.segment is None:
                raise ValueError(f"{where}.segment needs the [segment] section")
            # Leads' columns are known from the Lead stream; other entities' from the store, when
            # the audience is evaluated.
            lead = streams.get("lead")
            if spec.entity == "lead" and spec.entity_table is None and lead is not None:
                fields = [*lead.fields, "Id", "CreatedDate", "SystemModstamp", "IsDeleted"]
                try:
                    validate_expression(audience.where, audience_columns(fields))
                except AudienceError as exc:
                    raise ValueError(f"{where}.where: {exc}") from None
        return self

    @field_validator("traits")
    @classmethod
    def _unique_traits(cls, value: list[TraitSpec]) -> list[TraitSpec]:
        names = [t.name for t in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"trait names must be unique; repeated: {', '.join(duplicates)}")
        return value

    @model_validator(mode="after")
    def _prediction_traits(self) -> Settings:
        known = [t.name for t in self.traits]
        for index, p in enumerate(self.predictions):
            for name in p.features.traits or []:
                if name not in known:
                    close = difflib.get_close_matches(name, known, n=1)
                    raise ValueError(
                        f"predictions[{index}].features.traits: no [[traits]] entry named "
                        f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else "")
                    )
        return self

    @model_validator(mode="after")
    def _segment_section(self) -> Settings:
        for index, p in enumerate(self.predictions):
            if p.segment is not None and self.segment is None:
                raise ValueError(
                    f"predictions[{index}].segment writes to Segment, but there is no [segment] "
                    "section"
                )
        return self

    @field_validator("predictions")
    @classmethod
    def _unique_names(cls, value: list[PredictionConfig]) -> list[PredictionConfig]:
        names = [p.name for p in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"prediction names must be unique; repeated: {', '.join(duplicates)}")
        return value

    @property
    def path(self) -> Path | None:
        """The config file these settings were loaded from."""
        return self._path

    def prediction(self, name: str) -> PredictionConfig:
        """Look a prediction up by name.

        Args:
            name: prediction name.

        Returns:
            Its config.

        Raises:
            ConfigError: no prediction has that name.
        """
        for p in self.predictions:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.predictions)
        raise ConfigError(f"no prediction named '{name}'", hint=f"configured predictions: {known}")


# Paths that are resolved relative to the config file.
# (Store paths are resolved after validation, so that their defaults are relative to the file too.)
_PATH_KEYS: tuple[tuple[str, str], ...] = (
    ("salesforce", "ca_bundle"),
    ("salesforce", "private_key_file"),
    ("segment", "ca_bundle"),
)


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return any(a is SecretStr for a in typing.get_args(annotation))
    return False


def secret_keys() -> list[tuple[str, str]]:
    """The (section, key) pairs that are secrets, discovered from the settings models.

    Returns:
        E.g. ``[("salesforce", "client_id"), ("salesforce", "client_secret")]``.
    """
    keys = []
    for section, info in Settings.model_fields.items():
        model = _inner_model(info.annotation)  # also optional sections (``Model | None``)
        if model is not None:
            keys += [
                (section, k) for k, f in model.model_fields.items() if _is_secret(f.annotation)
            ]
    return keys


# Written by `leadscore sandbox` beside the config it generates: generating, serving or stopped.
SANDBOX_STATE_FILE = "sandbox.state"


def sandbox_state(directory: Path) -> str | None:
    """What the sandbox whose files are in ``directory`` is doing, if a sandbox wrote them.

    Args:
        directory: a config file's directory.

    Returns:
        ``generating`` or ``serving`` while its process runs, ``not running`` once it stopped or
        died, None when no sandbox wrote there.
    """
    try:
        data = json.loads((directory / SANDBOX_STATE_FILE).read_text())
        state, pid = str(data["state"]), int(data["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if state == "stopped":
        return "not running"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "not running"
    except PermissionError:
        pass  # another user's live process
    return state


def _sandbox_problem(path: Path) -> ConfigError | None:
    """A clear error when the config belongs to a sandbox that is not serving (yet)."""
    state = sandbox_state(path.parent)
    if state == "generating":
        return ConfigError(
            f"{path}: not written yet: the sandbox in {path.parent} is still generating its org "
            "(waiting)",
            hint="it writes the config when it serves; run again once it prints 'serving'",
        )
    if state == "not running":
        return ConfigError(
            f"{path}: the sandbox in {path.parent} is not running",
            hint=f"start it again: leadscore sandbox --workdir {path.parent}",
        )
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}: not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} "
            f"(line {line}) is not valid UTF-8",
            hint="save the file as UTF-8 (TOML files must be UTF-8)",
        ) from None
    except FileNotFoundError:
        raise _sandbox_problem(path) or ConfigError(
            f"{path}: file not found", hint="pass --config PATH, or start from config.example.toml"
        ) from None
    except (PermissionError, IsADirectoryError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(
            f"{path}: cannot read the file ({reason})", hint="check the path and permissions"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path}: invalid TOML: {exc}", hint="fix the syntax at that line"
        ) from None
    except RecursionError:
        raise ConfigError(
            f"{path}: invalid TOML: a value is nested too deeply (arrays or tables inside each "
            "other hundreds of levels deep)",
            hint="no leadscore setting nests more than a few levels; fix that value",
        ) from None


def _env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section.upper()}__{key.upper()}"


def _format_location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The settings model that owns the key at ``loc`` (for did-you-mean suggestions)."""
    annotation: Any = Settings
    for part in loc[:-1]:
        model = _inner_model(annotation)
        if model is not None and isinstance(part, str) and part in model.model_fields:
            annotation = model.model_fields[part].annotation
            continue
        # a list index or a dict key: step into the container's element type
        args = typing.get_args(annotation)
        if not args:
            return None
        annotation = args[-1]
    return _inner_model(annotation)


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside an annotation (``Model``, ``Model | None``), if it is one."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


# A table with at most this many keys lists them when an unknown key resembles none of them.
UNKNOWN_KEY_LIST_MAX = 12


def _describe_error(error: dict[str, Any], *, hide_value: bool = False) -> str:
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        model = _model_at(loc)
        names = list(model.model_fields) if model else []
        close = difflib.get_close_matches(str(loc[-1]), names, n=1)
        if close:
            return f"unknown key (did you mean '{close[0]}'?)"
        if 0 < len(names) <= UNKNOWN_KEY_LIST_MAX:
            return "unknown key (keys here: " + ", ".join(names) + ")"
        return "unknown key"
    if kind == "path_type":
        return f"must be a path string (got {error.get('input')!r})"
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    if hide_value:  # a secret is never echoed, not even a malformed one
        return message
    if isinstance(value, str | int | float | bool) and len(repr(value)) <= 60:
        message += f" (got {value!r})"
    return message


def load_settings(path: str | Path, *, environ: dict[str, str] | None = None) -> Settings:
    """Load and validate the configuration.

    The steps: read the file and refuse secrets in it; merge secrets from the environment and
    ``secrets.toml``; resolve relative paths against the file's directory; validate; resolve the
    store's paths.

    Args:
        path: the config file.
        environ: environment variables (default: ``os.environ``).

    Returns:
        The settings.

    Raises:
        ConfigError: unreadable file, invalid TOML, unknown or missing key, wrong type, misplaced
            secret.
    """
    path = Path(path)
    env = dict(os.environ if environ is None else environ)
    raw = _read_config_file(path)
    if (problem := _sandbox_problem(path)) is not None:
        raise problem  # its URL would only answer "could not be reached"
    secrets_path = Path(env.get(f"{ENV_PREFIX}SECRETS_FILE") or path.parent / SECRETS_FILE)
    from_file = _read_secrets_file(secrets_path, path)
    _merge_secrets(raw, env, from_file)
    _resolve_paths(raw, path.parent)
    _check_before_validation(raw, path)
    settings = _validate(raw, path, secrets_path, from_file)
    return _with_store_paths(settings, path)


def _read_config_file(path: Path) -> dict[str, Any]:
    """The config file's TOML; a secret in it is an error (secrets live elsewhere)."""
    raw = _read_toml(path)
    for section, key in secret_keys():
        if key in (raw.get(section) or {}):
            raise ConfigError(
                f"{path}: {section}.{key}: secrets must not be in the config file",
                hint=f"move it to {SECRETS_FILE} or set {_env_name(section, key)}",
            )
    return raw


def _read_secrets_file(secrets_path: Path, path: Path) -> dict[str, Any]:
    """``secrets.toml`` (if present); any key that is not a secret setting is an error."""
    secrets = set(secret_keys())
    from_file: dict[str, Any] = _read_toml(secrets_path) if secrets_path.is_file() else {}
    for section, values in from_file.items():
        for key in values if isinstance(values, dict) else [None]:
            if (section, key) not in secrets:
                allowed = ", ".join(f"{s}.{k}" for s, k in sorted(secrets))
                raise ConfigError(
                    f"{secrets_path}: {section}{'.' + key if key else ''}: not a secret setting",
                    hint=f"{SECRETS_FILE} may only hold {allowed}; "
                    f"other keys belong in {path.name}",
                )
    return from_file


def _merge_secrets(raw: dict[str, Any], env: dict[str, str], from_file: dict[str, Any]) -> None:
    """Put each secret into its section: the environment wins over ``secrets.toml``."""
    for section, key in secret_keys():
        field = Settings.model_fields[section]
        if section not in raw and not field.is_required() and field.default is None:
            # A secret alone does not switch on a section that is off unless configured
            # ([segment]); sections that always exist with defaults ([alerts]) take their secrets.
            continue
        value = env.get(_env_name(section, key)) or (from_file.get(section) or {}).get(key)
        if value is not None and isinstance(raw.get(section, {}), dict):
            raw.setdefault(section, {})[key] = value


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    """Make the file paths of ``[[sources]]`` and of path keys relative to the config file."""
    for source in raw.get("sources") or []:
        if isinstance(source, dict) and isinstance(source.get("path"), str) and source["path"]:
            candidate = Path(source["path"]).expanduser()
            source["path"] = str(candidate if candidate.is_absolute() else base / candidate)
    for section, key in _PATH_KEYS:
        block = raw.get(section)
        if isinstance(block, dict) and isinstance(block.get(key), str) and block[key]:
            candidate = Path(block[key]).expanduser()
            block[key] = str(candidate if candidate.is_absolute() else base / candidate)
        elif isinstance(block, dict) and block.get(key) == "":
            block[key] = None


_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _number_type(annotation: Any) -> str | None:
    """``a number`` / ``true or false`` when a field takes only numbers or booleans."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    kinds = set(args) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else None
    kinds = kinds or {annotation}
    if kinds <= {int, float}:
        return "a number"
    if kinds == {bool}:
        return "true or false"
    return None


def _strict_scalars(model: type[BaseModel], data: Any, loc: str, path: Path) -> None:
    """Refuse a quoted number or boolean (``page_size = "2000"``): pydantic would convert it.

    The value was very likely meant as something else (a string where the file's author thought
    a number was wanted, or a number in quotes by habit); either way the file says one thing and
    leadscore would do another.
    """
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            continue
        where = f"{loc}.{key}" if loc else key
        wanted = _number_type(field.annotation)
        if wanted and isinstance(value, str) and _coercible(value, wanted):
            bare = value.strip() if wanted == "a number" else value.strip().lower()
            raise ConfigError(
                f"{path}: {where}: must be {wanted}, not the string {value!r}",
                hint=f"write {key} = {bare} without quotes",
            )
        for inner in _models_in(field.annotation):
            if isinstance(value, dict) and typing.get_origin(field.annotation) is dict:
                for name, item in value.items():
                    _strict_scalars(inner, item, f"{where}.{name}", path)
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    _strict_scalars(inner, item, f"{where}[{i}]", path)
            else:
                _strict_scalars(inner, value, where, path)


def _coercible(value: str, wanted: str) -> bool:
    """Whether pydantic would silently turn this string into the number or boolean."""
    if wanted == "true or false":
        return value.strip().lower() in {"true", "false", "yes", "no", "on", "off", "1", "0"}
    try:
        float(value)
    except ValueError:
        return False  # not a number at all: pydantic's own message says so
    return True


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models in an annotation (``X``, ``X | None``, ``list[X]``, ``dict[str, X]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _check_before_validation(raw: dict[str, Any], path: Path) -> None:
    """Checks that must name the file and key before anything connects anywhere.

    Quoted numbers (pydantic would accept them), Salesforce object and cursor field names that
    are not identifiers (they would be reported only after a login, by the API), and certificate
    and key files that do not exist (they would surface as an unexpected error of the HTTP client).
    """
    _strict_scalars(Settings, raw, "", path)
    salesforce = raw.get("salesforce")
    streams = salesforce.get("streams") if isinstance(salesforce, dict) else None
    for name, stream in (streams or {}).items() if isinstance(streams, dict) else ():
        if not _IDENTIFIER.match(name):
            raise ConfigError(
                f"{path}: salesforce.streams.{name!r}: not a Salesforce object API name",
                hint="use the object's API name, e.g. [salesforce.streams.Lead] or "
                "[salesforce.streams.My_Object__c]",
            )
        cursor = stream.get("cursor_field") if isinstance(stream, dict) else None
        if isinstance(cursor, str) and not _IDENTIFIER.match(cursor):
            raise ConfigError(
                f"{path}: salesforce.streams.{name}.cursor_field: {cursor!r} is not a field API "
                "name",
                hint="use a datetime field's API name such as SystemModstamp (the default)",
            )
    for section, key in _PATH_KEYS:
        block = raw.get(section)
        value = block.get(key) if isinstance(block, dict) else None
        if isinstance(value, str) and value and not Path(value).is_file():
            raise ConfigError(
                f"{path}: {section}.{key}: file {value} does not exist",
                hint=f"fix the path (relative paths start at {path.parent.resolve()}) or leave "
                f"{section}.{key} out",
            )


def _validate(
    raw: dict[str, Any], path: Path, secrets_path: Path, from_file: dict[str, Any]
) -> Settings:
    """Validate the merged settings; the first problem becomes one line naming file and key."""
    secrets = set(secret_keys())
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        # A misspelt key shows up both as "unknown" and as "missing": name the typo first.
        errors = sorted(
            exc.errors(), key=lambda e: {"extra_forbidden": 0, "missing": 1}.get(e["type"], 2)
        )
        first = errors[0]
        loc = tuple(first["loc"])
        origin = path
        if len(loc) >= 2 and (str(loc[0]), str(loc[1])) in secrets:
            origin = secrets_path if (from_file.get(str(loc[0])) or {}).get(str(loc[1])) else path
        more = len(errors) - 1
        secret = len(loc) >= 2 and (str(loc[0]), str(loc[-1])) in secrets
        raise ConfigError(
            f"{origin}: {_format_location(loc)}: {_describe_error(first, hide_value=secret)}",
            hint=(f"{more} more problem(s) after this one; " if more else "")
            + "see config.example.toml for every key",
        ) from None


def _with_store_paths(settings: Settings, path: Path) -> Settings:
    """The settings with the store's paths resolved against the config file's directory."""
    store = settings.store
    resolved = {
        name: value if value.is_absolute() else path.parent / value.expanduser()
        for name, value in (("path", store.path), ("models_dir", store.models_dir))
    }
    settings = settings.model_copy(update={"store": store.model_copy(update=resolved)})
    settings._path = path
    return settings
