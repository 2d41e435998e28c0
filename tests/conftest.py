"""Fixtures shared across the tree: small sandboxes generated with Segment data."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from connector.sandbox import Sandbox
from connector.sandbox.segment_api import SegmentOptions
from connector.segment import SegmentSettings

SEGMENT_AS_OF = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)

# pytest-xdist's workers export the terminal's size; the CLI's tables would wrap at it there and
# not under a plain `pytest`, so every test sees no terminal size, as cron and systemd do.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)


def segment_settings(box: Sandbox, **overrides: Any) -> SegmentSettings:
    """``[segment]`` settings pointing at a sandbox (its URL, CA, space and secrets)."""
    info = box.info
    values: dict[str, Any] = {
        "tracking_url": info["segment_url"],
        "profile_api_url": info["profile_api_url"],
        "space_id": info["space_id"],
        "ca_bundle": Path(info["ca_bundle"]),
        "write_key": SecretStr(info["segment_write_key"]),
        "profile_api_token": SecretStr(info["profile_api_token"]),
        "requests_per_second": 1000.0,
    }
    values.update(overrides)
    return SegmentSettings(**values)


@pytest.fixture(scope="session")
def segment_org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A read-mostly org of 200 leads with Segment profiles (tests must not rely on its writes)."""
    workdir = tmp_path_factory.mktemp("segment-org")
    with Sandbox(
        workdir,
        leads=200,
        seed=11,
        as_of=SEGMENT_AS_OF,
        segment=True,
        segment_options=SegmentOptions(profile_rate_limit=1000.0),
    ) as box:
        yield box


@pytest.fixture
def segment_box(tmp_path: Path) -> Iterator[Sandbox]:
    """A fresh small org with Segment profiles per test, for writes and faults."""
    with Sandbox(
        tmp_path / "sandbox",
        leads=60,
        seed=5,
        as_of=SEGMENT_AS_OF,
        segment=True,
        segment_options=SegmentOptions(profile_rate_limit=1000.0, seed=5),
    ) as box:
        yield box
