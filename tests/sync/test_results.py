"""Typed job results: read from the run log's counts and written back to the same JSON."""

from __future__ import annotations

from rich.console import Console

from sync.render import render_result, render_summary
from sync.results import (
    DemoSummary,
    DoctorSummary,
    ModelDetailSummary,
    ModelListSummary,
    PlanSummary,
    PromoteSummary,
    PushSummary,
    RollbackSummary,
    StatusSummary,
    SyncSummary,
)
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
    result = JobResult("reindex", counts={"stale": 4, "note": "text"}, api_calls=2, seconds=1.5)
    assert result.summary is None
    assert result.to_json()["counts"] == {"stale": 4, "note": "text"}
    render_result(console, result)
    text = console.export_text()
    assert "stale" in text and "4" in text and "api calls" in text


def _rendered(summary) -> str:
    console = Console(record=True, width=120)
    render_summary(console, summary)
    return console.export_text()


def test_the_commands_that_are_not_jobs_print_the_dicts_their_functions_return():
    answers = {
        PlanSummary: {
            "targets": [],
            "estimated_api_calls": 3,
            "estimated_segment_requests": 0,
            "api_calls": 2,
        },
        DoctorSummary: {"ok": False, "problems": 1, "checks": [], "api_calls": 4},
        StatusSummary: {
            "store": "store.duckdb",
            "readable": True,
            "busy": None,
            "serving": None,
            "runs": [],
            "jobs": {},
            "dead_letters": None,
            "dead_letter_rows": [],
            "api_usage": None,
            "alerts": [],
            "models": {"lead_conversion": None},
        },
        ModelListSummary: {"lead_conversion": [], "upsell": []},
        # metadata keeps its own order and its None values
        ModelDetailSummary: {"version": "v1", "as_of": None, "task": "binary", "warnings": []},
        PromoteSummary: {"prediction": "upsell", "champion": "v2"},
        RollbackSummary: {"prediction": "upsell", "champion": "v1"},
    }
    for kind, answer in answers.items():
        summary = kind.from_counts(answer)
        assert list(summary.to_json().items()) == list(answer.items()), kind.__name__


def test_each_command_result_has_a_renderer():
    doctor = DoctorSummary.from_counts(
        {
            "ok": False,
            "problems": 1,
            "checks": [
                {"check": "login", "ok": True, "detail": "jwt login", "fix": ""},
                {"check": "field Lead.Score__c", "ok": False, "detail": "missing", "fix": "setup"},
            ],
            "api_calls": 4,
        }
    )
    text = _rendered(doctor)
    assert "problem" in text and "1 problem(s) found" in text and "Lead.Score__c" in text
    plan = PlanSummary.from_counts(
        {
            "targets": [
                {
                    "target": "salesforce campaign",
                    "audience": "hot",
                    "campaign_id": "701000000000001",
                    "members": 12,
                    "enter": 3,
                    "exit": 1,
                    "estimated_calls": 2,
                }
            ],
            "estimated_api_calls": 3,
            "estimated_segment_requests": 0,
            "api_calls": 1,
        }
    )
    text = _rendered(plan)
    assert "hot → Campaign 701000000000001" in text and "12 now: 3 enter, 1 leave" in text
    assert "1 API call(s) (describes); wrote nothing" in text
    promoted = PromoteSummary.from_counts({"prediction": "upsell", "champion": "v2"})
    assert _rendered(promoted).strip() == "upsell: champion is now v2"
    rolled = RollbackSummary.from_counts({"prediction": "upsell", "champion": "v1"})
    assert _rendered(rolled).strip() == "upsell: rolled back; champion is now v1"
    demo = DemoSummary.from_counts(
        {
            "leads": 1000,
            "pulled": 1000,
            "scored": 1000,
            "written": 990,
            "segment_written": 10,
            "failed": 0,
            "api_calls": 25,
            "model_auc": 0.81,
            "oracle_auc": 0.85,
            "auc_ratio": 0.9529,
            "holdout": 200,
            "model_version": "v1",
            "seconds": 12.5,
            "workdir": "demo",
            "config": "demo/config.toml",
        }
    )
    text = _rendered(demo)
    assert "0.8100  (holdout of 200 newest leads)" in text and "0.953" in text
    assert "leadscore status --config demo/config.toml" in text
    assert demo.to_json()["model_version"] == "v1"
