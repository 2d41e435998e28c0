"""Scoring in batches: the same scores as scoring everything at once, stored run by run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from connector.errors import ConfigError
from connector.sandbox import Sandbox
from connector.store import Store
from scoring.pipeline import score_entities
from scoring.registry import load_champion
from sync.config import Settings, load_settings
from sync.demo import write_sandbox_files
from sync.jobs import run_job, run_push, run_sync
from sync.stages.imports import run_import
from tests.sync.test_scoring_cli import CONFIG, write_project


def batched_project(tmp_path: Path) -> Path:
    config = write_project(tmp_path)
    text = config.read_text().replace(
        'models_dir = "models"\n', 'models_dir = "models"\nbatch_size = 128\n'
    )
    # percentile tiers depend on the whole run: set in SQL after the last batch
    text = text.replace(
        "exclude_fields = []",
        'exclude_fields = []\ntier_by = "percentile"\ntiers = { A = 0.9, B = 0.6 }',
    )
    assert text != CONFIG
    config.write_text(text)
    return config


def test_batched_scores_equal_scoring_everything_at_once(tmp_path):
    settings = load_settings(batched_project(tmp_path))
    assert settings.store.batch_size == 128
    assert run_import(settings).status == "ok"
    for job in ("train", "score"):
        assert run_job(settings, job).status == "ok"
    spec = settings.prediction("upsell")
    champion = load_champion(settings.store.models_dir, "upsell")
    assert champion is not None
    with Store(settings.store.path) as store:
        stored = store.latest_scores("upsell").sort_values("entity_id").reset_index(drop=True)
        whole = score_entities(
            store.read_connection(),
            spec,
            champion.load(),
            champion.metadata,
            score_time=pd.Timestamp(stored["scored_at"].iloc[0]).to_pydatetime(),
        )
    whole = whole.sort_values("entity_id").reset_index(drop=True)
    assert len(stored) == len(whole) == 900  # 8 batches
    assert list(stored["entity_id"]) == list(whole["entity_id"])
    assert (stored["probability"].round(6) == whole["probability"].round(6)).all()
    assert list(stored["tier"]) == list(whole["tier"])
    assert set(stored["tier"]) == {"A", "B", "D"}
    assert 50 < (stored["tier"] == "A").sum() <= 100  # the top 10 %, ties together
    assert list(stored["reasons"]) == list(whole["reasons"])
    # the vacuum job (retention and space) runs by name and keeps the latest run whole
    vacuumed = run_job(settings, "vacuum")
    assert vacuumed.status == "ok" and vacuumed.counts["score_rows_kept"] == 900
    assert vacuumed.to_json()["counts"]["bytes_after"] > 0


def test_a_failed_scoring_run_leaves_no_partial_run(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        first = store.append_scores(
            "p",
            pd.DataFrame(
                {
                    "entity_id": ["a", "b"],
                    "model_version": "v1",
                    "probability": [0.2, 0.9],
                    "score": [20, 90],
                    "tier": ["C", "A"],
                    "reasons": [None, None],
                    "scored_at": pd.Timestamp("2026-01-01"),
                }
            ),
        )
        run = store.start_score_run()
        store.append_scores(
            "p",
            pd.DataFrame(
                {
                    "entity_id": ["a"],
                    "model_version": "v2",
                    "probability": [0.5],
                    "score": [50],
                    "tier": ["B"],
                    "reasons": [None],
                    "scored_at": pd.Timestamp("2026-01-02"),
                }
            ),
            score_run_id=run,
        )
        store.discard_score_run(run)
        latest = store.latest_scores("p")
        assert run > first and list(latest["model_version"]) == ["v1", "v1"]


def _scores(ids: list[str], version: str, day: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity_id": ids,
            "model_version": version,
            "probability": [0.5] * len(ids),
            "score": [50] * len(ids),
            "tier": ["B"] * len(ids),
            "reasons": [None] * len(ids),
            "scored_at": pd.Timestamp(day),
        }
    )


def test_a_run_cut_short_by_a_crash_is_never_read_and_is_deleted_by_the_next(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        first = store.append_scores("p", _scores(["a", "b"], "v1", "2026-01-01"))
        # a streamed run whose process was killed after one batch: no finish, no discard
        cut = store.start_score_run()
        store.append_scores("p", _scores(["a"], "v2", "2026-01-02"), score_run_id=cut)
        # a fresh cycle's partial run after it still overlays the finished run
        store.append_scores("p", _scores(["b"], "v1", "2026-01-03"), partial=True)
        assert store.latest_run_id("p") == first
        latest = store.latest_scores("p").set_index("entity_id")
        assert list(latest["model_version"]) == ["v1", "v1"]
        assert latest.loc["b", "scored_at"] == pd.Timestamp("2026-01-03")
        batches = list(store.latest_score_batches("p", 10))
        assert [len(frame) for _, _, frame in batches] == [2]
    # the next process: its scoring run (or a vacuum) deletes the leftovers
    with Store(tmp_path / "s.duckdb") as store:
        assert store.discard_unfinished_score_runs() == 1
        assert store.discard_unfinished_score_runs() == 0
        assert store.latest_run_id("p") == first


def test_scores_and_ledger_read_by_key_equal_the_filtered_whole(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        store.append_scores("p", _scores(["a", "b", "c"], "v1", "2026-01-01"))
        store.append_scores("p", _scores(["b"], "v2", "2026-01-02"), partial=True)
        whole = store.latest_scores("p")
        some = store.latest_scores("p", entity_ids={"b", "c", "zz"})
        expected = whole[whole["entity_id"].isin({"b", "c"})].reset_index(drop=True)
        pd.testing.assert_frame_equal(some, expected)
        assert list(some["model_version"]) == ["v2", "v1"]
        assert store.latest_scores("p", entity_ids=[]).empty
        assert store.ledger("salesforce", "Lead", record_ids=["a"]).empty


def test_a_push_diffs_and_writes_one_batch_at_a_time(tmp_path):
    sandbox = Sandbox(tmp_path / "sandbox", leads=300, seed=11).start()
    try:
        config = write_sandbox_files(tmp_path, sandbox.info, command="test")
        text = config.read_text().replace("[store]\n", "[store]\nbatch_size = 100\n")
        config.write_text(
            text.replace("[salesforce]\n", "[salesforce]\nbulk_write_threshold = 50\n", 1)
        )
        settings = load_settings(config, environ={})
        first = run_sync(settings)
        assert first.counts["written"] == 300 and first.counts["failed"] == 0
        # one Bulk ingest job per batch of 100 records, none bigger
        jobs = [
            r
            for r in sandbox.request_log
            if r.method == "POST" and r.path.rstrip("/").endswith("/jobs/ingest")
        ]
        assert len(jobs) == 3
        assert int(sandbox.sql("SELECT count(*) FROM Lead WHERE Lead_Score__c IS NULL")[0][0]) == 0
        fields = settings.predictions[0].salesforce.fields
        assert int(sandbox.sql("SELECT count(*) FROM write_log")[0][0]) == len(fields) * 300
        again = run_push(settings)
        assert again.counts["written"] == 0
        counts = again.counts["predictions"]["lead_conversion"]
        assert counts["records"] == 300 and counts["unchanged"] == 300
    finally:
        sandbox.stop()


@pytest.mark.parametrize(
    ("section", "line", "key"),
    [
        ("[store.retention]", "score_change_points = 500", "store.retention.score_change_points"),
        ("[store.retention]", "score_history_days = 0", "store.retention.score_history_days"),
        ("[store]", "batch_size = 1", "store.batch_size"),
    ],
)
def test_out_of_range_store_settings_are_one_line_errors_naming_the_key(
    tmp_path, section, line, key
):
    config = write_project(tmp_path)
    text = config.read_text()
    if section == "[store]":
        text = text.replace("[store]\n", f"[store]\n{line}\n")
    else:
        text = text.replace("[[sources]]", f"{section}\n{line}\n\n[[sources]]", 1)
    config.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_settings(config, environ={})
    message = str(error.value)
    assert key in message and "\n" not in message


def sampled_project(tmp_path: Path, rows: int) -> Settings:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = write_project(tmp_path, rows=rows, intercept=-3.5)  # about 15 % upgrade
    config.write_text(
        config.read_text().replace(
            "[predictions.training]\n", "[predictions.training]\nsample_above = 1000\n"
        )
    )
    settings = load_settings(config)
    assert run_import(settings).status == "ok"
    assert run_job(settings, "train").status == "ok"
    return settings


def test_training_above_sample_above_uses_a_stratified_sample_and_measures_its_cost(tmp_path):
    # 900 accounts: below the threshold, every row is used (the full-data path)
    settings = sampled_project(tmp_path / "small", 900)
    champion = load_champion(settings.store.models_dir, "upsell")
    assert champion is not None and "sampling" not in champion.metadata
    # 5,000 accounts, about 3,250 training rows, and a threshold of 1,000: sampled
    settings = sampled_project(tmp_path / "big", 5000)
    champion = load_champion(settings.store.models_dir, "upsell")
    assert champion is not None
    sampling = champion.metadata["sampling"]
    assert sampling["positives"] < sampling["sampled_rows"] < sampling["train_rows"]
    assert 0 < sampling["negative_rate"] < 1
    assert sampling["probe_rows"] == 1000
    assert 0.5 < sampling["probe_auc_sampled"] <= 1
    assert abs(sampling["auc_loss"]) < 0.1  # measured; small on this easy signal
