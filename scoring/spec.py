"""What a prediction is, as configured in ``[[predictions]]``: the ML half of the spec.

A prediction reads like a predictive query: *for each entity at its anchor time, what happens in
the window that follows?* The entity is a built-in one (``lead``: the Salesforce Lead stream) or any
table of the store (``entity_table``), e.g. one imported from CSV/Parquet with ``[[sources]]``.

``sync.config`` composes these models into the settings it loads from TOML; ``scoring`` never reads
files.
"""

from __future__ import annotations

import difflib
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
COLUMN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"

Scalar = str | int | float | bool


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ValueFilter(_Spec):
    """A condition on one column (all given bounds must hold).

    Attributes:
        column: the column (of the event's source table, or of the entity table).
        equals: the value must equal this.
        in_: the value must be one of these (TOML key ``in``).
        gt: greater than. ge: at least. lt: less than. le: at most.
    """

    column: str = Field(pattern=COLUMN)
    equals: Scalar | None = None
    in_: list[Scalar] | None = Field(None, alias="in", min_length=1)
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    @model_validator(mode="after")
    def _one_condition(self) -> ValueFilter:
        if all(getattr(self, k) is None for k in ("equals", "in_", "gt", "ge", "lt", "le")):
            raise ValueError("give a condition: equals, in, gt, ge, lt or le")
        return self


class ClassRange(_Spec):
    """A named class of a numeric value: ``{name = "SILVER", ge = 10, le = 25}``.

    Attributes:
        name: class name (written as the tier).
        gt: greater than. ge: at least. lt: less than. le: at most. Omitted bounds are open.
    """

    name: str = Field(min_length=1, max_length=40)
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None


class LabelSpec(_Spec):
    """The outcome: from events in the window after the anchor, or from a field.

    Event labels aggregate the ``event`` rows in ``[anchor, anchor + within_days)`` (optionally only
    those matching ``where``): ``exists`` (binary), ``count`` or ``sum`` of the event's value;
    a binary label is ``aggregate >= threshold``, a regression label is the aggregate itself, a
    multiclass label is the ``classes`` range it falls in.

    Field labels read a column of the entity table: binary (``positive`` values, default: true, 1,
    yes), regression (a number), multiclass (``classes`` ranges of a number, or the column's own
    values).

    Attributes:
        event: label event name.
        within_days: the window after the anchor, in days.
        where: only events whose source row matches this.
        aggregate: ``exists``, ``count`` or ``sum`` (of the event's value column).
        threshold: binary event labels: the aggregate is compared with it (default 1).
        comparison: ``>=`` (positive when the aggregate reaches the threshold) or ``<``
            (positive when it stays below: churn is "fewer than 1 order in 90 days").
        field: label column of the entity table.
        positive: binary field labels: the values that mean positive.
        classes: multiclass: named ranges of the numeric label value.
    """

    event: str | None = Field(None, pattern=IDENTIFIER)
    within_days: int = Field(30, gt=0, le=3650)
    where: ValueFilter | None = None
    aggregate: Literal["exists", "count", "sum"] = "exists"
    threshold: float | None = None
    comparison: Literal[">=", "<"] = ">="
    field: str | None = Field(None, pattern=COLUMN)
    positive: list[Scalar] | None = None
    classes: list[ClassRange] | None = Field(None, min_length=2)

    @model_validator(mode="after")
    def _event_or_field(self) -> LabelSpec:
        if (self.event is None) == (self.field is None):
            raise ValueError("give either event (a label from events) or field (a label column)")
        if self.field is not None and (self.where is not None or self.aggregate != "exists"):
            raise ValueError("where and aggregate apply to event labels only")
        if self.classes:
            names = [c.name for c in self.classes]
            if len(set(names)) != len(names):
                raise ValueError("class names must be unique")
        return self


class AnchorSpec(_Spec):
    """When an entity becomes scoreable.

    Attributes:
        event: the first occurrence of this event (``campaign_response``); default: creation.
        date: a fixed date for every entity (created before it).
        offset_days: days added to the anchor (e.g. 60 days after a customer joined).
    """

    event: str | None = Field(None, pattern=IDENTIFIER)
    date: datetime | None = None
    offset_days: int = Field(0, ge=0, le=3650)

    @model_validator(mode="after")
    def _one_kind(self) -> AnchorSpec:
        if self.event is not None and self.date is not None:
            raise ValueError("give event or date, not both")
        return self


class TrainFilter(_Spec):
    """A condition that training examples must meet (scoring still scores everyone).

    Either an event in the days after the anchor (``{event = "task_call", within_days = 1}``: only
    leads sales reached out to), or a condition on a column of the entity table
    (``{column = "joined_at", before = 2024-01-01}``), or a value condition
    (``{where = {column = "Country", in = ["US"]}}``).

    Attributes:
        event: one event name or several (any of them).
        within_days: window after the anchor for ``event``.
        column: an entity-table column.
        before: the column's time is before this.
        after: the column's time is at or after this.
        where: a value condition on ``column`` (``in``, ``equals``, ``ge``...).
    """

    event: str | list[str] | None = None
    within_days: int = Field(1, gt=0, le=3650)
    column: str | None = Field(None, pattern=COLUMN)
    before: datetime | None = None
    after: datetime | None = None
    where: ValueFilter | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> TrainFilter:
        kinds = [self.event is not None, self.column is not None, self.where is not None]
        if sum(kinds) != 1:
            raise ValueError("give one of: event (+ within_days), column (+ before/after), where")
        if self.column is not None and self.before is None and self.after is None:
            raise ValueError(f"column '{self.column}': give before and/or after")
        return self

    @property
    def events(self) -> list[str]:
        """The event names (any of them)."""
        if self.event is None:
            return []
        return [self.event] if isinstance(self.event, str) else list(self.event)


class EventSourceSpec(_Spec):
    """Events from a store table (``[[predictions.events]]``), e.g. orders of a customer.

    Attributes:
        table: the table.
        entity_column: the column holding the entity id.
        time_column: the event time.
        event: the event name.
        value_column: a numeric column summed by ``aggregate = "sum"`` labels (order value).
    """

    table: str = Field(pattern=IDENTIFIER)
    entity_column: str = Field(pattern=COLUMN)
    time_column: str = Field(pattern=COLUMN)
    event: str = Field(pattern=IDENTIFIER)
    value_column: str | None = Field(None, pattern=COLUMN)


class EntityTableSpec(_Spec):
    """Any store table as the entity (``[predictions.entity_table]``).

    Attributes:
        table: the table (e.g. imported by ``[[sources]]``).
        id_column: unique id of each row.
        time_column: creation time; without it the data has no time order (stratified split,
            no event windows).
    """

    table: str = Field(pattern=IDENTIFIER)
    id_column: str = Field(pattern=COLUMN)
    time_column: str | None = Field(None, pattern=COLUMN)


class FeatureSpec(_Spec):
    """Point-in-time features.

    Attributes:
        windows_days: engagement counts are computed over each of these windows before the anchor.
        exclude_events: events never counted as features (besides the label event).
        traits: names of the configured ``[[traits]]`` this prediction uses as features; None
            (the default) uses every one, ``[]`` none.
    """

    windows_days: list[int] = Field(default_factory=lambda: [7, 30, 90], min_length=1)
    exclude_events: list[str] = Field(default_factory=list)
    traits: list[str] | None = None

    @field_validator("windows_days")
    @classmethod
    def _positive_windows(cls, value: list[int]) -> list[int]:
        if any(w <= 0 or w > 3650 for w in value):
            raise ValueError("windows must be between 1 and 3650 days")
        return sorted(set(value))


class RuleCondition(_Spec):
    """One line of the hand-written baseline rule: points when a feature meets a condition.

    Attributes:
        feature: a feature name (``Industry``, ``task_web_visit_7d``...).
        points: points added when the condition holds (negative to subtract).
        equals: the feature equals this. in_: is one of these (TOML key ``in``).
        gt: greater than. ge: at least. lt: less than. le: at most.
    """

    feature: str = Field(min_length=1)
    points: float = 1.0
    equals: Scalar | None = None
    in_: list[Scalar] | None = Field(None, alias="in", min_length=1)
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None


class TrainingSpec(_Spec):
    """How the model is trained, tuned and evaluated.

    Attributes:
        test_fraction: newest share of examples held out for the final evaluation.
        validation_fraction: next-newest share used for early stopping and model selection.
        max_iterations: upper bound on boosting iterations (early stopping picks the number).
        learning_rate: CatBoost learning rate of the final model; by default 0.05, or 0.1 with
            more than 20,000 training rows (the settings search's subsample size).
        depth: fix the tree depth instead of searching ``depths``.
        depths: tree depths tried on the validation split.
        l2_leaf_regs: L2 regularisation strengths tried on the validation split.
        one_hot_max_sizes: categoricals with at most this many values are one-hot encoded, the
            others use ordered target statistics; the candidates are tried on validation.
        early_stopping_rounds: stop when the validation loss has not improved for this many
            iterations.
        random_seed: seed for reproducible training.
        calibration: ``auto`` chooses among none, an intercept (prior-shift) correction, Platt
            scaling and isotonic regression by log loss on the newest half of validation when
            fitted on the older half; ``intercept``, ``platt``, ``isotonic`` or ``none`` force
            one. The chosen calibrator is fitted on the most recent labelled window the model
            did not see (validation for the evaluated model, the holdout for the deployed one).
        blend: allow blending with (or falling back to) logistic regression when it wins on
            validation.
        refit: once settings, tree count, recency, calibration and blend are chosen, the model
            evaluated on the holdout (and its baselines) is trained again on training +
            validation rows: the newest history before the holdout. ``auto`` and ``always`` do
            so; ``never`` evaluates the models fitted on training rows only.
        recency: ``auto`` chooses on validation among no treatment, time-decay sample weights
            (half-lives of 1/2 and 1/4 of the training span) and a window of the newest half of
            it (time splits only); ``none`` never weights.
        deploy_fit: ``all`` (default) trains the deployed model once more on every labelled
            example, the holdout included, with the same settings, and recalibrates it on the
            holdout; ``pre_holdout`` deploys the evaluated model itself.
        min_examples: minimum-data guard: labelled examples needed to train.
        min_per_class: minimum-data guard: examples needed of each class.
        leakage_auc: warn when one feature alone reaches this AUC on validation.
        quality_tolerance: a new model becomes champion only if its holdout metric is at most
            this much worse than the champion's on the same holdout (AUC: absolute; multiclass
            log loss and regression RMSE: relative, 0.005 = 0.5%).
        threshold: decision threshold for precision/recall/F1 (default: best F1 on validation).
        sample_above: binary predictions with more training rows than this train on every
            positive and a sample of the negatives, weighted back (validation and holdout stay
            whole); the quality lost is measured and recorded. None: every row (full data).
    """

    test_fraction: float = Field(0.2, gt=0, lt=0.5)
    validation_fraction: float = Field(0.15, gt=0, lt=0.5)
    max_iterations: int = Field(2000, ge=10, le=20000)
    learning_rate: float | None = Field(None, gt=0, le=1)
    depth: int | None = Field(None, ge=1, le=12)
    depths: list[int] = Field(default_factory=lambda: [4, 6, 8], min_length=1)
    l2_leaf_regs: list[float] = Field(default_factory=lambda: [1.0, 3.0, 10.0], min_length=1)
    one_hot_max_sizes: list[int] = Field(default_factory=lambda: [2, 10], min_length=1)
    early_stopping_rounds: int = Field(50, ge=5)
    random_seed: int = 0
    calibration: Literal["auto", "intercept", "platt", "isotonic", "none"] = "auto"
    blend: bool = True
    refit: Literal["auto", "always", "never"] = "auto"
    recency: Literal["auto", "none"] = "auto"
    deploy_fit: Literal["all", "pre_holdout"] = "all"
    min_examples: int = Field(100, ge=10)
    min_per_class: int = Field(20, ge=5)
    leakage_auc: float = Field(0.97, gt=0.5, le=1.0)
    quality_tolerance: float = Field(0.005, ge=0)
    sample_above: int | None = Field(None, ge=1_000, le=1_000_000_000)
    threshold: float | None = Field(None, gt=0, lt=1)

    @field_validator("depths")
    @classmethod
    def _depths(cls, value: list[int]) -> list[int]:
        if any(d < 1 or d > 12 for d in value):
            raise ValueError("depths must be between 1 and 12")
        return value


BUILTIN_ENTITIES = ("lead",)


CAPACITY_KEYS = ("capacity", "capacity_per", "capacity_days")
"""Keys of [predictions.tiers] that configure capacity-based tiers, not tier cut-offs."""


class PredictionSpec(_Spec):
    """A predictive query: at its anchor time, what will the entity's outcome be?

    Attributes:
        name: identifier of the prediction (model registry directory, score history key).
        entity: what is scored: ``lead`` (built in) or any name with an ``entity_table``.
        entity_table: the store table holding the entities, for entities that are not built in.
        events: extra event sources (tables of the store).
        task: ``binary``, ``multiclass`` or ``regression``.
        label: the outcome.
        anchor: when an entity becomes scoreable.
        train_only_when: conditions training examples must meet (scoring scores every entity).
        exclude_fields: entity fields never used as features (leakage guard: fields filled in after
            the outcome).
        categorical_fields: numeric-coded fields that are categories (region codes, browser ids).
        post_outcome_fields: fields known to be filled after the outcome: a warning when used.
        features: feature settings.
        rule: the hand-written baseline rule (a rep's heuristic), scored beside the model.
        tiers: tier name -> minimum probability (or percentile, see ``tier_by``); the highest
            tier whose cut-off is reached wins.
        tier_by: ``probability`` (cut-offs are probabilities) or ``percentile`` (cut-offs are
            shares of the scored population: ``A = 0.9`` is the top 10 %).
        lowest_tier: tier for probabilities below every cut-off.
        capacity: tier name -> leads a day the team can work (``tiers.capacity = { A = 50,
            B = 150 }``): the cut-offs are then set from the recent arrival rate and score
            distribution when a model first scores after its promotion (or on request), and
            ``tiers`` are only the starting cut-offs.
        capacity_per: ``team`` (capacity is the whole team's) or ``rep`` (per active rep).
        capacity_days: days of recent arrivals the capacity cut-offs are computed from.
        training: training settings.
    """

    name: str = Field(pattern=IDENTIFIER)
    entity: str = Field("lead", pattern=IDENTIFIER)
    entity_table: EntityTableSpec | None = None
    events: list[EventSourceSpec] = Field(default_factory=list)
    task: Literal["binary", "multiclass", "regression"] = "binary"
    label: LabelSpec
    anchor: AnchorSpec = Field(default_factory=AnchorSpec)
    train_only_when: list[TrainFilter] = Field(default_factory=list)
    exclude_fields: list[str] = Field(default_factory=list)
    categorical_fields: list[str] = Field(default_factory=list)
    post_outcome_fields: list[str] = Field(default_factory=list)
    features: FeatureSpec = Field(default_factory=FeatureSpec)
    rule: list[RuleCondition] = Field(default_factory=list)
    tiers: dict[str, float] = Field(default_factory=lambda: {"A": 0.8, "B": 0.5, "C": 0.2})
    lowest_tier: str = "D"
    tier_by: Literal["probability", "percentile"] = "probability"
    capacity: dict[str, float] | None = None
    capacity_per: Literal["team", "rep"] = "team"
    capacity_days: int = Field(28, ge=1, le=365)
    training: TrainingSpec = Field(default_factory=TrainingSpec)

    @model_validator(mode="before")
    @classmethod
    def _capacity_from_tiers(cls, data: Any) -> Any:
        # `tiers.capacity = { A = 50 }` (and capacity_per, capacity_days) sit in [predictions.tiers]
        # beside the starting cut-offs; they are settings of their own.
        if isinstance(data, dict) and isinstance(data.get("tiers"), dict):
            tiers = dict(data["tiers"])
            moved = {k: tiers.pop(k) for k in CAPACITY_KEYS if k in tiers}
            for key, value in tiers.items():
                close = difflib.get_close_matches(key, CAPACITY_KEYS, n=1)
                if not isinstance(value, int | float) and close:
                    raise ValueError(f"tiers.{key} is not a setting (did you mean '{close[0]}'?)")
            if moved:
                data = {**data, "tiers": tiers, **moved}
        return data

    @field_validator("capacity")
    @classmethod
    def _check_capacity(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None:
            for name, per_day in value.items():
                if per_day < 0:
                    raise ValueError(f"tiers.capacity.{name}: {per_day} leads a day is negative")
        return value

    @field_validator("train_only_when", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, dict) else value

    @field_validator("tiers")
    @classmethod
    def _check_tiers(cls, value: dict[str, float]) -> dict[str, float]:
        for name, cutoff in value.items():
            if not 0.0 <= cutoff <= 1.0:
                raise ValueError(
                    f"tier {name}: cut-off {cutoff} must be a probability between 0 and 1"
                )
        if len(set(value.values())) != len(value):
            raise ValueError("two tiers share a cut-off")
        return dict(sorted(value.items(), key=lambda kv: -kv[1]))

    @model_validator(mode="after")
    def _check_names(self) -> PredictionSpec:
        if self.lowest_tier in self.tiers:
            raise ValueError(f"lowest_tier '{self.lowest_tier}' is also one of the tiers")
        for name in self.capacity or {}:
            if name not in self.tiers:
                close = difflib.get_close_matches(name, list(self.tiers), n=1)
                raise ValueError(
                    f"tiers.capacity names tier '{name}', which has no starting cut-off in "
                    "[predictions.tiers]" + (f" (did you mean '{close[0]}'?)" if close else "")
                )
        if self.capacity is not None and self.tier_by != "probability":
            raise ValueError(
                "tiers.capacity sets probability cut-offs: use tier_by = 'probability'"
            )
        if self.label.event is not None and self.label.event == self.anchor.event:
            raise ValueError("label.event and anchor.event must differ")
        if self.entity not in BUILTIN_ENTITIES and self.entity_table is None:
            raise ValueError(
                f"entity '{self.entity}' is not built in ({', '.join(BUILTIN_ENTITIES)}): "
                "describe its table in entity_table = {table, id_column, time_column}"
            )
        if self.task == "regression" and self.label.event and self.label.aggregate == "exists":
            raise ValueError("a regression label from events needs aggregate = 'count' or 'sum'")
        if self.task == "multiclass" and self.label.event and not self.label.classes:
            raise ValueError("a multiclass label from events needs classes (named value ranges)")
        if self.task != "multiclass" and self.label.classes:
            raise ValueError("label.classes applies to task = 'multiclass' only")
        if self.label.aggregate == "sum" and not any(
            e.event == self.label.event and e.value_column for e in self.events
        ):
            raise ValueError(
                f"aggregate = 'sum' needs an event source for '{self.label.event}' with a "
                "value_column"
            )
        return self
