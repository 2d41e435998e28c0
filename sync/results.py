"""Typed results of the jobs: one dataclass per job, read from and written to the same JSON.

A job records its outcome in :attr:`sync.run.JobResult.counts` (the dict the run log stores);
:attr:`sync.run.JobResult.summary` reads it as the job's type below, which the CLI renders
(:mod:`sync.render`) and ``--json`` prints (:meth:`Summary.to_json`). A key a type does not know
is kept in ``extra`` and written back unchanged, so a job that adds a count (or a job without a
type here) still reaches the run log and ``--json`` as it did; the CLI renders a job without a
type with its generic renderer.

To give a new job a type: a dataclass deriving from :class:`Summary` with its keys as fields, in
the order the job writes them, one line in :data:`SUMMARIES`, and a renderer in
:mod:`sync.render`. The commands that are not jobs (``plan``, ``doctor``, ``status``, ``models``,
``demo``) have types here too, built with ``from_counts`` from the dict their function returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Self

# A field with this metadata is absent from the JSON when it is None (the job did not write it).
OPTIONAL = {"optional": True}


@dataclass
class Summary:
    """The typed counts of one job; ``extra`` holds the keys its type does not name."""

    extra: dict[str, Any] = field(default_factory=dict, kw_only=True)

    @classmethod
    def from_counts(cls, counts: dict[str, Any]) -> Self:
        """Read a job's counts (as recorded in the run log) as this type.

        Args:
            counts: the job's counts.

        Returns:
            The typed counts; keys without a field are kept in ``extra``.
        """
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in counts.items() if k in names}
        return cls(**known, extra={k: v for k, v in counts.items() if k not in names})

    def to_json(self) -> dict[str, Any]:
        """The JSON-serialisable counts: the fields in order, then the unknown keys."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or (value is None and f.metadata.get("optional")):
                continue
            out[f.name] = value
        return {**out, **self.extra}


@dataclass
class PullSummary(Summary):
    """``pull``: rows per Salesforce stream and their totals, and what Segment brought."""

    fetched: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    pulled: int = 0
    streams: dict[str, dict[str, Any]] = field(default_factory=dict)
    segment: dict[str, Any] | None = field(default=None, metadata=OPTIONAL)


@dataclass
class SegmentImportSummary(Summary):
    """``segment_import``: Segment export files, Profile API lookups, identity resolution."""

    imports: dict[str, Any] | None = field(default=None, metadata=OPTIONAL)
    profile_api: dict[str, Any] | None = field(default=None, metadata=OPTIONAL)
    identity: dict[str, Any] | None = field(default=None, metadata=OPTIONAL)


@dataclass
class ImportSummary(Summary):
    """``import``: rows and columns per ``[[sources]]`` table."""

    rows: int = 0
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class TrainSummary(Summary):
    """``train``: per prediction, the model, its baselines, the gate and the choice made."""

    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class ScoreSummary(Summary):
    """``score``: entities scored, and per prediction its model version and tiers."""

    scored: int = 0
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class FreshSummary(Summary):
    """``fresh``: one cycle: the leads it was told about, what it read, scored and wrote."""

    trigger: str = "poll"
    leads: int = 0
    read: dict[str, dict[str, Any]] = field(default_factory=dict)
    polled: dict[str, dict[str, Any]] | None = field(default=None, metadata=OPTIONAL)
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)


@dataclass
class PushSummary(Summary):
    """``push`` (and ``retry``): per prediction and audience, what each target confirmed."""

    written: int = 0
    failed: int = 0
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)
    campaigns: dict[str, dict[str, Any]] | None = field(default=None, metadata=OPTIONAL)
    segment: dict[str, dict[str, Any]] | None = field(default=None, metadata=OPTIONAL)
    segment_audiences: dict[str, dict[str, Any]] | None = field(default=None, metadata=OPTIONAL)
    # ``retry --dead``: ledger rows made due again before the push
    revived: int | None = field(default=None, metadata=OPTIONAL)


@dataclass
class ReportSummary(Summary):
    """``report``: the file written and the predictions in it."""

    path: str = ""
    predictions: list[str] = field(default_factory=list)


@dataclass
class SetupSummary(Summary):
    """``setup``: per output field, what was created or is a problem."""

    fields: list[dict[str, Any]] = field(default_factory=list)
    created: int = 0
    would_create: int = 0
    problems: int = 0
    org: list[dict[str, Any]] = field(default_factory=list)
    changed: int | None = field(default=None, metadata=OPTIONAL)
    dry_run: bool = False


@dataclass
class MonitorSummary(Summary):
    """``monitor``: per prediction, drift and realized performance."""

    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class SyncSummary(Summary):
    """``sync``: the headline numbers of its parts, and each part's result."""

    pulled: int = 0
    scored: int = 0
    written: int = 0
    failed: int = 0
    trained: list[str] = field(default_factory=list)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    segment_written: int | None = field(default=None, metadata=OPTIONAL)
    models: dict[str, dict[str, Any]] | None = field(default=None, metadata=OPTIONAL)


# The results of the commands that are not jobs (no run-log record): each command builds its type
# from the dict its function returns, and the CLI renders it or prints its ``to_json()``.


@dataclass
class PlanSummary(Summary):
    """``plan`` and ``push --dry-run``: per target, what a push would write, and its price."""

    targets: list[dict[str, Any]] = field(default_factory=list)
    estimated_api_calls: int = 0
    estimated_segment_requests: int = 0
    api_calls: int = 0


@dataclass
class DoctorSummary(Summary):
    """``doctor``: each check (``check, ok, detail, fix``), the problems found, the calls made."""

    ok: bool = True
    problems: int = 0
    checks: list[dict[str, Any]] = field(default_factory=list)
    api_calls: int = 0


@dataclass
class StatusSummary(Summary):
    """``status``: per job its last and next run, recent runs, dead letters, allowance, models."""

    store: str = ""
    readable: bool = True
    busy: str | None = None
    serving: str | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    dead_letters: int | None = None
    dead_letter_rows: list[dict[str, Any]] = field(default_factory=list)
    api_usage: dict[str, Any] | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)
    models: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    fresh: dict[str, Any] | None = field(default=None, metadata=OPTIONAL)


@dataclass
class ModelListSummary(Summary):
    """``models list``: prediction -> its stored versions (oldest first), the JSON's only keys."""

    predictions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def from_counts(cls, counts: dict[str, Any]) -> Self:
        """Read ``list_models``' answer (prediction -> versions)."""
        return cls(predictions=dict(counts))

    def to_json(self) -> dict[str, Any]:
        """Prediction -> versions, as ``list_models`` answers."""
        return dict(self.predictions)


@dataclass
class ModelDetailSummary(Summary):
    """``models show``: a version's metadata, printed in ``--json`` as stored (key order kept)."""

    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_counts(cls, counts: dict[str, Any]) -> Self:
        """Read ``show_model``'s answer (the version's metadata)."""
        return cls(metadata=dict(counts))

    def to_json(self) -> dict[str, Any]:
        """The metadata, as ``show_model`` answers."""
        return dict(self.metadata)


@dataclass
class PromoteSummary(Summary):
    """``models promote``: the prediction and its champion now."""

    prediction: str = ""
    champion: str = ""


@dataclass
class RollbackSummary(PromoteSummary):
    """``models rollback``: the prediction and its champion now (the previous one)."""


@dataclass
class DemoSummary(Summary):
    """``demo``: the generated org, what the pipeline did with it, model AUC against the oracle."""

    leads: int = 0
    pulled: int = 0
    scored: int = 0
    written: int = 0
    segment_written: int = 0
    failed: int = 0
    api_calls: int = 0
    model_auc: float = 0.0
    oracle_auc: float = 0.0
    auc_ratio: float = 0.0
    holdout: int = 0
    model_version: str = ""
    seconds: float = 0.0
    workdir: str = ""
    config: str = ""
    tiers: dict[str, int] = field(default_factory=dict)
    fields_written: list[str] = field(default_factory=list)
    lift: str = ""


# Job name -> its type; a job not listed keeps untyped counts (rendered generically).
@dataclass
class VacuumSummary(Summary):
    """``vacuum``: rows the retention policy deleted and the store file's size before and after."""

    score_rows_deleted: int = 0
    score_rows_kept: int = 0
    run_log_rows_deleted: int = 0
    import_rejects_deleted: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    rewritten: bool = False


SUMMARIES: dict[str, type[Summary]] = {
    "pull": PullSummary,
    "segment_import": SegmentImportSummary,
    "import": ImportSummary,
    "train": TrainSummary,
    "score": ScoreSummary,
    "fresh": FreshSummary,
    "push": PushSummary,
    "report": ReportSummary,
    "setup": SetupSummary,
    "monitor": MonitorSummary,
    "sync": SyncSummary,
    "vacuum": VacuumSummary,
}


def summarise(job: str, counts: dict[str, Any]) -> Summary | None:
    """A job's counts as its type.

    Args:
        job: job name.
        counts: its counts.

    Returns:
        The typed counts, or None for a job without a type.
    """
    kind = SUMMARIES.get(job)
    return kind.from_counts(counts) if kind is not None else None
