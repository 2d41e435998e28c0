"""Typed job results: read from the run log's counts and written back to the same JSON."""

from __future__ import annotations

from rich.console import Console

from sync.render import render_result
from sync.results import PushSummary, SyncSummary
from sync.run import JobResult


def test_a_typed_result_writes_back_the_counts_it_was_read_from():
    counts = {
        "written": 3,
        "failed": 1,
        "predictions": {"lead_conversion": {"written": 3, "failed": 1}},
        "segment": {"lead_conversion": {"written": 2}},
        "added_by_a_newer_job": {"kept": True},
    }
    result = JobResult("push", counts=counts)
    summary = result.summary
    assert isinstance(summary, PushSummary)
    assert summary.written == 3 and summary.campaigns is None and summary.revived is None
    assert summary.extra == {"added_by_a_newer_job": {"kept": True}}
    assert result.to_json()["counts"] == counts


def test_optional_keys_stay_absent_and_present_ones_stay_present():
    counts = {"pulled": 1, "scored": 2, "written": 0, "failed": 0, "trained": [], "jobs": {}}
    summary = JobResult("sync", counts=counts).summary
    assert isinstance(summary, SyncSummary)
    assert summary.to_json() == counts
    assert "segment_written" not in summary.to_json()


def test_a_job_without_a_type_keeps_its_counts_and_is_rendered_generically():
    console = Console(record=True, width=100)
    result = JobResult("fresh", counts={"stale": 4, "note": "text"}, api_calls=2, seconds=1.5)
    assert result.summary is None
    assert result.to_json()["counts"] == {"stale": 4, "note": "text"}
    render_result(console, result)
    text = console.export_text()
    assert "stale" in text and "4" in text and "api calls" in text
