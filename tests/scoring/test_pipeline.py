"""Point-in-time training sets, training, scoring and the registry on small synthetic stores."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from connector.store import Store
from scoring import pipeline
from scoring.events import ENTITIES, create_events_view, entity_sources, resolve_entity
from scoring.features import FeatureColumns, build_features
from scoring.labels import build_examples
from scoring.model import split_by_time, split_examples, stratified_sample
from scoring.pipeline import ScoringError, score_entities, train_prediction
from scoring.registry import list_versions, load_champion, save_version
from scoring.spec import PredictionSpec
from scoring.tiers import assign_tiers, to_score
from tests.scoring.conftest import build_store, load_table
from tests.scoring.test_drift import contact_spec, drifting_contacts
from tests.scoring.test_tasks import FAST

SPEC = PredictionSpec(
    name="lead_conversion",
    label={"event": "converted", "within_days": 30},
    anchor={"event": "campaign_response"},
    exclude_fields=["Status"],
)
ANCHOR = datetime(2025, 3, 10)
LEAD = ENTITIES["lead"]


def one_lead_store(tmp_path, *, converted_on, call_at, name="s.duckdb"):
    lead = {
        "Id": "00Q000000000000001",
        "Industry": "Software",
        "Title": "CTO",
        "NumberOfEmployees": 50,
        "Status": "Open",
        "IsConverted": converted_on is not None,
        "ConvertedDate": converted_on,
        "CreatedDate": ANCHOR - timedelta(days=20),
        "SystemModstamp": ANCHOR,
        "IsDeleted": False,
    }
    tasks = [
        {
            "Id": "00T000000000000001",
            "WhoId": lead["Id"],
            "Type": "Web Visit",
            "CreatedDate": ANCHOR - timedelta(days=2),
            "SystemModstamp": ANCHOR,
        },
        {
            "Id": "00T000000000000002",
            "WhoId": lead["Id"],
            "Type": "Call",
            "CreatedDate": call_at,
            "SystemModstamp": ANCHOR,
        },
    ]
    member = {
        "Id": "00v000000000000001",
        "LeadId": lead["Id"],
        "HasResponded": True,
        "FirstRespondedDate": ANCHOR.date(),
        "SystemModstamp": ANCHOR,
    }
    return build_store(tmp_path / name, [lead], tasks, [member], synced=datetime(2025, 6, 1))


def examples_and_features(store):
    create_events_view(store.con, LEAD)
    examples = build_examples(store.con, LEAD, SPEC, datetime(2025, 6, 1))
    columns = FeatureColumns(["Industry"], [], ["task_call", "task_web_visit"], [7, 30])
    features = build_features(store.con, LEAD, examples.frame, columns)
    return examples, features.drop(columns=["label"])


def test_moving_the_label_event_into_the_window_changes_the_label_not_the_features(tmp_path):
    late = ANCHOR.date() + timedelta(days=40)  # converted, but after the 30-day window
    inside = ANCHOR.date() + timedelta(days=5)
    call = ANCHOR + timedelta(hours=3)
    with one_lead_store(tmp_path, converted_on=late, call_at=call, name="a.duckdb") as a:
        ex_a, feat_a = examples_and_features(a)
    with one_lead_store(tmp_path, converted_on=inside, call_at=call, name="b.duckdb") as b:
        ex_b, feat_b = examples_and_features(b)
    assert ex_a.frame["label"].tolist() == [0]
    assert ex_b.frame["label"].tolist() == [1]
    assert feat_a.equals(feat_b)


def test_features_only_see_events_strictly_before_the_anchor(tmp_path):
    with one_lead_store(tmp_path, converted_on=None, call_at=ANCHOR, name="at.duckdb") as at_anchor:
        _, at = examples_and_features(at_anchor)
    with one_lead_store(
        tmp_path, converted_on=None, call_at=ANCHOR - timedelta(seconds=1), name="b.duckdb"
    ) as s:
        _, before = examples_and_features(s)
    assert at["task_call_7d"].tolist() == [0]  # a sales call at the anchor is the future
    assert before["task_call_7d"].tolist() == [1]
    assert at["task_web_visit_7d"].tolist() == before["task_web_visit_7d"].tolist() == [1]
    assert at["days_since_created"].tolist() == [20.0]


def test_activities_moved_to_the_converted_contact_still_count_for_the_lead(tmp_path):
    contact = "003000000000000001"
    with one_lead_store(
        tmp_path, converted_on=ANCHOR.date() + timedelta(days=3), call_at=ANCHOR
    ) as store:
        # Salesforce re-parents a converted lead's Tasks to its new Contact
        store.con.execute("UPDATE sf_lead SET ConvertedContactId = ?", [contact])
        store.con.execute("UPDATE sf_task SET WhoId = ?", [contact])
        examples, features = examples_and_features(store)
    assert examples.frame["label"].tolist() == [1]
    assert features["task_web_visit_7d"].tolist() == [1]


def test_open_windows_are_left_out_not_counted_as_negatives(tmp_path):
    with one_lead_store(tmp_path, converted_on=None, call_at=ANCHOR) as store:
        create_events_view(store.con, LEAD)
        closed = build_examples(store.con, LEAD, SPEC, ANCHOR + timedelta(days=30))
        still_open = build_examples(store.con, LEAD, SPEC, ANCHOR + timedelta(days=29, hours=23))
    assert len(closed.frame) == 1 and closed.censored == 0
    assert len(still_open.frame) == 0 and still_open.censored == 1


def test_a_label_event_before_the_anchor_excludes_the_entity(tmp_path):
    with one_lead_store(
        tmp_path, converted_on=ANCHOR.date() - timedelta(days=1), call_at=ANCHOR
    ) as store:
        create_events_view(store.con, LEAD)
        examples = build_examples(store.con, LEAD, SPEC, datetime(2025, 6, 1))
    assert len(examples.frame) == 0 and examples.label_before_anchor == 1


def test_time_split_keeps_test_newest_and_ties_together(org_store):
    create_events_view(org_store.con, LEAD)
    frame = build_examples(org_store.con, LEAD, SPEC, datetime(2025, 6, 30)).frame
    split = split_by_time(frame, "anchor_at", test_fraction=0.2, validation_fraction=0.15)
    assert split.train["anchor_at"].max() < split.valid["anchor_at"].min()
    assert split.valid["anchor_at"].max() < split.test["anchor_at"].min()
    assert len(split.train) + len(split.valid) + len(split.test) == len(frame)


def test_train_score_and_registry_round_trip(org_store, tmp_path):
    outcome = train_prediction(
        org_store.con, SPEC, as_of=datetime(2025, 6, 30), exclude_fields={"lead_score__c"}
    )
    meta = outcome.metadata
    holdout = outcome.holdout
    oracle = roc_auc_score(holdout["label"], holdout["entity_id"].map(org_store.p_true))
    assert (
        meta["metrics"]["auc"] >= 0.9 * oracle
    )  # close to the ceiling set by the true probabilities
    features = meta["features"]
    assert "Industry" in features["categorical"]
    assert "Status" not in features["categorical"]  # excluded by config
    assert "IsConverted" not in features["categorical"]  # encodes the label
    assert (
        "Title" not in features["categorical"]
    )  # one value per lead: an identifier, not a category
    assert "Lead_Score__c" not in features["numeric"]  # the model never reads its own output
    assert "converted_7d" not in outcome.metadata["feature_importance"]
    version = save_version(tmp_path / "models", SPEC.name, outcome.predictor, meta, champion=True)
    champion = load_champion(tmp_path / "models", SPEC.name)
    assert champion is not None and champion.version == version.version
    assert list_versions(tmp_path / "models", SPEC.name)[0].version == version.version
    assert not list((tmp_path / "models").rglob("*.pkl"))
    scores = score_entities(
        org_store.con, SPEC, champion.load(), champion.metadata, score_time=datetime(2025, 7, 1)
    )
    assert len(scores) == 900
    assert scores["score"].between(0, 100).all()
    assert set(scores["tier"]) <= {"A", "B", "C", "D"}


def test_too_little_data_is_a_clear_error(tmp_path):
    with (
        one_lead_store(tmp_path, converted_on=None, call_at=ANCHOR) as store,
        pytest.raises(ScoringError, match="not enough labelled examples"),
    ):
        train_prediction(store.con, SPEC, as_of=datetime(2025, 6, 1))


def test_tiers_and_scores():
    tiers = assign_tiers([0.95, 0.8, 0.55, 0.2, 0.01], {"B": 0.5, "A": 0.8, "C": 0.2}, "D")
    assert tiers.tolist() == ["A", "A", "B", "C", "D"]
    assert to_score([0.0, 0.126, 0.5, 1.0]).tolist() == [0, 13, 50, 100]


def test_categories_of_rare_values_are_left_out_as_identifiers(org_store):
    from scoring.features import select_attributes

    con = org_store.con
    # 900 leads at 300 companies (3 leads each): company names identify, they do not generalise
    con.execute("ALTER TABLE sf_lead ADD COLUMN Company VARCHAR")
    con.execute("UPDATE sf_lead SET Company = 'Company ' || (CAST(substr(Id, 4) AS BIGINT) % 300)")
    con.execute("INSERT INTO source_field VALUES ('Lead', 'Company', 'string', 'VARCHAR')")
    notes: list[str] = []
    categorical, _ = select_attributes(con, LEAD, set(), notes=notes)
    assert "Company" not in categorical
    assert "Industry" in categorical  # 4 values, 225 leads each
    # the distinct count is DuckDB's approximation (about 300)
    assert any(re.match(r"Company: left out \(\d+ values, [23]\.\d rows each", n) for n in notes)


# -- the stratified training sample is drawn before features (issue 17) ------------------------


@pytest.fixture(scope="module")
def contacts_store(tmp_path_factory):
    """6,000 contacts over 400 days, about 20 % won: 3,900 training rows, 780 of them won."""
    store = Store(tmp_path_factory.mktemp("sample") / "contacts.duckdb")
    load_table(store, "contacts", drifting_contacts(6000))
    yield store
    store.close()


def test_a_sampled_training_computes_features_for_the_kept_rows_only(contacts_store):
    spec = contact_spec(sample_above=1000)
    stages: list[str] = []
    outcome = train_prediction(contacts_store.con, spec, as_of=None, progress=stages.append)
    # the same examples, split and sample drawn here with the public functions and the same seed
    con = contacts_store.con
    entity = resolve_entity(con, spec)
    frame = build_examples(con, entity, spec, None, entity_sources(con, entity, spec)).frame
    parts = split_examples(frame, "binary", spec.training)
    y = parts.train["label"].to_numpy()
    kept, _, rate = stratified_sample(parts.train, y, 1000, spec.training.random_seed)
    sampling, split = outcome.metadata["sampling"], outcome.metadata["split"]
    assert sampling["train_rows"] == len(parts.train) == 3900
    assert sampling["sampled_rows"] == split["train"]["n"] == len(kept) < len(parts.train) / 2
    assert sampling["positives"] == int(y.sum()) and sampling["negative_rate"] == round(rate, 6)
    # features were computed once, for the sample, validation and the holdout: never for the
    # 2,300-odd training rows left out
    featured = [
        int(re.search(r"for ([\d,]+) examples", s)[1].replace(",", ""))  # type: ignore[index]
        for s in stages
        if s.startswith("computing point-in-time features")
    ]
    assert featured == [len(kept) + len(parts.valid) + len(parts.test)]
    assert featured[0] < outcome.metadata["examples"]["used"] - 2000
    # the rows fitted are exactly the sample's (every positive of the training part) + validation
    evaluated = set(outcome.fit_ids["evaluated_catboost"])
    assert evaluated == set(kept["entity_id"]) | set(parts.valid["entity_id"])
    assert set(parts.train.loc[y == 1, "entity_id"]) <= evaluated
    assert set(outcome.fit_ids["deployed_catboost"]) == evaluated | set(parts.test["entity_id"])
    assert outcome.metadata["deploy"]["rows"] == featured[0]
    assert set(outcome.holdout["entity_id"]) == set(parts.test["entity_id"])
    # the probe is still fitted whole and sampled, on features computed for its rows
    assert sampling["probe_rows"] == 1000 and 0.5 < sampling["probe_auc_full"] <= 1
    # the same seed draws the same sample and gives the same model
    again = train_prediction(contacts_store.con, spec, as_of=None)
    assert again.metadata["sampling"] == sampling
    pd.testing.assert_frame_equal(again.holdout, outcome.holdout)


def test_features_built_in_batches_train_the_same_model(org_store, monkeypatch):
    spec = PredictionSpec(
        name="lead_conversion",
        label={"event": "converted", "within_days": 30},
        anchor={"event": "campaign_response"},
        exclude_fields=["Status"],
        training=FAST,
    )
    args = {"as_of": datetime(2025, 6, 30), "exclude_fields": {"lead_score__c"}}
    whole = train_prediction(org_store.con, spec, thread_count=1, **args)
    # 585 training, 135 validation and 180 holdout examples: two to six batches each
    monkeypatch.setattr(pipeline, "FEATURE_BATCH_ROWS", 100)
    batched = train_prediction(org_store.con, spec, thread_count=1, **args)
    assert batched.metadata["features"] == whole.metadata["features"]
    assert batched.metadata["metrics"] == whole.metadata["metrics"]
    pd.testing.assert_frame_equal(batched.holdout, whole.holdout)
