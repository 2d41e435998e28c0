"""``doctor``'s preflight of a first write: field security, the list view, and the org rules.

Each check returns ``(check, ok, detail, fix)`` rows. They read only (SOQL, Tooling API, the
Metadata API's ``readMetadata`` and UI API picklist values) and explain, with the fix, what users
of other sync tools learn from failed runs:

- field-level security as the integration user (each output field visible and editable) and, with
  ``salesforce.sales_user``, as a rep (each output field readable);
- the list view ``setup`` makes, present and as configured;
- active validation rules on the written object and whether their formulas touch output fields;
- active duplicate rules, and whether writes send ``Sforce-Duplicate-Rule-Header:
  allowSave=true`` (``salesforce.duplicate_rule_allow_save``);
- record types whose tier picklist lacks tier values;
- multi-currency;
- feature fields that are formulas or roll-ups (their changes do not move ``SystemModstamp``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from connector.errors import LeadscoreError
from connector.salesforce import SalesforceClient
from connector.salesforce.org import (
    ListViewSpec,
    currencies,
    duplicate_rules,
    find_users,
    read_list_view,
    record_type_values,
    user_field_access,
    validation_rules,
)
from sync.org_setup import OutputField

Row = tuple[str, bool, str, str]
SETUP_FIX = "run `leadscore setup --config FILE` (it grants them through permission sets)"


def check_rep_access(
    client: SalesforceClient, sales_user: str, outputs: Sequence[OutputField]
) -> list[Row]:
    """Can the rep read every output field? (read as an admin: profile + assigned sets).

    Args:
        client: Connected client.
        sales_user: The rep's username (``salesforce.sales_user``).
        outputs: The output fields.

    Returns:
        One row per object.
    """
    label = f"rep {sales_user}"
    try:
        users = find_users(client, [sales_user])
        if sales_user.lower() not in users:
            return [(label, False, "no active user of that name", "fix salesforce.sales_user")]
        user_id = str(users[sales_user.lower()]["Id"])
        rows = []
        for sobject in sorted({o.sobject for o in outputs}):
            access = user_field_access(client, user_id, sobject)
            hidden = [
                o.name
                for o in outputs
                if o.sobject == sobject and not access.get(o.name.lower(), _NONE).read
            ]
            if hidden:
                rows.append(
                    (
                        f"{label} on {sobject}",
                        False,
                        f"cannot read {', '.join(hidden)} (field-level security): the list view "
                        "shows them empty",
                        f"add the user to [salesforce.setup] sales_users and {SETUP_FIX}",
                    )
                )
            else:
                rows.append((f"{label} on {sobject}", True, "reads every output field", ""))
        return rows
    except LeadscoreError as exc:
        return [(label, False, exc.message, exc.hint or "")]


class _NoAccess:
    read = False
    edit = False


_NONE = _NoAccess()


def check_list_view(client: SalesforceClient, wanted: ListViewSpec) -> list[Row]:
    """Is the list view ``setup`` makes present and as configured?

    Args:
        client: Connected client.
        wanted: The list view leadscore wants.

    Returns:
        One row.
    """
    label = f"list view {wanted.full_name}"
    try:
        found = read_list_view(client, wanted.full_name)
    except LeadscoreError as exc:
        return [(label, False, exc.message, exc.hint or "")]
    if found is None:
        return [(label, False, "missing: reps have no view sorted by score", SETUP_FIX)]
    if tuple(f for f, _, _ in found.filters) != tuple(f for f, _, _ in wanted.filters):
        return [
            (
                label,
                False,
                "exists with other filters",
                "rename it, or set salesforce.setup.list_view_name to another name",
            )
        ]
    return [(label, True, f"{len(found.columns)} columns, {len(found.filters)} filters", "")]


def check_validation_rules(
    client: SalesforceClient, sobject: str, outputs: Sequence[OutputField]
) -> list[Row]:
    """Active validation rules on the written object, and those whose formula names an output.

    Args:
        client: Connected client.
        sobject: The written object.
        outputs: The output fields.

    Returns:
        One row.
    """
    label = f"validation rules on {sobject}"
    try:
        rules = [rule for rule in validation_rules(client, sobject) if rule.active]
    except LeadscoreError as exc:
        return [(label, False, exc.message, "grant View Setup and Configuration")]
    names = {o.name.lower() for o in outputs if o.sobject.lower() == sobject.lower()}
    touching = [
        rule.name
        for rule in rules
        if names & {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", rule.detail)}
    ]
    if touching:
        return [
            (
                label,
                False,
                f"{', '.join(touching)} test output fields: writes may fail with "
                "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                "exempt the integration user in the rule's formula (e.g. $User.Username), or "
                "drop the output field from it",
            )
        ]
    detail = f"{len(rules)} active, none touch output fields" if rules else "none active"
    if rules:
        detail += f" ({', '.join(r.name for r in rules)}; failures show up as rejected rows)"
    return [(label, True, detail, "")]


def check_duplicate_rules(client: SalesforceClient, sobject: str, allow_save: bool) -> list[Row]:
    """Active duplicate rules, and whether writes ask to save anyway.

    Args:
        client: Connected client.
        sobject: The written object.
        allow_save: ``salesforce.duplicate_rule_allow_save``.

    Returns:
        One row.
    """
    label = f"duplicate rules on {sobject}"
    try:
        active = [rule.name for rule in duplicate_rules(client, sobject) if rule.active]
    except LeadscoreError as exc:
        return [(label, False, exc.message, "grant View Setup and Configuration")]
    if not active:
        return [(label, True, "none active", "")]
    if allow_save:
        return [(label, True, f"{', '.join(active)} active; writes send allowSave=true", "")]
    return [
        (
            label,
            False,
            f"{', '.join(active)} active: updates of records it flags fail with "
            "DUPLICATES_DETECTED",
            "set salesforce.duplicate_rule_allow_save = true (sends "
            "Sforce-Duplicate-Rule-Header: allowSave=true), or make the rule Allow on edit",
        )
    ]


def check_record_types(
    client: SalesforceClient, tier: OutputField | None, tiers: Sequence[str]
) -> list[Row]:
    """Record types whose tier picklist lacks tier values (writes to their records fail).

    Args:
        client: Connected client.
        tier: The tier output field, if any.
        tiers: Tier names.

    Returns:
        One row (none without a tier field).
    """
    if tier is None:
        return []
    label = f"record types of {tier.sobject}"
    try:
        types = record_type_values(client, tier.sobject, tier.name)
    except LeadscoreError as exc:
        return [(label, False, exc.message, exc.hint or "")]
    short = [(name, [t for t in tiers if t not in values]) for name, values in types]
    short = [(name, missing) for name, missing in short if missing]
    if short:
        name, missing = short[0]
        return [
            (
                label,
                False,
                f"{name} does not allow {tier.name} values {', '.join(missing)}: writes fail "
                "with INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
                + (f" (and {len(short) - 1} more record types)" if len(short) > 1 else ""),
                f"add the values to the record type's {tier.name} picklist in Setup",
            )
        ]
    detail = f"{len(types)} record types allow every tier" if types else "no record types"
    return [(label, True, detail, "")]


def check_currencies(client: SalesforceClient) -> list[Row]:
    """Multi-currency orgs: amounts are in each record's currency.

    Args:
        client: Connected client.

    Returns:
        One row (ok either way; a note when multi-currency).
    """
    try:
        codes = currencies(client)
    except LeadscoreError as exc:
        return [("currencies", False, exc.message, exc.hint or "")]
    if len(codes) > 1:
        return [
            (
                "currencies",
                True,
                f"multi-currency ({', '.join(codes)}; corporate {codes[0]}): amount features are "
                "in each record's currency; pull CurrencyIsoCode as a feature",
                "",
            )
        ]
    return [("currencies", True, "single currency", "")]


def check_formula_features(
    sobject: str, calculated: Sequence[str], full_read_days: float | None
) -> list[Row]:
    """Feature fields that are formulas or roll-ups, and whether pull re-reads them.

    Args:
        sobject: The stream's object.
        calculated: Its configured fields that describe marks ``calculated``.
        full_read_days: ``salesforce.streams.<object>.full_read_days``.

    Returns:
        One row (none when no feature field is calculated).
    """
    if not calculated:
        return []
    label = f"formula fields of {sobject}"
    names = ", ".join(calculated)
    if full_read_days:
        return [(label, True, f"{names}: re-read in full every {full_read_days:g} days", "")]
    return [
        (
            label,
            False,
            f"{names} are formulas or roll-ups: their changes do not move SystemModstamp, so "
            "incremental pulls miss them",
            f"set [salesforce.streams.{sobject}] full_read_days (e.g. 7) for a periodic full read",
        )
    ]
