"""One failing source or target does not stop the others: the run is partial and an alert names it.

A revoked Segment Profile API token (401) during `leadscore run`: Salesforce is still pulled and
the scores still reach Salesforce; the next good run clears the alert.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

from typer.testing import CliRunner

from connector.sandbox import Sandbox
from sync.cli import app
from sync.demo import write_sandbox_files

AS_OF = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)

# small, fast training: these tests are about what the run does around the model
FAST = """
[predictions.training]
depths = [4]
l2_leaf_regs = [3.0]
one_hot_max_sizes = [2]
max_iterations = 100
"""


def test_a_revoked_segment_token_leaves_salesforce_written_and_alerts(
    tmp_path: Path, webhook
) -> None:
    with Sandbox(tmp_path / "sandbox", leads=150, seed=5, as_of=AS_OF, segment=True) as box:
        box.export_segment()
        config = write_sandbox_files(tmp_path, box.info, command="test")
        config.write_text(config.read_text() + FAST)
        secrets = tmp_path / "secrets.toml"
        good = secrets.read_text()
        token = box.info["profile_api_token"]
        assert token in good
        secrets.write_text(
            good.replace(token, "revoked-token") + f'\n[alerts]\nwebhook_url = "{webhook.url}"\n'
        )
        runner = CliRunner()
        result = runner.invoke(app, ["run", "--config", str(config), "--json"], env={})
        assert result.exit_code == 4, result.output  # partial
        out = json.loads(result.stdout)
        assert out["status"] == "partial"
        pull = out["counts"]["jobs"]["pull"]["counts"]
        assert pull["parts"]["segment"].startswith("failed: ")
        assert "401" in pull["parts"]["segment"] or "rejected" in pull["parts"]["segment"]
        assert pull["streams"]["Lead"]["fetched"] == 150
        # the scores reached Salesforce all the same
        written = box.sql("SELECT count(DISTINCT record_id) FROM write_log")[0][0]
        assert written > 0 and out["counts"]["written"] > 0
        alerts = [t for t in webhook.texts if "segment failed" in t]
        assert len(alerts) == 1, webhook.texts
        assert re.search(r"FIRING: \w+: segment failed", alerts[0])

        # without --json, the summary says which part failed and why
        text = runner.invoke(app, ["pull", "--config", str(config)], env={})
        assert text.exit_code == 4, text.output
        assert "segment" in text.output and "failed:" in text.output

        secrets.write_text(good + f'\n[alerts]\nwebhook_url = "{webhook.url}"\n')
        again = runner.invoke(app, ["run", "--config", str(config), "--json"], env={})
        assert again.exit_code == 0, again.output
        assert [t for t in webhook.texts if "RESOLVED" in t and "segment" in t]
