"""setup's org steps: permission sets, field grants, assignments and the list view, idempotent."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from connector.errors import ConfigError
from connector.salesforce.org import (
    ListViewSpec,
    find_permission_set,
    read_list_view,
    save_list_view,
)
from connector.salesforce.settings import SetupSettings
from connector.sandbox import Sandbox
from sync.cli import app
from sync.demo import write_sandbox_files
from sync.org_setup import OutputField, remove_access, setup_access
from tests.connector.test_salesforce import AS_OF, client_for

OUTPUTS = [
    OutputField("Lead", "score", "Lead_Score__c"),
    OutputField("Lead", "tier", "Lead_Tier__c"),
    OutputField("Lead", "reasons", "Lead_Score_Reasons__c"),
]
TIERS = ["A", "B", "C", "D"]


def integration_id(box: Sandbox) -> str:
    return box.sql("SELECT Id FROM User WHERE Username = ?", [box.info["username"]])[0][0]


def test_setup_is_idempotent_dry_runs_and_removes(tmp_path):
    with Sandbox(tmp_path, leads=30, seed=31, as_of=AS_OF, field_security="enforced") as box:
        client = client_for(box)
        rep = box.info["sales_users"][0]["username"]
        setup = SetupSettings(sales_users=[rep])
        me = integration_id(box)
        planned = setup_access(client, setup, OUTPUTS, TIERS, me, dry_run=True)
        assert {s.action for s in planned} == {"would create"}
        assert find_permission_set(client, "Leadscore_Integration") is None
        made = setup_access(client, setup, OUTPUTS, TIERS, me)
        assert [(s.object, s.action) for s in made].count(("FieldPermissions", "created")) == 6
        assert {s.name for s in made if s.object == "PermissionSetAssignment"} == {
            "integration user",
            rep,
        }
        view = read_list_view(client, "Lead.Hot_leads_leadscore")
        assert view is not None and ("Lead_Tier__c", "equals", "A,B") in view.filters
        again = setup_access(client, setup, OUTPUTS, TIERS, me)
        assert {s.action for s in again} == {"exists"} and len(again) == len(made)
        removed = remove_access(client, setup, ["Lead"])
        assert [s.object for s in removed] == ["ListView", "PermissionSet", "PermissionSet"]
        assert remove_access(client, setup, ["Lead"]) == []


def test_bad_input_is_one_line_and_leaves_nothing_half_made(tmp_path):
    with Sandbox(tmp_path, leads=30, seed=32, as_of=AS_OF) as box:
        client = client_for(box)
        me = integration_id(box)
        with pytest.raises(ConfigError, match=r"no active user ghost@example\.com") as raised:
            setup_access(
                client, SetupSettings(sales_users=["ghost@example.com"]), OUTPUTS, TIERS, me
            )
        assert "nothing was changed" in raised.value.hint
        other = SetupSettings(list_view_tiers=["C"])
        setup_access(client, other, OUTPUTS, TIERS, me)
        with pytest.raises(ConfigError, match="exists with other columns or filters") as raised:
            setup_access(client, SetupSettings(), OUTPUTS, TIERS, me)
        assert "list_view_name" in raised.value.hint
        remove_access(client, other, ["Lead"])
    with Sandbox(tmp_path / "b", leads=10, seed=33, as_of=AS_OF) as box:
        client = client_for(box)
        # A list view of that name made by someone else: the permission sets this run creates
        # before it meets the list view are taken away again.
        save_list_view(
            client,
            ListViewSpec("Lead.Hot_leads_leadscore", "Theirs", ("FULL_NAME",), ()),
            create=True,
        )
        with pytest.raises(ConfigError, match="exists with other columns") as raised:
            setup_access(client, SetupSettings(), OUTPUTS, TIERS, integration_id(box))
        assert (
            "undone: " in raised.value.hint
            and "permission set Leadscore_Sales" in raised.value.hint
        )
        assert find_permission_set(client, "Leadscore_Integration") is None
        assert find_permission_set(client, "Leadscore_Sales") is None


def test_setup_without_the_rights_to_grant_is_one_line(tmp_path):
    with Sandbox(tmp_path / "org", leads=20, seed=34, as_of=AS_OF, setup_rights=False) as box:
        config = write_sandbox_files(tmp_path, box.info, command="test")
        result = CliRunner().invoke(app, ["setup", "--config", str(config)])
        assert result.exit_code == 2
        lines = [line for line in result.output.splitlines() if not line.startswith("·")]
        assert len(lines) == 1 and lines[0].startswith("error: creating permission set")
        assert "INSUFFICIENT_ACCESS_OR_READONLY" in lines[0]
        assert (
            "Manage Profiles and Permission Sets" in lines[0] and "nothing was changed" in lines[0]
        )
