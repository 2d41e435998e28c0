"""Edit a test's config file by key, failing loudly when a key or section is not where expected.

Tests switch features on in a generated ``config.toml``. Editing its text with ``str.replace``
passes silently when the text stops matching; :func:`edit_config` names keys instead, checks that
the key it sets exists (or that the key it adds does not), and reads the file back to check that
the value landed where intended.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def toml_value(value: Any) -> str:
    """A Python value as a TOML literal (strings, numbers, booleans, lists, inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML literal for {value!r}")


def _sections(lines: list[str]) -> list[tuple[str, int, int]]:
    """(name, first line after the header, end) of every section; '' is the top of the file."""
    out, name, start = [], "", 0
    for i, line in enumerate(lines):
        match = _HEADER.match(line)
        if match and not line.lstrip().startswith(("#", '"')) and "=" not in line.split("]")[0]:
            out.append((name, start, i))
            name, start = match.group(1).replace(" ", ""), i + 1
    out.append((name, start, len(lines)))
    return out


def _value_end(lines: list[str], i: int) -> int:
    """The line after a key's value (arrays may span lines)."""
    depth, j = 0, i
    while True:
        text = lines[j].split("#", 1)[0] if '"' not in lines[j] else lines[j]
        depth += text.count("[") - text.count("]")
        j += 1
        if depth <= 0 or j >= len(lines):
            return j


def _lookup(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if isinstance(data, list):
            data = data[0]
        if not isinstance(data, dict) or part not in data:
            raise KeyError(dotted)
        data = data[part]
    return data


def edit_config(
    path: Path,
    values: Mapping[str, Any] | None = None,
    *,
    add: Mapping[str, Any] | None = None,
    remove: Iterable[str] = (),
) -> Path:
    """Change keys of a TOML config file in place; the first section of a name is edited.

    Args:
        path: the file.
        values: ``section.key`` -> new value; the key must exist.
        add: ``section.key`` -> value; the key must not exist (a missing section is appended).
        remove: ``section.key`` keys to delete; each must exist.

    Returns:
        The path.

    Raises:
        AssertionError: a key to set or remove is missing, a key to add exists already, or the
            file does not read back with the new values.
    """
    lines = path.read_text().splitlines()
    for dotted, value in (values or {}).items():
        lines = _replace(lines, dotted, f"{dotted.rsplit('.', 1)[1]} = {toml_value(value)}")
    for dotted in remove:
        lines = _replace(lines, dotted, None)
    for dotted, value in (add or {}).items():
        section, key = dotted.rsplit(".", 1) if "." in dotted else ("", dotted)
        found = [s for s in _sections(lines) if s[0] == section]
        line = f"{key} = {toml_value(value)}"
        if not found:
            lines += ["", f"[{section}]", line]
            continue
        _, start, end = found[0]
        keys = [ln.split("=", 1)[0].strip() for ln in lines[start:end] if "=" in ln]
        assert key not in keys, f"{path}: [{section}] already has {key}; use values"
        lines.insert(start, line)
    path.write_text("\n".join(lines) + "\n")
    data = tomllib.loads(path.read_text())
    for dotted, value in {**(values or {}), **(add or {})}.items():
        expected = list(value) if isinstance(value, tuple) else value
        assert _lookup(data, dotted) == expected, f"{path}: {dotted} did not read back as {value!r}"
    for dotted in remove:
        try:
            _lookup(data, dotted)
        except KeyError:
            continue
        raise AssertionError(f"{path}: {dotted} is still set")
    return path


def _replace(lines: list[str], dotted: str, new: str | None) -> list[str]:
    section, key = dotted.rsplit(".", 1) if "." in dotted else ("", dotted)
    found = [s for s in _sections(lines) if s[0] == section]
    assert found, f"config has no [{section}] section (wanted {dotted})"
    _, start, end = found[0]
    for i in range(start, end):
        if "=" in lines[i] and lines[i].split("=", 1)[0].strip() == key:
            stop = _value_end(lines, i)
            return [*lines[:i], *([new] if new is not None else []), *lines[stop:]]
    raise AssertionError(f"config has no key {key} in [{section}] (wanted {dotted})")


def rename_lead_field(path: Path, old: str, new: str) -> Path:
    """Rename one field of the pulled Lead stream (``salesforce.streams.Lead.fields``).

    Args:
        path: the config file.
        old: the field to rename; it must be configured.
        new: its new name.

    Returns:
        The path.
    """
    fields = tomllib.loads(path.read_text())["salesforce"]["streams"]["Lead"]["fields"]
    assert old in fields, f"{path}: Lead does not pull {old}"
    return edit_config(
        path, {"salesforce.streams.Lead.fields": [new if f == old else f for f in fields]}
    )
