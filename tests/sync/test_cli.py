"""The ``leadscore`` command as a user runs it: exit codes, one-line errors, JSON output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connector.sandbox import Sandbox
from connector.store import Store
from sync.demo import write_sandbox_files
from tests.configs import edit_config

LEADSCORE = str(Path(sys.executable).parent / "leadscore")

CONFIG = """
[store]
path = "store.duckdb"
[salesforce]
login_url = "{url}"
[salesforce.streams.Lead]
fields = ["Industry"]
[[predictions]]
name = "lead_conversion"
label = {{ event = "converted", within_days = 30 }}
"""


def leadscore(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # as cron and systemd run it: no LEADSCORE_ settings, no terminal size (pytest-xdist's
    # workers export COLUMNS)
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LEADSCORE_") and k not in ("COLUMNS", "LINES")
    }
    environ.update(env or {})
    return subprocess.run(
        [LEADSCORE, *args], capture_output=True, text=True, timeout=120, env=environ, check=False
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_unknown_key_in_config(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        CONFIG.format(url="https://login.salesforce.com") + "\n[store.extra]\nx = 1\n"
    )
    result = leadscore("pull", "--config", str(config))
    assert result.returncode == 2
    assert_one_line_error(result, str(config), "store.extra", "unknown key")


def test_missing_credentials(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(url="https://login.salesforce.com"))
    result = leadscore("pull", "--config", str(config))
    assert_one_line_error(result, "credentials are missing", "LEADSCORE_SALESFORCE__CLIENT_ID")
    # the failed run is in the run log, and the store is usable afterwards
    status = leadscore("status", "--config", str(config), "--json")
    assert status.returncode == 0
    runs = json.loads(status.stdout)["runs"]
    assert runs[0]["job"] == "pull" and runs[0]["status"] == "failed"


@pytest.mark.parametrize("secret_env", [{"LEADSCORE_SALESFORCE__CLIENT_SECRET": "hunter2-secret"}])
def test_unreachable_salesforce_is_one_line_and_never_shows_secrets(tmp_path, secret_env):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(url="https://127.0.0.1:9"))
    edit_config(config, add={"salesforce.max_attempts": 1})
    env = {"LEADSCORE_SALESFORCE__CLIENT_ID": "id", **secret_env}
    result = leadscore("pull", "--config", str(config), env=env)
    assert_one_line_error(result, "127.0.0.1:9", "could not be reached", "salesforce.login_url")
    assert "hunter2" not in result.stderr + result.stdout


def test_status_of_a_fresh_config(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(url="https://login.salesforce.com"))
    result = leadscore("status", "--config", str(config))
    assert result.returncode == 0
    assert "no runs yet" in result.stdout
    assert "not trained yet" in result.stdout


def test_help_shows_config_sections_literally():
    # rich would read [schedule] and [[sources]] as markup and print nothing in their place
    result = leadscore("--help", env={"COLUMNS": "200"})
    assert result.returncode == 0
    assert "the [[sources]] tables" in result.stdout
    assert "on their [schedule] until stopped" in result.stdout
    assert "[]" not in result.stdout


def test_a_one_shot_command_redacts_secrets_from_its_verbose_log(tmp_path):
    # The redacting filter is installed by every command, not only `serve`: with -v a pull logs
    # its HTTP calls, and here the login path holds the configured secret's value.
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(url="https://127.0.0.1:9/hunter2-secret"))
    edit_config(config, add={"salesforce.max_attempts": 1})
    env = {
        "LEADSCORE_SALESFORCE__CLIENT_ID": "id",
        "LEADSCORE_SALESFORCE__CLIENT_SECRET": "hunter2-secret",
    }
    result = leadscore("-v", "pull", "--config", str(config), env=env)
    assert result.returncode != 0
    log_lines = [line for line in result.stderr.splitlines() if not line.startswith("error: ")]
    assert any(
        "DEBUG leadscore.http: POST /***/services/oauth2/token" in line for line in log_lines
    )
    assert not [line for line in log_lines if "hunter2" in line]


def test_a_failing_command_with_json_prints_one_error_object(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(url="https://login.salesforce.com"))
    result = leadscore("pull", "--config", str(config), "--json")
    assert_one_line_error(result, "credentials are missing")
    data = json.loads(result.stdout)
    assert data["status"] == "error" and data["exit_code"] == result.returncode == 2
    assert "credentials are missing" in data["error"] and data["where"] == "leadscore pull"
    # the same for a command that is not a job, and for a config that does not exist
    missing = leadscore("models", "list", "--config", str(tmp_path / "nope.toml"), "--json")
    data = json.loads(missing.stdout)
    assert data["status"] == "error" and data["exit_code"] == missing.returncode != 0
    assert data["where"] == "leadscore models list" and "nope.toml" in data["error"]


@pytest.mark.parametrize("command", [["--help"], ["status"]])
def test_help_and_status_do_not_import_the_heavy_libraries(tmp_path, command):
    # start-up time is dominated by imports: pandas, CatBoost, scikit-learn and matplotlib
    # take ~2 s together; `--help` and `status` need none of them
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(url="https://login.salesforce.com"))
    args = command if command == ["--help"] else [*command, "--config", str(config)]
    result = subprocess.run(
        [sys.executable, "-X", "importtime", LEADSCORE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    heavy = {"pandas", "catboost", "sklearn", "scipy", "matplotlib", "pyarrow"} & imported
    assert not heavy, f"`leadscore {command[0]}` imports {sorted(heavy)}"


BAD_CONFIGS = {
    "stream_not_an_identifier": (
        lambda text: text.replace("[salesforce.streams.Lead]", '[salesforce.streams."Lead;x"]'),
        ["salesforce.streams.'Lead;x'", "not a Salesforce object API name"],
    ),
    "cursor_field_not_an_identifier": (
        lambda text: text.replace(
            'fields = ["Industry"]', 'fields = ["Industry"]\ncursor_field = "a b"'
        ),
        ["salesforce.streams.Lead.cursor_field", "not a field API name"],
    ),
    "missing_ca_bundle": (
        lambda text: text.replace("[salesforce]\n", '[salesforce]\nca_bundle = "missing/ca.pem"\n'),
        ["salesforce.ca_bundle", "missing/ca.pem does not exist"],
    ),
    "deeply_nested_value": (
        lambda text: text + "[store.x]\ny = " + "[" * 3000 + "]" * 3000 + "\n",
        ["invalid TOML", "nested too deeply"],
    ),
    "quoted_number": (
        lambda text: text.replace("[salesforce]\n", '[salesforce]\npage_size = "2000"\n'),
        ["salesforce.page_size: must be a number, not the string '2000'", "without quotes"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_expected_config_problems_are_one_line_before_any_login(tmp_path, case):
    # the login URL cannot be reached: each problem must be reported before anything connects
    edit, fragments = BAD_CONFIGS[case]
    config = tmp_path / "config.toml"
    config.write_text(edit(CONFIG.format(url="https://127.0.0.1:9")))
    env = {"LEADSCORE_SALESFORCE__CLIENT_ID": "id", "LEADSCORE_SALESFORCE__CLIENT_SECRET": "s"}
    result = leadscore("pull", "--config", str(config), env=env)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, str(config), *fragments)
    assert "unexpected" not in result.stderr and "could not be reached" not in result.stderr


def test_a_config_that_is_not_utf8_names_the_byte(tmp_path):
    config = tmp_path / "config.toml"
    text = CONFIG.format(url="https://login.salesforce.com") + "# Zurich office: caf\xe9\n"
    config.write_bytes(text.encode("latin-1"))
    result = leadscore("status", "--config", str(config))
    offset = text.index("\xe9")
    assert result.returncode == 2
    assert_one_line_error(result, "not UTF-8", f"0xe9 at offset {offset}", "save the file as UTF-8")
    assert "check the path" not in result.stderr


def test_a_misspelt_cursor_field_is_reported_under_its_own_key(tmp_path):
    with Sandbox(tmp_path / "sandbox", leads=60, seed=3) as box:
        config = write_sandbox_files(tmp_path, box.info, command="test")
        text = config.read_text()
        config.write_text(
            text.replace(
                "[salesforce.streams.Lead]\n",
                '[salesforce.streams.Lead]\ncursor_field = "SystemModstap"\n',
                1,
            )
        )
        result = leadscore("pull", "--config", str(config))
    assert result.returncode == 2
    assert_one_line_error(
        result,
        "salesforce.streams.Lead.cursor_field: field 'SystemModstap' does not exist on Lead",
        "did you mean 'SystemModstamp'?",
    )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB file system (tmpfs), for what a full disk does to a run."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_is_one_line_and_its_unfinished_runs_are_closed(tmp_path, small_disk):
    rows = "\n".join(f"A{i},{'x' * 40}{i},{i % 2}" for i in range(60_000))
    (tmp_path / "accounts.csv").write_text("Account ID,Text,Upgraded\n" + rows + "\n")
    config = tmp_path / "config.toml"
    config.write_text(
        f'[store]\npath = "{small_disk / "store.duckdb"}"\nmodels_dir = "models"\n'
        '[[sources]]\npath = "accounts.csv"\ntable = "accounts"\nid_column = "Account ID"\n'
        '[[predictions]]\nname = "upsell"\nentity = "account"\n'
        'entity_table = { table = "accounts", id_column = "Account_ID" }\n'
        'label = { field = "Upgraded" }\n'
    )
    result = leadscore("import", "--config", str(config), "--json")  # --json: no progress
    assert_one_line_error(
        result, f"the store {small_disk / 'store.duckdb'} ran out of disk space", "free at least"
    )
    assert "unexpected" not in result.stderr
    # a run that could not record its end (the write that would have was refused) ...
    with Store(small_disk / "store.duckdb") as store:
        run_id = store.start_run("push")
    # ... is closed at the next start, by any job that takes the store
    leadscore("import", "--config", str(config))
    with Store(small_disk / "store.duckdb") as store:
        runs = {r["run_id"]: r for r in store.recent_runs(10)}
    assert runs[run_id]["status"] == "failed"
    assert runs[run_id]["error"].startswith("abandoned:")


def test_output_outside_a_terminal_is_a_clean_log(tmp_path):
    # subprocess pipes: what cron and systemd see
    with Sandbox(tmp_path / "sandbox", leads=200, seed=4) as box:
        config = str(write_sandbox_files(tmp_path, box.info, command="test"))
        assert leadscore("pull", "--config", config).returncode == 0
        again = leadscore("pull", "--config", config)  # nothing new: 0 of 0 everywhere
        assert again.returncode == 0, again.stderr
        assert "0/0" not in again.stderr and "━" not in again.stderr
        train = leadscore("train", "--config", config)
        assert train.returncode == 0, train.stderr
        assert "search: depth" in train.stderr  # training says what it is doing
        dry = leadscore("setup", "--dry-run", "--config", config, "--json")
        assert dry.returncode in (0, 2), dry.stderr
        assert json.loads(dry.stdout)["seconds"] > 0
        status = leadscore("status", "--config", config)
    assert status.returncode == 0, status.stderr
    assert "…" not in status.stdout  # no cell cut at 80 columns
    lines = status.stdout.splitlines()
    header = next(line for line in lines if line.startswith("job "))
    assert "last error" in header  # the whole header on one line
    # one line per run, each with its year
    runs = [line for line in lines if line.strip().split(" ")[0].isdigit()]
    assert len(runs) == 4 and all(f"{datetime.now(UTC).year}-" in line for line in runs)


def test_a_client_started_beside_a_sandbox_is_told_to_wait_or_that_it_is_not_running(tmp_path):
    workdir = tmp_path / "org"
    config = workdir / "config.toml"
    sandbox = subprocess.Popen(
        [LEADSCORE, "sandbox", "--workdir", str(workdir), "--leads", "300"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (workdir / "sandbox.state").exists():
            assert time.monotonic() < deadline and sandbox.poll() is None
            time.sleep(0.05)
        early = leadscore("status", "--config", str(config))
        if not config.exists():  # still generating: the usual case with a fresh org
            assert_one_line_error(early, "still generating its org (waiting)")
        while "serving" not in (workdir / "sandbox.state").read_text():
            assert time.monotonic() < deadline and sandbox.poll() is None
            time.sleep(0.1)
        assert leadscore("status", "--config", str(config)).returncode == 0
    finally:
        sandbox.send_signal(signal.SIGINT)
        sandbox.communicate(timeout=30)
    stopped = leadscore("status", "--config", str(config))
    assert_one_line_error(stopped, "is not running", "leadscore sandbox --workdir")


DEMO_ARGS = ("--leads", "200", "--seed", "9", "--json")


def test_the_demo_summary_speaks_to_sales_ops_and_one_seed_gives_one_result(tmp_path):
    # the two demos run side by side: each is mostly waiting on its own sandbox and subprocess
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LEADSCORE_")}
    processes = [
        subprocess.Popen(
            [LEADSCORE, "demo", "--workdir", str(tmp_path / name), *DEMO_ARGS],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environ,
        )
        for name in ("first", "second")
    ]
    runs = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=180)
        assert process.returncode == 0, stderr
        runs.append(json.loads(stdout))
    demo = runs[0]
    assert sum(demo["tiers"].values()) == demo["scored"] and set(demo["tiers"]) <= set("ABCD")
    assert "Lead.Lead_Score__c" in demo["fields_written"]
    assert demo["lift"].startswith("On ") and "the top 10% by score" in demo["lift"]
    # the same seed (on the same day) gives the same org, the same model and the same figures
    same = ("leads", "pulled", "scored", "written", "model_auc", "oracle_auc", "tiers")
    assert {k: runs[0][k] for k in same} == {k: runs[1][k] for k in same}


def test_serve_takes_the_health_endpoint_address_from_the_command_line(tmp_path):
    # the container's entrypoint serves /healthz on every interface whatever the config says
    config = tmp_path / "config.toml"
    config.write_text(
        CONFIG.format(url="https://login.salesforce.com")
        + '[schedule]\ntrain = { cron = "0 3 * * *" }\n'
    )
    command = ["serve", "--config", str(config), "--health-port", "0"]
    process = subprocess.Popen(
        [LEADSCORE, *command, "--health-host", "127.0.0.2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "health endpoint" not in line:
            assert time.monotonic() < deadline and process.poll() is None
            line = process.stderr.readline()
        assert "http://127.0.0.2:" in line
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0
