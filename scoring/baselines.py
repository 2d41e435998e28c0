"""Baselines scored beside CatBoost on the same holdout, and the linear model to fall back to.

- ``LinearModel``: logistic regression (binary, multiclass) or ridge regression on one-hot
  categoricals and standardised numbers (median-imputed with a missing flag; ``log1p`` for
  non-negative counts). Fitted with scikit-learn, stored as plain JSON (encoders, coefficients),
  applied with numpy: no pickle, and it can score new rows and explain them (coefficient x value).
- ``fit_tree``: a single decision tree on the same encoding, its depth chosen on validation. It is a
  baseline only and is not stored.
- ``rule_scores``: the configured hand-written rule (a rep's points heuristic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from scoring.spec import RuleCondition

MAX_LEVELS = 50
MIN_LEVEL_COUNT = 5
OTHER = "(other)"


@dataclass
class Encoder:
    """One-hot + standardisation, fitted on training rows, stored as JSON.

    Attributes:
        categorical: categorical columns and their kept levels.
        numeric: numeric columns with median, mean, std (after the transform) and log flag.
    """

    categorical: dict[str, list[str]]
    numeric: dict[str, dict[str, float | bool]]

    @classmethod
    def fit(cls, frame: pd.DataFrame, features: list[str], cat_features: list[str]) -> Encoder:
        """Learn levels and scaling from training rows.

        Args:
            frame: training rows.
            features: feature columns.
            cat_features: the categorical ones.

        Returns:
            The encoder.
        """
        categorical = {}
        for c in cat_features:
            counts = frame[c].astype(str).value_counts()
            categorical[c] = [str(v) for v in counts[counts >= MIN_LEVEL_COUNT].index[:MAX_LEVELS]]
        numeric: dict[str, dict[str, float | bool]] = {}
        for c in features:
            if c in cat_features:
                continue
            v = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float)
            finite = v[np.isfinite(v)]
            median = float(np.median(finite)) if len(finite) else 0.0
            log = bool(len(finite) and finite.min() >= 0 and finite.max() > 10)
            t = np.where(np.isfinite(v), v, median)
            t = np.log1p(t) if log else t
            numeric[c] = {
                "median": median,
                "log": log,
                "mean": float(t.mean()) if len(t) else 0.0,
                "std": float(t.std()) or 1.0,
                "has_missing": bool((~np.isfinite(v)).any()),
            }
        return cls(categorical, numeric)

    @property
    def columns(self) -> list[tuple[str, str]]:
        """(feature, level or kind) for each encoded column, in matrix order."""
        out: list[tuple[str, str]] = []
        for c, levels in self.categorical.items():
            out += [(c, level) for level in levels] + [(c, OTHER)]
        for c, info in self.numeric.items():
            out.append((c, "value"))
            if info["has_missing"]:
                out.append((c, "missing"))
        return out

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Encode rows (unseen levels go to "(other)"; missing numbers to the median + a flag).

        Args:
            frame: rows with the feature columns.

        Returns:
            The design matrix.
        """
        blocks = []
        for c, levels in self.categorical.items():
            # vectorised level lookup (a Python loop per value cost seconds at 100k rows);
            # unseen levels get -1 and go to the "(other)" column
            codes = pd.Index(levels, dtype=object).get_indexer(frame[c].astype(str).to_numpy())
            codes[codes < 0] = len(levels)
            block = np.zeros((len(frame), len(levels) + 1))
            block[np.arange(len(frame)), codes] = 1.0
            blocks.append(block)
        for c, info in self.numeric.items():
            v = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float)
            missing = ~np.isfinite(v)
            t = np.where(missing, float(info["median"]), v)
            if info["log"]:
                t = np.log1p(np.clip(t, 0, None))
            t = (t - float(info["mean"])) / float(info["std"])
            blocks.append(t[:, None])
            if info["has_missing"]:
                blocks.append(missing.astype(float)[:, None])
        return np.hstack(blocks) if blocks else np.zeros((len(frame), 0))

    def to_json(self) -> dict[str, Any]:
        """JSON form: lists of pairs, because column order matters and JSON writers sort keys."""
        return {
            "categorical": [[c, levels] for c, levels in self.categorical.items()],
            "numeric": [[c, info] for c, info in self.numeric.items()],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Encoder:
        """Inverse of :meth:`to_json`."""
        return cls(
            {c: list(levels) for c, levels in data["categorical"]},
            {c: dict(info) for c, info in data["numeric"]},
        )


@dataclass
class LinearModel:
    """Logistic or ridge regression over an :class:`Encoder`, as JSON-able numbers.

    Attributes:
        task: ``binary``, ``multiclass`` or ``regression``.
        encoder: the encoding.
        coef: coefficients, shape (outputs, encoded columns).
        intercept: one per output.
        classes: class names (multiclass).
    """

    task: str
    encoder: Encoder
    coef: np.ndarray
    intercept: np.ndarray
    classes: list[str]

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        y: np.ndarray,
        features: list[str],
        cat_features: list[str],
        task: str,
        classes: list[str] | None = None,
    ) -> LinearModel:
        """Fit on training rows.

        Args:
            frame: training rows.
            y: labels (0/1, class codes, or numbers).
            features: feature columns.
            cat_features: the categorical ones.
            task: the task.
            classes: class order (multiclass).

        Returns:
            The model.
        """
        encoder = Encoder.fit(frame, features, cat_features)
        x = encoder.transform(frame)
        if task == "regression":
            ridge = Ridge(alpha=1.0).fit(x, y)
            return cls(task, encoder, ridge.coef_[None, :], np.atleast_1d(ridge.intercept_), [])
        model = LogisticRegression(C=1.0, max_iter=2000)
        if task == "multiclass":
            assert classes is not None
            model.fit(x, np.asarray(y, dtype=int))  # class codes, indexes into ``classes``
            coef = np.zeros((len(classes), x.shape[1]))
            intercept = np.full(len(classes), -30.0)  # classes absent from training: ~0
            coef[model.classes_] = (
                model.coef_
                if len(model.classes_) > 2
                else np.vstack([-model.coef_[0] / 2, model.coef_[0] / 2])
            )
            intercept[model.classes_] = (
                model.intercept_
                if len(model.classes_) > 2
                else np.array([-model.intercept_[0] / 2, model.intercept_[0] / 2])
            )
            return cls(task, encoder, coef, intercept, list(classes))
        model.fit(x, y)
        return cls(task, encoder, model.coef_, model.intercept_, [])

    def decision(self, frame: pd.DataFrame) -> np.ndarray:
        """Linear scores (logits, or the regression value), shape (rows, outputs)."""
        return self.encoder.transform(frame) @ self.coef.T + self.intercept

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Probabilities (binary: positive class; multiclass: a matrix) or values.

        Args:
            frame: rows with the feature columns.

        Returns:
            Predictions.
        """
        z = self.decision(frame)
        if self.task == "binary":
            return 1.0 / (1.0 + np.exp(-z[:, 0]))
        if self.task == "multiclass":
            z = z - z.max(axis=1, keepdims=True)
            e = np.exp(z)
            return e / e.sum(axis=1, keepdims=True)
        return z[:, 0]

    def contributions(
        self, frame: pd.DataFrame, features: list[str], output: int = 0
    ) -> np.ndarray:
        """Per-feature contributions to the linear score (coefficient x centred encoded value).

        Args:
            frame: rows.
            features: feature order of the result.
            output: which output (class) for multiclass.

        Returns:
            Matrix (rows, features).
        """
        # numbers are standardised (0 is the training mean); a category contributes its coefficient
        parts = self.encoder.transform(frame) * self.coef[output]
        out = np.zeros((len(frame), len(features)))
        position = {f: i for i, f in enumerate(features)}
        for j, (feature, _) in enumerate(self.encoder.columns):
            if feature in position:
                out[:, position[feature]] += parts[:, j]
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON form (stored as ``linear.json`` next to ``model.cbm``)."""
        return {
            "task": self.task,
            "encoder": self.encoder.to_json(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "classes": self.classes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LinearModel:
        """Inverse of :meth:`to_json`."""
        return cls(
            data["task"],
            Encoder.from_json(data["encoder"]),
            np.asarray(data["coef"], dtype=float),
            np.asarray(data["intercept"], dtype=float),
            list(data["classes"]),
        )


def fit_tree(
    train: pd.DataFrame,
    y_train: np.ndarray,
    valid: pd.DataFrame,
    y_valid: np.ndarray,
    encoder: Encoder,
    task: str,
    score: Any,
    classes: list[str] | None = None,
) -> tuple[Any, int]:
    """A single decision tree, its depth chosen on validation.

    Args:
        train: training rows.
        y_train: training labels (class codes for multiclass).
        valid: validation rows.
        y_valid: validation labels.
        encoder: the encoding shared with the linear model.
        task: the task.
        score: ``score(y_valid, prediction) -> float``, lower is better.
        classes: class names (multiclass).

    Returns:
        The fitted tree and its depth.
    """
    x, xv = encoder.transform(train), encoder.transform(valid)
    best: tuple[float, Any, int] | None = None
    for depth in (3, 5, 8):
        if task == "regression":
            tree: Any = DecisionTreeRegressor(max_depth=depth, min_samples_leaf=20, random_state=0)
        else:
            tree = DecisionTreeClassifier(max_depth=depth, min_samples_leaf=20, random_state=0)
        tree.fit(x, y_train)
        value = score(y_valid, tree_predict(tree, xv, task, len(classes or [])))
        if best is None or value < best[0]:
            best = (value, tree, depth)
    assert best is not None
    return best[1], best[2]


def fit_tree_at(x: np.ndarray, y: np.ndarray, task: str, depth: int) -> Any:
    """A decision tree of a chosen depth on an encoded matrix (the baseline refitted on more rows).

    Args:
        x: encoded rows.
        y: labels (class codes for multiclass).
        task: the task.
        depth: the depth chosen by :func:`fit_tree`.

    Returns:
        The fitted tree.
    """
    if task == "regression":
        tree: Any = DecisionTreeRegressor(max_depth=depth, min_samples_leaf=20, random_state=0)
    else:
        tree = DecisionTreeClassifier(max_depth=depth, min_samples_leaf=20, random_state=0)
    return tree.fit(x, y)


def tree_predict(tree: Any, x: np.ndarray, task: str, n_classes: int = 0) -> np.ndarray:
    """Predictions of a fitted tree on an encoded matrix (probabilities padded to every class)."""
    if task == "regression":
        return tree.predict(x)
    proba = tree.predict_proba(x)
    if task == "binary":
        return proba[:, list(tree.classes_).index(1)] if 1 in tree.classes_ else np.zeros(len(x))
    out = np.zeros((len(x), n_classes))
    out[:, tree.classes_] = proba
    return out


def rule_scores(frame: pd.DataFrame, rule: list[RuleCondition]) -> np.ndarray:
    """Points of the hand-written rule for each row.

    Args:
        frame: rows with the feature columns.
        rule: the conditions.

    Returns:
        The summed points.

    Raises:
        KeyError: a condition names a feature that does not exist (the caller reports it).
    """
    total = np.zeros(len(frame))
    for r in rule:
        if r.feature not in frame.columns:
            raise KeyError(r.feature)
        values = frame[r.feature]
        hit = np.ones(len(frame), dtype=bool)
        if r.equals is not None:
            hit &= values.astype(str).to_numpy() == str(r.equals)
        if r.in_ is not None:
            hit &= values.astype(str).isin([str(v) for v in r.in_]).to_numpy()
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        for op, bound in (("gt", r.gt), ("ge", r.ge), ("lt", r.lt), ("le", r.le)):
            if bound is None:
                continue
            with np.errstate(invalid="ignore"):
                hit &= {
                    "gt": numbers > bound,
                    "ge": numbers >= bound,
                    "lt": numbers < bound,
                    "le": numbers <= bound,
                }[op]
        total += np.where(hit, r.points, 0.0)
    return total
