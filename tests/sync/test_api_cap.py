"""The daily API share is a cap: `serve` against a small allowance never spends past the share.

Also the operator's rehearsal tools: `leadscore sandbox --daily-api-limit N --faults FILE`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connector.sandbox import Sandbox
from connector.sandbox.faults import LOST_ANSWER, RequestInfo, load_fault_plan
from sync.cli import app
from sync.config import load_settings
from sync.demo import write_sandbox_files
from sync.jobs import run_job

LEADSCORE = str(Path(sys.executable).parent / "leadscore")
ALLOWANCE = 40
SHARE = 0.5  # runs stop at 20 of 40 daily calls


def test_serve_never_spends_past_the_share_of_the_daily_allowance(tmp_path: Path) -> None:
    with Sandbox(tmp_path / "sandbox", leads=60, seed=3, daily_api_limit=ALLOWANCE) as box:
        config = write_sandbox_files(tmp_path, box.info, command="test")
        config.write_text(
            config.read_text().replace(
                "[salesforce]\n", f"[salesforce]\nmax_share_of_daily_limit = {SHARE}\n", 1
            )
            + '\n[schedule]\npull = { every = "1s" }\n'
        )
        assert load_settings(config, environ={}).salesforce.max_share_of_daily_limit == SHARE
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEADSCORE_")}
        process = subprocess.Popen(
            [LEADSCORE, "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            deadline = time.monotonic() + 60
            # a pull spends about ten calls: two runs reach the share, the rest must spend none
            while box.api_calls() < ALLOWANCE * SHARE - 5:
                assert time.monotonic() < deadline, "serve made no progress"
                time.sleep(0.1)
            blocked = len(box.request_log)
            time.sleep(4)  # several more scheduled runs (one a second)
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)
        finally:
            process.kill()
        assert box.api_calls() <= ALLOWANCE * SHARE, stderr
        assert not [r for r in box.request_log if r.status == 403]
        # the later runs only read /limits (not counted) and stopped before any counted call
        later = {r.category for r in box.request_log[blocked:]}
        assert later <= {"auth", "limits", "describe", "query"}
        assert "used 20 of 40 daily API calls" in stderr or "20 of 40" in stderr, stderr[-2000:]


def test_a_one_shot_run_at_the_share_spends_no_counted_call(tmp_path: Path) -> None:
    with Sandbox(tmp_path / "sandbox", leads=60, seed=3, daily_api_limit=ALLOWANCE) as box:
        config = write_sandbox_files(tmp_path, box.info, command="test")
        settings = load_settings(config, environ={})
        runs = 0
        while True:
            runs += 1
            try:
                run_job(settings, "pull")
            except Exception as exc:  # the budget stops the run: exit 3 from the CLI
                assert "stopped before exceeding the API budget" in str(exc)
                break
            assert runs < 10
        used = box.api_calls()
        assert used <= ALLOWANCE * 0.8
        result = CliRunner().invoke(app, ["pull", "--config", str(config)], env={})
        assert result.exit_code == 3, result.output
        assert box.api_calls() == used  # only /limits, which is not counted


def test_fault_rules_load_from_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "faults.toml"
    toml.write_text(
        'seed = 2\nlock_rate = 0.5\n[[rules]]\nkind = "lost_answer"\nat = [1]\n'
        'methods = ["PATCH"]\ncategories = ["composite"]\n'
    )
    plan = load_fault_plan(toml)
    assert plan.lock_rate == 0.5
    assert plan.on_request(RequestInfo("GET", "/x", "composite")) is None
    assert plan.on_request(RequestInfo("PATCH", "/x", "composite")) is LOST_ANSWER
    assert plan.on_request(RequestInfo("PATCH", "/x", "composite")) is None
    json_file = tmp_path / "faults.json"
    json_file.write_text('{"rules": [{"kind": "unavailable", "rate": 1.0}]}')
    fault = load_fault_plan(json_file).on_request(RequestInfo("GET", "/q", "query"))
    assert fault is not None and fault.status == 503


@pytest.mark.parametrize(
    "text, message",
    [
        ('[[rules]]\nkind = "meltdown"\n', "rule 1: unknown fault kind 'meltdown'"),
        ("lock_rat = 0.1\n", "unknown key(s) lock_rat"),
        ("rules = [", "cannot read fault rules"),
    ],
)
def test_sandbox_rejects_a_bad_fault_file_in_one_line(
    tmp_path: Path, text: str, message: str
) -> None:
    faults = tmp_path / "faults.toml"
    faults.write_text(text)
    result = CliRunner().invoke(
        app,
        ["sandbox", "--workdir", str(tmp_path / "box"), "--leads", "10", "--faults", str(faults)],
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "box" / "sandbox").exists()  # nothing generated


def test_sandbox_command_serves_the_allowance_and_the_fault_rules(tmp_path: Path) -> None:
    """`leadscore sandbox --daily-api-limit N --faults FILE`, as an operator rehearses."""
    from connector.errors import TransientError
    from connector.salesforce import SalesforceClient, describe_object, read_limits
    from sync.run import salesforce_settings

    faults = tmp_path / "faults.json"
    faults.write_text(
        '{"rules": [{"kind": "unavailable", "rate": 1.0, "categories": ["describe"]}]}'
    )
    workdir = tmp_path / "box"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADSCORE_")}
    process = subprocess.Popen(
        [
            *(LEADSCORE, "sandbox", "--workdir", str(workdir), "--leads", "30"),
            *("--daily-api-limit", "25", "--faults", str(faults)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not (workdir / "sandbox.json").exists():
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the sandbox did not start"
            time.sleep(0.2)
        time.sleep(0.5)  # the config files are written just before it serves
        config = load_settings(workdir / "config.toml", environ={})
        settings = salesforce_settings(config).model_copy(update={"max_attempts": 1})
        with SalesforceClient(settings, sleep=lambda s: None) as client:
            assert read_limits(client)["DailyApiRequests"]["Max"] == 25
            with pytest.raises(TransientError, match="unavailable"):
                describe_object(client, "Lead")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        finally:
            process.kill()
