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
import os
import tomllib
import types
import typing
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
)

from connector.errors import ConfigError
from connector.salesforce import SalesforceSettings
from scoring.spec import PredictionSpec

ENV_PREFIX = "LEADSCORE_"
SECRETS_FILE = "secrets.toml"

OutputKind = Literal["score", "tier", "probability", "model_version", "scored_at", "reasons"]


class StoreSettings(BaseModel):
    """The ``[store]`` section.

    Attributes:
        path: the DuckDB file.
        models_dir: where model versions are kept.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path = Path("leadscore.duckdb")
    models_dir: Path = Path("models")


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
        as_of: how recent the export is (its data is complete up to then); default: the file's
            modification time. Label windows ending later are not used.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path
    table: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    id_column: str | None = None
    delimiter: str | None = Field(None, min_length=1, max_length=1)
    null_values: list[str] = Field(default_factory=list)
    row_id: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    as_of: datetime | None = None


class SalesforceOutput(BaseModel):
    """Where a prediction's results are written in Salesforce (``[predictions.salesforce]``).

    Attributes:
        object: the object whose records are the scored entities (``Lead``).
        fields: output -> field API name, e.g. ``{score = "Lead_Score__c", tier = "Lead_Tier__c"}``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    object: str = Field("Lead", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    fields: dict[OutputKind, str] = Field(min_length=1)

    @field_validator("fields")
    @classmethod
    def _field_names(cls, value: dict[str, str]) -> dict[str, str]:
        for kind, name in value.items():
            if not name.replace("_", "").isalnum():
                raise ValueError(f"{kind}: '{name}' is not a field API name")
        return value


class PredictionConfig(PredictionSpec):
    """A ``[[predictions]]`` entry: the ML spec plus where its results go."""

    salesforce: SalesforceOutput | None = None


class Settings(BaseModel):
    """The whole configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: StoreSettings = Field(default_factory=StoreSettings)
    salesforce: SalesforceSettings | None = None
    sources: list[SourceSettings] = Field(default_factory=list)
    predictions: list[PredictionConfig] = Field(min_length=1)
    _path: Path | None = PrivateAttr(default=None)

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
_PATH_KEYS: tuple[tuple[str, str], ...] = (
    ("store", "path"),
    ("store", "models_dir"),
    ("salesforce", "ca_bundle"),
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
        model = _inner_model(info.annotation)  # sections may be optional (``Model | None``)
        if model is not None:
            keys += [
                (section, k) for k, f in model.model_fields.items() if _is_secret(f.annotation)
            ]
    return keys


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: file not found", hint="pass --config PATH, or start from config.example.toml"
        ) from None
    except (PermissionError, IsADirectoryError, UnicodeDecodeError, OSError) as exc:
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


def _describe_error(error: dict[str, Any]) -> str:
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        model = _model_at(loc)
        names = list(model.model_fields) if model else []
        close = difflib.get_close_matches(str(loc[-1]), names, n=1)
        return "unknown key" + (f" (did you mean '{close[0]}'?)" if close else "")
    if kind == "path_type":
        return f"must be a path string (got {error.get('input')!r})"
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    if isinstance(value, str | int | float | bool) and len(repr(value)) <= 60:
        message += f" (got {value!r})"
    return message


def load_settings(path: str | Path, *, environ: dict[str, str] | None = None) -> Settings:
    """Load and validate the configuration.

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
    raw = _read_toml(path)
    secrets = set(secret_keys())
    for section, key in secrets:
        if key in (raw.get(section) or {}):
            raise ConfigError(
                f"{path}: {section}.{key}: secrets must not be in the config file",
                hint=f"move it to {SECRETS_FILE} or set {_env_name(section, key)}",
            )
    secrets_path = Path(env.get(f"{ENV_PREFIX}SECRETS_FILE") or path.parent / SECRETS_FILE)
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
    for section, key in secrets:
        value = env.get(_env_name(section, key)) or (from_file.get(section) or {}).get(key)
        # only sections the config has: a secret in the environment does not create one
        if value is not None and isinstance(raw.get(section), dict):
            raw.setdefault(section, {})[key] = value
    for source in raw.get("sources") or []:
        if isinstance(source, dict) and isinstance(source.get("path"), str) and source["path"]:
            candidate = Path(source["path"]).expanduser()
            source["path"] = str(candidate if candidate.is_absolute() else path.parent / candidate)
    for section, key in _PATH_KEYS:
        block = raw.get(section)
        if isinstance(block, dict) and isinstance(block.get(key), str) and block[key]:
            candidate = Path(block[key]).expanduser()
            block[key] = str(candidate if candidate.is_absolute() else path.parent / candidate)
        elif isinstance(block, dict) and block.get(key) == "":
            block[key] = None
    try:
        settings = Settings.model_validate(raw)
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
        raise ConfigError(
            f"{origin}: {_format_location(loc)}: {_describe_error(first)}",
            hint=(f"{more} more problem(s) after this one; " if more else "")
            + "see config.example.toml for every key",
        ) from None
    settings._path = path
    return settings
