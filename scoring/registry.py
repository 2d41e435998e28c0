"""Model versions on disk: ``<models_dir>/<prediction>/<version>/{model.cbm, metadata.json}``.

Models are stored in CatBoost's own format plus JSON, never pickle. ``champion.json`` names the
version used for scoring. Files are written to a temporary name and renamed, so a crash never leaves
half a version behind.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from catboost import CatBoostClassifier

MODEL_FILE = "model.cbm"
METADATA_FILE = "metadata.json"
CHAMPION_FILE = "champion.json"


@dataclass(frozen=True)
class ModelVersion:
    """A stored model and its metadata."""

    version: str
    path: Path
    metadata: dict[str, Any]

    def load(self) -> CatBoostClassifier:
        """Load the CatBoost model."""
        model = CatBoostClassifier()
        model.load_model(str(self.path / MODEL_FILE))
        return model


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
    model: CatBoostClassifier,
    metadata: dict[str, Any],
    *,
    champion: bool,
) -> ModelVersion:
    """Store a trained model as a new version.

    Args:
        models_dir: registry root.
        prediction: prediction name.
        model: trained model.
        metadata: JSON-serialisable facts (features, metrics, data window...).
        champion: make it the champion.

    Returns:
        The stored version.
    """
    version = new_version_id()
    final = Path(models_dir) / prediction / version
    staging = final.with_name(f".{version}.tmp")
    staging.mkdir(parents=True, exist_ok=False)
    model.save_model(str(staging / MODEL_FILE))
    data = {**metadata, "version": version, "prediction": prediction}
    _write_json(staging / METADATA_FILE, data)
    os.replace(staging, final)
    if champion:
        set_champion(models_dir, prediction, version)
    return ModelVersion(version, final, data)


def set_champion(models_dir: Path, prediction: str, version: str) -> None:
    """Make a stored version the one used for scoring.

    Args:
        models_dir: registry root.
        prediction: prediction name.
        version: an existing version.

    Raises:
        FileNotFoundError: the version does not exist.
    """
    path = Path(models_dir) / prediction / version / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"model version {version} of {prediction} does not exist")
    _write_json(
        Path(models_dir) / prediction / CHAMPION_FILE,
        {"version": version, "since": datetime.now(UTC).isoformat()},
    )


def load_champion(models_dir: Path, prediction: str) -> ModelVersion | None:
    """The champion version of a prediction.

    Args:
        models_dir: registry root.
        prediction: prediction name.

    Returns:
        The version, or None when no model was trained yet.
    """
    pointer = Path(models_dir) / prediction / CHAMPION_FILE
    if not pointer.exists():
        return None
    version = json.loads(pointer.read_text())["version"]
    path = Path(models_dir) / prediction / version
    return ModelVersion(version, path, json.loads((path / METADATA_FILE).read_text()))


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
