"""Model versions on disk: ``<models_dir>/<prediction>/<version>/``.

Each version holds:

- ``model.cbm``: the CatBoost model in CatBoost's own format;
- ``metadata.json``: config hash, data window, feature list, metrics, baseline metrics, training
  time, the blend weight and the probability calibrator (a few numbers);
- ``linear.json``: the logistic/ridge regression as JSON (encoders and coefficients), used when
  the run blended with it or fell back to it;
- ``repeat_purchase.json``: the BG/NBD x Gamma-Gamma parameters, when a value regression blended
  with that textbook model instead;
- ``holdout.parquet``: the holdout rows with the predictions of the model and of each baseline,
  from which the report draws its curves.

Nothing is pickled. ``champion.json`` names the version used for scoring and the champions before
it (for ``rollback``); ``challenger.json`` names a newer version that did not pass the quality gate.
Files are written to a temporary name and renamed, so a crash never leaves half a version behind.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # CatBoost, pandas and the model classes are imported where a model is loaded or saved:
    # reading the registry's pointers and metadata (`leadscore status`) needs none of them.
    import pandas as pd

    from scoring.model import Predictor

MODEL_FILE = "model.cbm"
METADATA_FILE = "metadata.json"
LINEAR_FILE = "linear.json"
REPEAT_PURCHASE_FILE = "repeat_purchase.json"
HOLDOUT_FILE = "holdout.parquet"
CHAMPION_FILE = "champion.json"
CHALLENGER_FILE = "challenger.json"


class RegistryError(Exception):
    """A registry request that cannot be done (unknown version, nothing to roll back to)."""


@dataclass(frozen=True)
class ModelVersion:
    """A stored model and its metadata."""

    version: str
    path: Path
    metadata: dict[str, Any]

    def load(self) -> Predictor:
        """Load the predictor: CatBoost model, blend and calibrator.

        Returns:
            The predictor.
        """
        from catboost import CatBoost, CatBoostClassifier, CatBoostRegressor

        from scoring.baselines import LinearModel
        from scoring.features import FeatureColumns
        from scoring.model import Predictor
        from scoring.repeat_purchase import RepeatPurchaseModel

        meta = self.metadata
        task = meta.get("task", "binary")
        model: CatBoost = CatBoostRegressor() if task == "regression" else CatBoostClassifier()
        model.load_model(str(self.path / MODEL_FILE))
        linear_path = self.path / LINEAR_FILE
        linear = (
            LinearModel.from_json(json.loads(linear_path.read_text()))
            if linear_path.exists()
            else None
        )
        repeat_path = self.path / REPEAT_PURCHASE_FILE
        repeat = (
            RepeatPurchaseModel.from_json(json.loads(repeat_path.read_text()))
            if repeat_path.exists()
            else None
        )
        deployed = meta.get("deployed", {})
        # the model's column order is defined once, by FeatureColumns (traits included)
        columns = FeatureColumns(**meta["features"])
        return Predictor(
            task=task,
            model=model,
            features=columns.names,
            cat_features=columns.cat_features,
            classes=list(meta.get("classes", [])),
            weight=float(deployed.get("weight", 1.0)),
            linear=linear,
            calibrator=deployed.get("calibrator"),
            repeat=repeat,
        )

    def holdout(self) -> pd.DataFrame | None:
        """The stored holdout predictions, if any."""
        import pandas as pd

        path = self.path / HOLDOUT_FILE
        return pd.read_parquet(path) if path.exists() else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def new_version_id(now: datetime | None = None) -> str:
    """A sortable, unique version id such as ``20261123T041500Z-3f2a``.

    Args:
        now: timestamp (default: now, UTC).

    Returns:
        The id.
    """
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def save_version(
    models_dir: Path,
    prediction: str,
    predictor: Predictor,
    metadata: dict[str, Any],
    *,
    champion: bool,
    holdout: pd.DataFrame | None = None,
) -> ModelVersion:
    """Store a trained model as a new version (the champion, or a challenger).

    Args:
        models_dir: registry root.
        prediction: prediction name.
        predictor: the trained predictor.
        metadata: JSON-serialisable facts (features, metrics, data window...).
        champion: make it the champion; otherwise it becomes the challenger.
        holdout: holdout predictions for the report.

    Returns:
        The stored version.
    """
    version = new_version_id()
    final = Path(models_dir) / prediction / version
    staging = final.with_name(f".{version}.tmp")
    staging.mkdir(parents=True, exist_ok=False)
    predictor.model.save_model(str(staging / MODEL_FILE))
    if predictor.linear is not None:
        _write_json(staging / LINEAR_FILE, predictor.linear.to_json())
    if predictor.repeat is not None:
        _write_json(staging / REPEAT_PURCHASE_FILE, predictor.repeat.to_json())
    if holdout is not None:
        holdout.to_parquet(staging / HOLDOUT_FILE, index=False)
    # the blend weight and calibrator are read back from here: take them from the predictor itself
    deployed = {
        **metadata.get("deployed", {}),
        "weight": predictor.weight,
        "calibrator": predictor.calibrator,
    }
    data = {**metadata, "deployed": deployed, "version": version, "prediction": prediction}
    _write_json(staging / METADATA_FILE, data)
    os.replace(staging, final)
    if champion:
        set_champion(models_dir, prediction, version)
    else:
        _write_json(
            Path(models_dir) / prediction / CHALLENGER_FILE,
            {"version": version, "since": datetime.now(UTC).isoformat()},
        )
    return ModelVersion(version, final, data)


def _pointer(models_dir: Path, prediction: str, name: str) -> dict[str, Any] | None:
    path = Path(models_dir) / prediction / name
    return json.loads(path.read_text()) if path.exists() else None


def load_version(models_dir: Path, prediction: str, version: str) -> ModelVersion:
    """A stored version by id.

    Args:
        models_dir: registry root.
        prediction: prediction name.
        version: version id.

    Returns:
        The version.

    Raises:
        RegistryError: no such version, or a name that is not a version inside the registry.
    """
    # A version is one directory name under the prediction: a path (absolute, with a separator,
    # "..") would make every later score load a file from outside the registry.
    if not version or version != Path(version).name or version.startswith("."):
        raise RegistryError(
            f"'{version}' is not a version of prediction '{prediction}': only versions stored "
            f"in the registry ({Path(models_dir) / prediction}) can be used"
        )
    path = Path(models_dir) / prediction / version
    meta = path / METADATA_FILE
    if not meta.exists():
        known = ", ".join(v.version for v in list_versions(models_dir, prediction)) or "none"
        raise RegistryError(
            f"prediction '{prediction}' has no model version '{version}' (versions: {known})"
        )
    return ModelVersion(version, path, json.loads(meta.read_text()))


def set_champion(models_dir: Path, prediction: str, version: str) -> None:
    """Make a stored version the one used for scoring; the previous champion is remembered.

    Args:
        models_dir: registry root.
        prediction: prediction name.
        version: an existing version.

    Raises:
        RegistryError: the version does not exist.
    """
    load_version(models_dir, prediction, version)
    current = _pointer(models_dir, prediction, CHAMPION_FILE)
    history = list(current.get("history", [])) if current else []
    if current and current["version"] != version:
        history.append(current["version"])
    _write_json(
        Path(models_dir) / prediction / CHAMPION_FILE,
        {"version": version, "since": datetime.now(UTC).isoformat(), "history": history},
    )
    challenger = _pointer(models_dir, prediction, CHALLENGER_FILE)
    if challenger and challenger["version"] == version:
        (Path(models_dir) / prediction / CHALLENGER_FILE).unlink()


def load_champion(models_dir: Path, prediction: str) -> ModelVersion | None:
    """The champion version of a prediction.

    Args:
        models_dir: registry root.
        prediction: prediction name.

    Returns:
        The version, or None when no model was trained yet.
    """
    pointer = _pointer(models_dir, prediction, CHAMPION_FILE)
    return load_version(models_dir, prediction, pointer["version"]) if pointer else None


def load_challenger(models_dir: Path, prediction: str) -> ModelVersion | None:
    """The challenger: the newest version that did not pass the quality gate, if any.

    Args:
        models_dir: registry root.
        prediction: prediction name.

    Returns:
        The version, or None.
    """
    pointer = _pointer(models_dir, prediction, CHALLENGER_FILE)
    return load_version(models_dir, prediction, pointer["version"]) if pointer else None


def promote(models_dir: Path, prediction: str, version: str | None = None) -> ModelVersion:
    """Make a version (default: the challenger) the champion.

    Args:
        models_dir: registry root.
        prediction: prediction name.
        version: the version to promote.

    Returns:
        The new champion.

    Raises:
        RegistryError: no version given and no challenger, or an unknown version.
    """
    if version is None:
        challenger = load_challenger(models_dir, prediction)
        if challenger is None:
            raise RegistryError(
                f"prediction '{prediction}' has no challenger; name a version to promote"
            )
        version = challenger.version
    set_champion(models_dir, prediction, version)
    return load_version(models_dir, prediction, version)


def rollback(models_dir: Path, prediction: str) -> ModelVersion:
    """Make the previous champion the champion again.

    Args:
        models_dir: registry root.
        prediction: prediction name.

    Returns:
        The restored champion.

    Raises:
        RegistryError: there is no earlier champion.
    """
    current = _pointer(models_dir, prediction, CHAMPION_FILE)
    history = list(current.get("history", [])) if current else []
    if not current or not history:
        raise RegistryError(f"prediction '{prediction}' has no earlier champion to roll back to")
    previous = history.pop()
    load_version(models_dir, prediction, previous)
    _write_json(
        Path(models_dir) / prediction / CHAMPION_FILE,
        {"version": previous, "since": datetime.now(UTC).isoformat(), "history": history},
    )
    return load_version(models_dir, prediction, previous)


def list_versions(models_dir: Path, prediction: str) -> list[ModelVersion]:
    """All stored versions of a prediction, oldest first.

    Args:
        models_dir: registry root.
        prediction: prediction name.

    Returns:
        Versions.
    """
    root = Path(models_dir) / prediction
    if not root.is_dir():
        return []
    out = []
    for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        meta = path / METADATA_FILE
        if meta.exists():
            out.append(ModelVersion(path.name, path, json.loads(meta.read_text())))
    return out
