"""Per-record reasons (text, length, speed path) and the HTML report."""

from __future__ import annotations

import re
from datetime import datetime

import numpy as np
import pandas as pd

from scoring.explain import MAX_REASON_CHARS, describe, feature_label, humanize, render_reasons
from scoring.pipeline import score_entities, train_prediction
from scoring.registry import save_version
from scoring.report import SECTIONS, ReportInput, Section, build_report
from tests.scoring.test_pipeline import SPEC
from tests.scoring.test_tasks import AS_OF, customer_spec


def test_factors_read_like_a_sales_note():
    counts = frozenset({"task_web_visit_7d", "order_30d"})
    assert describe("task_web_visit_7d", 3.0, counts) == "3 web visits in 7d"
    assert describe("task_web_visit_7d", 1.0, counts) == "1 web visit in 7d"
    assert describe("order_30d", 0.0, counts) == "no orders in 30d"
    assert describe("Seniority__c", "VP", counts) == "Seniority: VP"
    assert describe("NumberOfEmployees", 1200.0, counts) == "Number of employees: 1,200"
    assert describe("Industry", "(missing)", counts) == "Industry: unknown"
    assert describe("days_since_last_event", float("nan"), counts) == "no activity yet"
    assert describe("order_active_days_all", 6.0, counts) == "orders on 6 days in all"
    assert describe("order_active_days_all", 1.0, counts) == "order on 1 day in all"
    assert humanize("LeadSource") == "Lead source" and feature_label("order_30d") == "Orders in 30d"


def test_reasons_always_fit_255_characters_and_have_signs():
    rng = np.random.default_rng(0)
    n, features = 500, [f"Very_Long_Field_Name_Number_{i}" for i in range(12)]
    frame = pd.DataFrame({f: ["x" * 300] * n for f in features})  # absurdly long values
    values = rng.normal(size=(n, len(features)))
    reasons = render_reasons(frame, values, features, positives=5, negatives=5)
    assert max(len(r) for r in reasons) <= MAX_REASON_CHARS
    assert all(re.match(r"^[+-] ", r) for r in reasons)
    quiet = render_reasons(frame.iloc[:3], np.zeros((3, len(features))), features)
    assert quiet == ["", "", ""]  # nothing stands out: no invented reasons


def test_scored_leads_carry_reasons_from_shap(org_store):
    outcome = train_prediction(
        org_store.con,
        SPEC.model_copy(
            update={
                "training": SPEC.training.model_copy(
                    update={"depths": [4], "l2_leaf_regs": [3.0], "one_hot_max_sizes": [2]}
                )
            }
        ),
        as_of=datetime(2025, 6, 30),
        exclude_fields={"lead_score__c"},
    )
    meta = {**outcome.metadata, "version": "v1"}
    scores = score_entities(
        org_store.con, SPEC, outcome.predictor, meta, score_time=datetime(2025, 7, 1)
    )
    reasons = scores["reasons"]
    assert reasons.str.len().max() <= MAX_REASON_CHARS
    assert reasons.str.contains(r"\+ ").mean() > 0.9
    assert reasons.str.contains("Industry: ").any() and reasons.str.contains("web visit").any()
    # the top lead's reasons point up
    top = scores.sort_values("probability").iloc[-1]["reasons"]
    assert top.startswith("+ ")


def test_report_is_self_contained_with_every_section(customer_store, tmp_path, org_store):
    binary = train_prediction(
        org_store.con, SPEC, as_of=datetime(2025, 6, 30), exclude_fields={"lead_score__c"}
    )
    regression_spec = customer_spec(
        name="ltv",
        task="regression",
        label={"event": "order", "within_days": 120, "aggregate": "sum"},
    )
    regression = train_prediction(customer_store.con, regression_spec, as_of=AS_OF)
    multiclass_spec = customer_spec(
        name="tier",
        task="multiclass",
        label={
            "event": "order",
            "within_days": 180,
            "aggregate": "sum",
            "classes": [{"name": "LOW", "lt": 500}, {"name": "HIGH", "ge": 500}],
        },
    )
    multiclass = train_prediction(customer_store.con, multiclass_spec, as_of=AS_OF)
    inputs = []
    for name, outcome in (("lead_conversion", binary), ("ltv", regression), ("tier", multiclass)):
        version = save_version(
            tmp_path / "m",
            name,
            outcome.predictor,
            outcome.metadata,
            champion=True,
            holdout=outcome.holdout,
        )
        inputs.append(ReportInput(name, version.metadata, version.holdout(), scores=None))

    def monitoring(report: ReportInput) -> Section:
        return Section("Monitoring", f"<p>drift of {report.name}</p>")

    page = build_report(inputs, extra_sections=[monitoring])
    for title in (
        "Summary",
        "Model vs. simple alternatives",
        "Lift and gain",
        "ROC and precision-recall",
        "Calibration",
        "Feature importance",
        "Score distribution",
        "Classes",
        "Errors",
        "Threshold explorer",
        "Monitoring",
        "Drift and calibration",
    ):
        assert f"<h3>{title}</h3>" in page, title
    assert page.count("data:image/png;base64,") >= 9
    assert "http://" not in page and "https://" not in page  # nothing fetched when opened
    assert "logistic regression" in page and "decision tree" in page
    assert len(SECTIONS) == 11
    # One explorer, for the binary prediction only, with its data inline.
    assert page.count('class="lsx"') == 1 and 'id="explorer-lead_conversion"' in page


def test_reasons_read_as_reps_would_say_them():
    """Readable event names, describe labels, one window per factor, amounts with currency."""
    from scoring.explain import Labels, describe, feature_label

    labels = Labels(
        {
            "Seniority__c": ("Seniority", "picklist"),
            "AnnualRevenue": ("Annual Revenue", "currency:EUR"),
        },
        currency="EUR",
    )
    counts = frozenset({"seg_page_viewed_90d", "seg_feature_used_14d", "task_web_visit_7d"})
    said = {
        describe(f, v, counts, labels)
        for f, v in [
            ("seg_page_viewed_90d", 8),
            ("seg_feature_used_14d", 1),
            ("task_web_visit_7d", 3),
            ("Seniority__c", "VP"),
            ("AnnualRevenue", 2_500_000.0),
            ("seg_order_completed_value_sum_90d", 1234.0),
        ]
    }
    assert said == {
        "Page viewed 8 times in 90d",
        "Feature used once in 14d",
        "3 web visits in 7d",
        "Seniority: VP",
        "Annual Revenue: EUR 2,500,000",
        "Order completed total in 90d: EUR 1,234",
    }
    assert feature_label("Seniority__c") == "Seniority"
    assert feature_label("Seniority__c", labels) == "Seniority"
    assert feature_label("seg_feature_used_14d") == "Feature used in 14d"
    # an event already named for a window does not say a window twice
    assert describe("seg_pages_viewed_30d_7d", 2, frozenset({"seg_pages_viewed_30d_7d"})) == (
        "Pages viewed 2 times in 7d"
    )
