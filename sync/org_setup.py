"""The part of ``leadscore setup`` that makes the org ready for reps.

Field-level security through two permission sets, and the list view of the top tiers.

Every change is a :class:`Step` (object, name, action, detail, fix). A second run finds
everything in place and changes nothing; ``dry_run`` lists what would change; ``remove`` takes
it all away. A failure undoes what this run created, newest first, and the error says what
remains if undoing failed too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from connector.errors import ConfigError, LeadscoreError
from connector.salesforce import SalesforceClient
from connector.salesforce.org import (
    ListViewSpec,
    assign,
    assignments,
    column_token,
    create_permission_set,
    delete_list_view,
    delete_record,
    field_permissions,
    find_permission_set,
    find_users,
    grant_field,
    read_list_view,
    save_list_view,
    update_record,
)
from connector.salesforce.settings import SetupSettings
from sync.progress import Reporter, SilentReporter

SILENT = SilentReporter()
# Columns of the list view: who, where, then what leadscore wrote (in this order when present).
LIST_VIEW_KINDS = ("score", "tier", "reasons", "trend", "score_change")
CLOSED_STATUSES = "Closed - Converted,Closed - Not Converted"


@dataclass
class Step:
    """One change ``setup`` makes, made, or would make.

    Attributes:
        object: ``PermissionSet``, ``FieldPermissions``, ``PermissionSetAssignment`` or
            ``ListView``.
        name: What it is called (API name, ``Object.Field``, username).
        action: ``exists``, ``created``, ``updated``, ``removed``, ``would create``,
            ``would update``, ``would remove`` or ``problem``.
        detail: What it grants or shows.
        fix: How to fix a problem.
    """

    object: str
    name: str
    action: str
    detail: str = ""
    fix: str = ""


@dataclass
class _Run:
    """Steps of one setup run and how to undo what it created."""

    dry_run: bool
    reporter: Reporter
    steps: list[Step] = field(default_factory=list)
    undo: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    def record(self, step: Step) -> Step:
        self.steps.append(step)
        return step


@dataclass(frozen=True)
class OutputField:
    """A field leadscore writes: object, output kind, field name."""

    sobject: str
    kind: str
    name: str


def list_view_spec(
    setup: SetupSettings, sobject: str, outputs: Sequence[OutputField], tiers: Sequence[str]
) -> ListViewSpec:
    """The list view leadscore wants: open records of the top tiers, leadscore's columns.

    Args:
        setup: ``[salesforce.setup]``.
        sobject: The object (Lead).
        outputs: Output fields on that object.
        tiers: Tier names, best first (the prediction's).

    Returns:
        The list view.
    """
    by_kind = {o.kind: o.name for o in outputs if o.sobject.lower() == sobject.lower()}
    columns = [column_token(sobject, "Name")]
    if sobject.lower() == "lead":
        columns += [column_token(sobject, "Company"), column_token(sobject, "Status")]
    columns += [column_token(sobject, by_kind[k]) for k in LIST_VIEW_KINDS if k in by_kind]
    filters: list[tuple[str, str, str]] = []
    if "tier" in by_kind:
        wanted = setup.list_view_tiers or list(tiers[:2])
        filters.append((column_token(sobject, by_kind["tier"]), "equals", ",".join(wanted)))
    if sobject.lower() == "lead":
        filters.append(("LEAD.CONVERTED", "equals", "0"))
        filters.append(("LEAD.STATUS", "notEqual", CLOSED_STATUSES))
    return ListViewSpec(
        full_name=f"{sobject}.{setup.list_view_name}",
        label=setup.list_view_label,
        columns=tuple(columns),
        filters=tuple(filters),
    )


def setup_access(
    client: SalesforceClient,
    setup: SetupSettings,
    outputs: Sequence[OutputField],
    tiers: Sequence[str],
    integration_user_id: str,
    *,
    reads: Sequence[OutputField] = (),
    dry_run: bool = False,
    reporter: Reporter = SILENT,
) -> list[Step]:
    """Grant field-level security through permission sets and create the list view.

    Args:
        client: Connected client (the integration user).
        setup: ``[salesforce.setup]``.
        outputs: The output fields (they exist, visible or not).
        tiers: Tier names, best first.
        integration_user_id: The user the integration set is assigned to.
        reads: Custom fields leadscore pulls (features): read-only in the integration set.
        dry_run: Only list the changes.
        reporter: Progress.

    Returns:
        One step per permission set, field grant, assignment and list view.

    Raises:
        ConfigError: A change failed (a missing user, missing rights, a list view of that name
            with other filters); what this run created was undone, or the message says what
            remains.
    """
    run = _Run(dry_run, reporter)
    try:
        if setup.permission_sets:
            users = _sales_users(client, setup)
            _permission_set(
                client,
                run,
                setup.integration_permission_set,
                "leadscore integration",
                [*((o, True) for o in outputs), *((f, False) for f in reads)],
                user_ids={integration_user_id: "integration user"},
            )
            _permission_set(
                client,
                run,
                setup.sales_permission_set,
                "leadscore sales (read)",
                [(o, False) for o in outputs],
                user_ids=users,
            )
        if setup.list_view:
            objects = sorted({o.sobject for o in outputs if o.kind == "tier"}) or sorted(
                {o.sobject for o in outputs}
            )
            for sobject in objects[:1]:
                _list_view(client, run, list_view_spec(setup, sobject, outputs, tiers))
    except LeadscoreError as exc:
        raise _undo(run, exc) from None
    return run.steps


def remove_access(
    client: SalesforceClient,
    setup: SetupSettings,
    sobjects: Sequence[str],
    *,
    dry_run: bool = False,
    reporter: Reporter = SILENT,
) -> list[Step]:
    """Take away what :func:`setup_access` made: the list view and both permission sets.

    Deleting a permission set deletes its field permissions and assignments with it.

    Args:
        client: Connected client.
        setup: ``[salesforce.setup]``.
        sobjects: Objects the list view may be on.
        dry_run: Only list the changes.
        reporter: Progress.

    Returns:
        One step per removed (or absent) item.
    """
    steps: list[Step] = []
    for sobject in sobjects:
        full_name = f"{sobject}.{setup.list_view_name}"
        if read_list_view(client, full_name) is None:
            continue
        if not dry_run:
            reporter.stage(f"deleting list view {full_name}")
            delete_list_view(client, full_name)
        steps.append(Step("ListView", full_name, "would remove" if dry_run else "removed"))
    for name in (setup.integration_permission_set, setup.sales_permission_set):
        found = find_permission_set(client, name)
        if found is None:
            continue
        if not dry_run:
            reporter.stage(f"deleting permission set {name}")
            delete_record(client, "PermissionSet", str(found["Id"]))
        steps.append(
            Step(
                "PermissionSet",
                name,
                "would remove" if dry_run else "removed",
                "with its field permissions and assignments",
            )
        )
    return steps


# -- steps -------------------------------------------------------------------------------------


def _sales_users(client: SalesforceClient, setup: SetupSettings) -> dict[str, str]:
    found = find_users(client, setup.sales_users)
    missing = [name for name in setup.sales_users if name.lower() not in found]
    if missing:
        raise ConfigError(
            f"salesforce.setup.sales_users: no active user {missing[0]} in the org",
            hint="fix the username (Setup > Users lists them) or remove it",
        )
    return {str(user["Id"]): name for name, user in found.items()}


def _permission_set(
    client: SalesforceClient,
    run: _Run,
    name: str,
    label: str,
    grants: Sequence[tuple[OutputField, bool]],
    *,
    user_ids: dict[str, str],
) -> None:
    found = find_permission_set(client, name)
    set_id = str(found["Id"]) if found else None
    if set_id is None:
        run.record(Step("PermissionSet", name, "would create" if run.dry_run else "created", label))
        if not run.dry_run:
            run.reporter.stage(f"creating permission set {name}")
            set_id = create_permission_set(client, name, label)
            created = set_id
            run.undo.append(
                (f"permission set {name}", lambda: delete_record(client, "PermissionSet", created))
            )
    else:
        run.record(Step("PermissionSet", name, "exists", label))
    existing = field_permissions(client, set_id) if set_id else {}
    for output, edit in grants:
        grant = "read and edit" if edit else "read"
        key = f"{output.sobject}.{output.name}"
        row = existing.get(key.lower())
        if (
            row is not None
            and bool(row["PermissionsRead"])
            and bool(row["PermissionsEdit"]) >= edit
        ):
            run.record(Step("FieldPermissions", key, "exists", f"{grant} in {name}"))
            continue
        action = "update" if row is not None else "create"
        run.record(
            Step(
                "FieldPermissions",
                key,
                f"would {action}" if run.dry_run else f"{action}d",
                f"{grant} in {name}",
            )
        )
        if run.dry_run:
            continue
        assert set_id is not None
        if row is not None:
            update_record(
                client,
                "FieldPermissions",
                str(row["Id"]),
                {"PermissionsRead": True, "PermissionsEdit": edit},
            )
        else:
            grant_id = grant_field(client, set_id, output.sobject, output.name, edit=edit)
            run.undo.append(
                (
                    f"field permission {key}",
                    lambda g=grant_id: delete_record(client, "FieldPermissions", g),
                )
            )
    held = assignments(client, set_id) if set_id else {}
    for user_id, who in user_ids.items():
        if user_id[:15] in held:
            run.record(Step("PermissionSetAssignment", who, "exists", name))
            continue
        run.record(
            Step("PermissionSetAssignment", who, "would create" if run.dry_run else "created", name)
        )
        if not run.dry_run:
            assert set_id is not None
            assignment = assign(client, set_id, user_id)
            run.undo.append(
                (
                    f"assignment of {name} to {who}",
                    lambda a=assignment: delete_record(client, "PermissionSetAssignment", a),
                )
            )


def _list_view(client: SalesforceClient, run: _Run, spec: ListViewSpec) -> None:
    found = read_list_view(client, spec.full_name)
    detail = f"{len(spec.columns)} columns, {len(spec.filters)} filters"
    if found is not None:
        if _same_view(found, spec):
            run.record(Step("ListView", spec.full_name, "exists", detail))
            return
        raise ConfigError(
            f"list view {spec.full_name} exists with other columns or filters",
            hint="set salesforce.setup.list_view_name to another name, or delete that list view "
            "(leadscore setup --remove, or Setup > Object Manager) and run setup again",
        )
    run.record(
        Step("ListView", spec.full_name, "would create" if run.dry_run else "created", detail)
    )
    if not run.dry_run:
        run.reporter.stage(f"creating list view {spec.full_name}")
        save_list_view(client, spec, create=True)
        run.undo.append(
            (f"list view {spec.full_name}", lambda: delete_list_view(client, spec.full_name))
        )


def _same_view(found: ListViewSpec, wanted: ListViewSpec) -> bool:
    def norm(spec: ListViewSpec) -> tuple[Any, ...]:
        return (
            tuple(c.lower() for c in spec.columns),
            tuple((f.lower(), op, value.replace(" ,", ",")) for f, op, value in spec.filters),
            spec.boolean_filter,
            spec.filter_scope,
        )

    return norm(found) == norm(wanted)


def _undo(run: _Run, exc: LeadscoreError) -> LeadscoreError:
    """Undo this run's creations, newest first; say what remains if that fails too."""
    remains = []
    for what, undo in reversed(run.undo):
        try:
            undo()
        except LeadscoreError:
            remains.append(what)
    if not run.undo:
        note = "nothing was changed"
    elif remains:
        note = f"undo failed; still in the org: {', '.join(remains)} (run setup --remove)"
    else:
        note = f"undone: {', '.join(what for what, _ in reversed(run.undo))}"
    hint = f"{exc.hint}; {note}" if exc.hint else note
    return type(exc)(exc.message, hint=hint)
