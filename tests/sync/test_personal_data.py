"""Personal data stays out of logs and out of other users' reach, for one-shot commands too.

`leadscore -v run` against an org with Segment profiles: the Profile API URLs name people by
email, and none may reach the log; the store, the models and the report are readable by their
owner only, whatever the shell's umask.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import subprocess
import sys
from pathlib import Path

from connector.sandbox import Sandbox
from sync.demo import write_sandbox_files

LEADSCORE = str(Path(sys.executable).parent / "leadscore")
AS_OF = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)

# small, fast training: these tests are about what the run does around the model
FAST = """
[predictions.training]
depths = [4]
l2_leaf_regs = [3.0]
one_hot_max_sizes = [2]
max_iterations = 100
"""


def leadscore(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADSCORE_")}
    return subprocess.run(
        [LEADSCORE, *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
        # a permissive shell: files would be world-readable without leadscore's own umask
        preexec_fn=lambda: os.umask(0o022),
    )


def test_verbose_logs_hold_no_email_and_files_are_private(tmp_path: Path) -> None:
    with Sandbox(tmp_path / "sandbox", leads=200, seed=5, as_of=AS_OF, segment=True) as box:
        box.export_segment()
        config = write_sandbox_files(tmp_path, box.info, command="test")
        config.write_text(config.read_text() + FAST)
        run = leadscore("-v", "run", "--config", str(config))
        assert run.returncode in (0, 4), run.stderr[-3000:]
        assert "/profiles/email:***/" in run.stderr  # the Profile API was read, and logged
        emails = [r[0] for r in box.sql("SELECT Email FROM Lead WHERE Email IS NOT NULL")]
        assert emails
        leaked = [e for e in emails if e in run.stderr or e.replace("@", "%40") in run.stderr]
        assert not leaked, leaked[:3]
        assert box.info["client_secret"] not in run.stderr
        report = tmp_path / "out" / "report.html"
        made = leadscore("report", "--config", str(config), "--out", str(report))
        assert made.returncode == 0, made.stderr

    store = tmp_path / "leadscore.duckdb"
    models = list((tmp_path / "models").rglob("*"))
    files = [store, report, *[m for m in models if m.is_file()]]
    assert len(files) > 3
    for path in files:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
