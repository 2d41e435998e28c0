"""What a prediction is, as configured in ``[[predictions]]``: the ML half of the spec.

``sync.config`` composes these models into the settings it loads from TOML; ``scoring`` never reads
files.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabelSpec(_Spec):
    """What has to happen after the anchor for a positive label.

    Attributes:
        event: event name (``converted``, ``campaign_response``, ``task_call``...).
        within_days: the window after the anchor, in days: [anchor, anchor + within_days).
    """

    event: str = Field(pattern=IDENTIFIER)
    within_days: int = Field(30, gt=0, le=3650)


class AnchorSpec(_Spec):
    """When an entity becomes scoreable: the first occurrence of an event.

    Attributes:
        event: event name; ``lead_created`` anchors at creation.
    """

    event: str = Field("lead_created", pattern=IDENTIFIER)


class FeatureSpec(_Spec):
    """Point-in-time features.

    Attributes:
        windows_days: engagement counts are computed over each of these windows before the anchor.
        exclude_events: events never counted as features (besides the label event).
    """

    windows_days: list[int] = Field(default_factory=lambda: [7, 30, 90], min_length=1)
    exclude_events: list[str] = Field(default_factory=list)

    @field_validator("windows_days")
    @classmethod
    def _positive_windows(cls, value: list[int]) -> list[int]:
        if any(w <= 0 or w > 3650 for w in value):
            raise ValueError("windows must be between 1 and 3650 days")
        return sorted(set(value))


class TrainingSpec(_Spec):
    """How the model is trained and evaluated.

    Attributes:
        test_fraction: newest share of examples held out for the final evaluation.
        validation_fraction: next-newest share used for early stopping.
        max_iterations: upper bound on boosting iterations (early stopping picks the number).
        learning_rate: CatBoost learning rate.
        depth: tree depth.
        early_stopping_rounds: stop when the validation loss has not improved for this many
            iterations.
        random_seed: seed for reproducible training.
    """

    test_fraction: float = Field(0.2, gt=0, lt=0.5)
    validation_fraction: float = Field(0.15, gt=0, lt=0.5)
    max_iterations: int = Field(2000, ge=10, le=20000)
    learning_rate: float = Field(0.05, gt=0, le=1)
    depth: int = Field(6, ge=1, le=12)
    early_stopping_rounds: int = Field(100, ge=5)
    random_seed: int = 0


class PredictionSpec(_Spec):
    """A predictive query: at its anchor time, will the entity's label event follow within N days?

    Attributes:
        name: identifier of the prediction (model registry directory, score history key).
        entity: what is scored.
        task: the learning task.
        label: the outcome and its window.
        anchor: when an entity becomes scoreable.
        exclude_fields: entity fields never used as features (leakage guard: fields filled in after
            the outcome).
        features: feature settings.
        tiers: tier name -> minimum probability; the highest tier whose cut-off is reached wins.
        lowest_tier: tier for probabilities below every cut-off.
        training: training settings.
    """

    name: str = Field(pattern=IDENTIFIER)
    entity: Literal["lead"] = "lead"
    task: Literal["binary"] = "binary"
    label: LabelSpec
    anchor: AnchorSpec = Field(default_factory=AnchorSpec)
    exclude_fields: list[str] = Field(default_factory=list)
    features: FeatureSpec = Field(default_factory=FeatureSpec)
    tiers: dict[str, float] = Field(default_factory=lambda: {"A": 0.8, "B": 0.5, "C": 0.2})
    lowest_tier: str = "D"
    training: TrainingSpec = Field(default_factory=TrainingSpec)

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
        if self.label.event == self.anchor.event:
            raise ValueError("label.event and anchor.event must differ")
        return self
