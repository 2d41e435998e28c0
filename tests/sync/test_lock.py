"""The run lock across threads and processes, stale locks, and the jobs' use of it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.errors import Busy, ConfigError
from connector.store import Store, utc_now
from connector.store.runs import record_run
from sync.config import load_settings
from sync.jobs import read_status, run_job
from sync.lock import RunLock, lock_path

from .conftest import write_config

ROOT = Path(__file__).resolve().parents[2]

HOLDER = """
import sys, time
from pathlib import Path
from sync.lock import RunLock
RunLock(Path(sys.argv[1]), sys.argv[2]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """Another process holding the store's run lock for a 'push'."""
    store = tmp_path / "store" / "leadscore.duckdb"
    path = lock_path(store)
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), "push"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "locked"
    yield process, path
    process.kill()
    process.wait()


def test_a_second_process_is_refused_with_the_holder_named_and_waits_when_asked(holder):
    process, path = holder
    with pytest.raises(Busy) as info:
        RunLock(path, "sync").acquire()
    message = str(info.value)
    assert f"pid {process.pid}" in message and "push" in message and str(path) in message
    assert info.value.exit_code == 5

    waited: list[object] = []
    started = time.monotonic()
    with pytest.raises(Busy):
        RunLock(path, "sync", wait_seconds=0.6, on_wait=waited.append).acquire()
    assert time.monotonic() - started >= 0.6
    assert len(waited) == 1 and waited[0].pid == process.pid


def test_a_lock_left_by_a_killed_process_is_taken_over(holder):
    process, path = holder
    assert RunLock(path, "status").holder().pid == process.pid
    process.send_signal(signal.SIGKILL)
    process.wait()
    # the file still names the dead process, but the kernel released its flock
    lock = RunLock(path, "sync", wait_seconds=2).acquire()
    try:
        assert lock.took_over is not None and lock.took_over.pid == process.pid
        assert lock.holder().pid == os.getpid() and lock.holder().job == "sync"
    finally:
        lock.release()
    # a clean release leaves nothing to take over
    again = RunLock(path, "sync").acquire()
    assert again.took_over is None
    again.release()


def test_reentrant_in_a_thread_and_exclusive_between_threads(tmp_path):
    path = tmp_path / "x.lock"
    outer = RunLock(path, "sync").acquire()
    inner = RunLock(path, "pull").acquire()  # sync's pull, same thread
    errors: list[BaseException] = []

    def other() -> None:
        try:
            RunLock(path, "push").acquire()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert len(errors) == 1 and isinstance(errors[0], Busy)
    inner.release()
    assert RunLock(path, "x").holder() is not None  # still held by the outer acquire
    outer.release()
    assert RunLock(path, "x").holder() is None


def test_an_unwritable_store_directory_is_one_clear_line(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store directory should be")
    with pytest.raises(ConfigError) as info:
        RunLock(blocker / "leadscore.duckdb.lock", "pull").acquire()
    assert "cannot create the lock file" in str(info.value)
    assert "store.path" in str(info.value)


def test_jobs_refuse_to_overlap_with_a_run_in_another_process(tmp_path, holder):
    process, _ = holder
    config = write_config(tmp_path, "\n[schedule]\nlock_wait_seconds = 0\n")
    settings = load_settings(config, environ={})
    with pytest.raises(Busy) as info:
        run_job(settings, "pull")
    assert "push (pid" in str(info.value)
    status = read_status(settings)
    assert status["busy"].startswith(f"push (pid {process.pid}")

    # the CLI: one line, exit code 5
    result = subprocess.run(
        [str(Path(sys.executable).parent / "leadscore"), "run", "push", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "LEADSCORE_SALESFORCE__CLIENT_ID": "x"},
        check=False,
    )
    assert result.returncode == 5, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is busy" in lines[0] and f"pid {process.pid}" in lines[0]


def test_runs_left_running_by_a_dead_process_are_marked_failed(tmp_path, holder):
    process, _ = holder
    config = write_config(tmp_path, "\n[schedule]\nlock_wait_seconds = 5\n")
    settings = load_settings(config, environ={})
    with Store(settings.store.path) as store:
        run_id = store.start_run("push")  # what a killed `serve` leaves behind
        record_run(store, "pull", started_at=utc_now(), finished_at=utc_now(), status="ok")
    process.send_signal(signal.SIGKILL)
    process.wait()
    with pytest.raises(ConfigError):  # the job itself fails: no credentials
        run_job(settings, "pull")
    with Store(settings.store.path) as store:
        runs = {r["run_id"]: r for r in store.recent_runs(10)}
    assert runs[run_id]["status"] == "failed"
    assert "abandoned" in runs[run_id]["error"] and f"pid {process.pid}" in runs[run_id]["error"]


def test_unknown_job_name_is_one_clear_line(tmp_path):
    settings = load_settings(write_config(tmp_path), environ={})
    with pytest.raises(ConfigError) as info:
        run_job(settings, "synk")
    assert "no job named 'synk' (did you mean 'sync'?)" in str(info.value)
