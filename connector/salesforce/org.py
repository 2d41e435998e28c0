"""Org administration through the APIs: permission sets, field security, list views, org rules.

The org rules are what a first write meets: validation and duplicate rules, record types and
currencies.

Shapes follow ``shared/docs/api-contracts-realorg.md``:

- ``PermissionSet``, ``FieldPermissions``, ``PermissionSetAssignment`` are plain sObjects (REST
  create/update/delete, SOQL); ``FieldPermissions.Field`` is ``Object.Field``; a user's field
  access is the union of their profile's permission set (``IsOwnedByProfile``) and the sets
  assigned to them (section 1.1);
- list views go through the Metadata API with simple-salesforce's ``sf.mdapi`` (section 2);
  zeep has its own HTTP session, so it is given ours (TLS bundle, retries) before the first call;
- validation rules come from the Tooling API (``ValidationRule``, one record at a time for its
  formula), duplicate rules, record types and currencies from SOQL, a record type's picklist
  values from the UI API.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from simple_salesforce.format import format_soql

from connector.errors import ConfigError, RequestError
from connector.salesforce.session import SalesforceClient, translate_errors
from connector.store import quote_identifier

LIST_VIEW_OBJECT_TOKENS = {"Name": "FULL_NAME"}
"""List view column tokens of standard fields that are not ``OBJECT.FIELD_NAME``."""


@dataclass(frozen=True)
class ListViewSpec:
    """A list view as leadscore wants it.

    Attributes:
        full_name: ``Lead.Hot_leads_leadscore``.
        label: Display label.
        columns: Column tokens, in order.
        filters: ``(field, operation, value)``, numbered from 1 in ``boolean_filter``.
        boolean_filter: Filter logic (None: all filters AND-ed).
        filter_scope: ``Everything`` (all records the user can see) or ``Mine``.
    """

    full_name: str
    label: str
    columns: tuple[str, ...]
    filters: tuple[tuple[str, str, str], ...]
    boolean_filter: str | None = None
    filter_scope: str = "Everything"


@dataclass(frozen=True)
class FieldAccess:
    """What a user may do with one field.

    Attributes:
        read: Readable.
        edit: Editable.
        via: Permission set names that grant it.
    """

    read: bool
    edit: bool
    via: tuple[str, ...] = ()


@dataclass
class OrgRule:
    """A validation rule, duplicate rule or record type found on an object.

    Attributes:
        kind: ``validation rule``, ``duplicate rule`` or ``record type``.
        name: Its developer name.
        active: Whether it runs.
        detail: Formula, or allowed picklist values.
        fields: The fields it concerns (validation: fields named in the formula).
    """

    kind: str
    name: str
    active: bool
    detail: str = ""
    fields: list[str] = field(default_factory=list)


def column_token(sobject: str, name: str) -> str:
    """The list view column token of a field (``Lead_Score__c``, ``LEAD.COMPANY``, ``FULL_NAME``).

    Args:
        sobject: Object API name.
        name: Field API name.

    Returns:
        The token.
    """
    if name.endswith("__c"):
        return name
    if name in LIST_VIEW_OBJECT_TOKENS:
        return LIST_VIEW_OBJECT_TOKENS[name]
    snake = "".join(f"_{c}" if c.isupper() and i else c for i, c in enumerate(name)).upper()
    return f"{sobject.upper()}.{snake}"


# -- SOQL and records -------------------------------------------------------------------------


def _query(client: SalesforceClient, soql: str, what: str) -> list[dict[str, Any]]:
    with translate_errors(what):
        return list(client.sf.query_all_iter(soql))


def _create(client: SalesforceClient, sobject: str, values: dict[str, Any], what: str) -> str:
    try:
        with translate_errors(what):
            result = client.sf.restful(f"sobjects/{sobject}/", method="POST", json=values)
    except RequestError as exc:
        raise _access_error(exc) from None
    return str(result["id"])


def update_record(
    client: SalesforceClient, sobject: str, record_id: str, values: dict[str, Any]
) -> None:
    """Update one setup record (``PATCH sobjects/{object}/{id}``).

    Args:
        client: Connected client.
        sobject: Object API name.
        record_id: Record id.
        values: Fields to set.
    """
    what = f"updating {sobject} {record_id}"
    try:
        with translate_errors(what):
            client.sf.restful(f"sobjects/{sobject}/{record_id}", method="PATCH", json=values)
    except RequestError as exc:
        raise _access_error(exc) from None


def delete_record(client: SalesforceClient, sobject: str, record_id: str) -> None:
    """Delete one setup record (``DELETE sobjects/{object}/{id}``).

    Args:
        client: Connected client.
        sobject: Object API name.
        record_id: Record id.
    """
    what = f"deleting {sobject} {record_id}"
    try:
        with translate_errors(what):
            client.sf.restful(f"sobjects/{sobject}/{record_id}", method="DELETE")
    except RequestError as exc:
        raise _access_error(exc) from None


def _access_error(exc: RequestError) -> ConfigError | RequestError:
    if "INSUFFICIENT_ACCESS" in exc.message:
        return ConfigError(
            exc.message,
            hint="give the integration user 'Manage Profiles and Permission Sets' and 'Assign "
            "Permission Sets' (and 'Customize Application' for list views) for setup, or have "
            "an admin run setup",
        )
    return exc


# -- users and permission sets ----------------------------------------------------------------


def find_users(client: SalesforceClient, usernames: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Active users by username (lower case), with their profile id.

    Args:
        client: Connected client.
        usernames: Usernames to look up.

    Returns:
        ``{username: {"Id", "ProfileId", "Username"}}`` for those found.
    """
    if not usernames:
        return {}
    soql = format_soql(
        "SELECT Id, Username, ProfileId FROM User WHERE Username IN {names} AND IsActive = true",
        names=list(usernames),
    )
    rows = _query(client, soql, "reading users")
    return {str(r["Username"]).lower(): r for r in rows}


def user_by_id(client: SalesforceClient, user_id: str) -> dict[str, Any] | None:
    """A user's id, username and profile id.

    Args:
        client: Connected client.
        user_id: User id.

    Returns:
        The user, or None.
    """
    soql = format_soql("SELECT Id, Username, ProfileId FROM User WHERE Id = {id}", id=user_id)
    rows = _query(client, soql, "reading the integration user")
    return rows[0] if rows else None


def integration_user_id(client: SalesforceClient) -> str:
    """The id of the user the client's session acts as (the integration user).

    From the OAuth identity URL; for SOAP logins, by ``salesforce.username``.

    Args:
        client: Connected client.

    Returns:
        The user id.
    """
    client.connect()
    if client.user_id:
        return client.user_id
    username = client.settings.username or ""
    found = find_users(client, [username]).get(username.lower()) if username else None
    if found is None:
        raise ConfigError(
            "cannot tell which user the Salesforce session acts as",
            hint="set salesforce.username to the integration user's username",
        )
    return str(found["Id"])


def find_permission_set(client: SalesforceClient, name: str) -> dict[str, Any] | None:
    """A permission set by API name.

    Args:
        client: Connected client.
        name: ``PermissionSet.Name``.

    Returns:
        ``{"Id", "Name", "Label"}`` or None.
    """
    soql = format_soql("SELECT Id, Name, Label FROM PermissionSet WHERE Name = {name}", name=name)
    rows = _query(client, soql, f"reading permission set {name}")
    return rows[0] if rows else None


def create_permission_set(client: SalesforceClient, name: str, label: str) -> str:
    """Create a permission set.

    Args:
        client: Connected client.
        name: API name.
        label: Label.

    Returns:
        Its id.
    """
    values = {
        "Name": name,
        "Label": label,
        "Description": "Created by leadscore setup; leadscore setup --remove deletes it.",
    }
    return _create(client, "PermissionSet", values, f"creating permission set {name}")


def field_permissions(client: SalesforceClient, set_id: str) -> dict[str, dict[str, Any]]:
    """A permission set's field permissions, by lower-case ``Object.Field``.

    Args:
        client: Connected client.
        set_id: PermissionSet id.

    Returns:
        ``{"lead.lead_score__c": {"Id", "Field", "PermissionsRead", "PermissionsEdit"}}``.
    """
    soql = format_soql(
        "SELECT Id, Field, PermissionsRead, PermissionsEdit FROM FieldPermissions "
        "WHERE ParentId = {parent}",
        parent=set_id,
    )
    rows = _query(client, soql, "reading field permissions")
    return {str(r["Field"]).lower(): r for r in rows}


def grant_field(
    client: SalesforceClient, set_id: str, sobject: str, name: str, *, edit: bool
) -> str:
    """Grant read (and edit) on a field to a permission set.

    Args:
        client: Connected client.
        set_id: PermissionSet id.
        sobject: Object API name.
        name: Field API name.
        edit: Also grant edit.

    Returns:
        The FieldPermissions id.
    """
    values = {
        "ParentId": set_id,
        "SobjectType": sobject,
        "Field": f"{sobject}.{name}",
        "PermissionsRead": True,
        "PermissionsEdit": edit,
    }
    return _create(client, "FieldPermissions", values, f"granting {sobject}.{name}")


def assignments(client: SalesforceClient, set_id: str) -> dict[str, str]:
    """Who holds a permission set.

    Args:
        client: Connected client.
        set_id: PermissionSet id.

    Returns:
        ``{user id (15 chars): assignment id}``.
    """
    soql = format_soql(
        "SELECT Id, AssigneeId FROM PermissionSetAssignment WHERE PermissionSetId = {set_id}",
        set_id=set_id,
    )
    rows = _query(client, soql, "reading permission set assignments")
    return {str(r["AssigneeId"])[:15]: str(r["Id"]) for r in rows}


def assign(client: SalesforceClient, set_id: str, user_id: str) -> str:
    """Assign a permission set to a user.

    Args:
        client: Connected client.
        set_id: PermissionSet id.
        user_id: User id.

    Returns:
        The PermissionSetAssignment id.
    """
    values = {"AssigneeId": user_id, "PermissionSetId": set_id}
    return _create(client, "PermissionSetAssignment", values, f"assigning {set_id} to {user_id}")


def user_field_access(
    client: SalesforceClient, user_id: str, sobject: str
) -> dict[str, FieldAccess]:
    """A user's field-level security on an object's fields, read as an admin would.

    The user's profile's permission set plus the sets assigned to them; an object permission
    with ``PermissionsViewAllFields`` reads every field (not reported per field here).

    Args:
        client: Connected client.
        user_id: User id.
        sobject: Object API name.

    Returns:
        ``{lower-case field name: FieldAccess}`` for fields with any grant.
    """
    user = user_by_id(client, user_id)
    if user is None:
        raise ConfigError(
            f"user {user_id} does not exist or is not visible",
            hint="check salesforce.sales_user",
        )
    owned = _query(
        client,
        format_soql(
            "SELECT Id, Name FROM PermissionSet WHERE ProfileId = {profile} "
            "AND IsOwnedByProfile = true",
            profile=user["ProfileId"],
        ),
        "reading the user's profile",
    )
    assigned = _query(
        client,
        format_soql(
            "SELECT PermissionSetId, PermissionSet.Name FROM PermissionSetAssignment "
            "WHERE AssigneeId = {user}",
            user=user_id,
        ),
        "reading the user's permission sets",
    )
    names = {str(r["Id"]): "profile" for r in owned}
    names.update({str(r["PermissionSetId"]): str(r["PermissionSet"]["Name"]) for r in assigned})
    if not names:
        return {}
    rows = _query(
        client,
        format_soql(
            "SELECT ParentId, Field, PermissionsRead, PermissionsEdit FROM FieldPermissions "
            "WHERE ParentId IN {parents} AND SobjectType = {sobject}",
            parents=list(names),
            sobject=sobject,
        ),
        f"reading field permissions on {sobject}",
    )
    access: dict[str, FieldAccess] = {}
    for row in rows:
        key = str(row["Field"]).split(".", 1)[-1].lower()
        before = access.get(key, FieldAccess(False, False))
        access[key] = FieldAccess(
            before.read or bool(row["PermissionsRead"]),
            before.edit or bool(row["PermissionsEdit"]),
            (*before.via, names.get(str(row["ParentId"]), "?")),
        )
    return access


# -- list views (Metadata API) ----------------------------------------------------------------


def _mdapi(client: SalesforceClient) -> Any:
    mdapi = client.sf.mdapi
    # zeep builds its own requests session; ours carries the CA bundle, retries and accounting
    # (api-contracts-realorg section 2.1). zeep documents replacing the transport's session.
    mdapi._client.transport.session = client.session
    return mdapi


def _metadata_call(client: SalesforceClient, what: str, call: Any) -> Any:
    """Run one Metadata API call, turning simple-salesforce's bare exceptions into one line."""
    try:
        with translate_errors(what):
            return call(_mdapi(client))
    except (ConfigError, RequestError):
        raise
    except Exception as exc:  # simple-salesforce raises a bare Exception with the results
        text = " ".join(str(exc).split())
        if "INSUFFICIENT_ACCESS" in text:
            raise ConfigError(
                f"{what} failed: {text}",
                hint="give the integration user 'Customize Application', or have an admin run "
                "setup",
            ) from None
        raise RequestError(f"{what} failed: {text[:300]}") from None


def read_list_view(client: SalesforceClient, full_name: str) -> ListViewSpec | None:
    """Read a list view through the Metadata API (``readMetadata``).

    Args:
        client: Connected client.
        full_name: ``Object.ApiName``.

    Returns:
        The list view, or None when it does not exist.
    """
    record = _metadata_call(
        client, f"reading list view {full_name}", lambda md: md.ListView.read([full_name])
    )
    if record is None or not getattr(record, "fullName", None):
        return None
    filters = tuple(
        (str(f.field), str(f.operation), "" if f.value is None else str(f.value))
        for f in record.filters or ()
    )
    return ListViewSpec(
        full_name=str(record.fullName),
        label=str(record.label),
        columns=tuple(str(c) for c in record.columns or ()),
        filters=filters,
        boolean_filter=record.booleanFilter or None,
        filter_scope=str(record.filterScope),
    )


def save_list_view(client: SalesforceClient, spec: ListViewSpec, *, create: bool) -> None:
    """Create (or update) a list view through the Metadata API.

    Args:
        client: Connected client.
        spec: The list view.
        create: ``createMetadata`` (True) or ``updateMetadata``.
    """
    quote_identifier(spec.full_name.split(".", 1)[0])

    def call(md: Any) -> None:
        view = md.ListView(
            fullName=spec.full_name,
            label=spec.label,
            filterScope=md.FilterScope(spec.filter_scope),
            columns=list(spec.columns),
            filters=[
                md.ListViewFilter(field=f, operation=md.FilterOperation(op), value=value)
                for f, op, value in spec.filters
            ],
            booleanFilter=spec.boolean_filter,
        )
        (md.ListView.create if create else md.ListView.update)([view])

    _metadata_call(client, f"saving list view {spec.full_name}", call)


def delete_list_view(client: SalesforceClient, full_name: str) -> None:
    """Delete a list view through the Metadata API (``deleteMetadata``).

    Args:
        client: Connected client.
        full_name: ``Object.ApiName``.
    """
    _metadata_call(
        client, f"deleting list view {full_name}", lambda md: md.ListView.delete([full_name])
    )


# -- org rules (doctor) -----------------------------------------------------------------------


def validation_rules(client: SalesforceClient, sobject: str) -> list[OrgRule]:
    """Validation rules on an object with their formulas (Tooling API).

    Args:
        client: Connected client.
        sobject: Object API name.

    Returns:
        One entry per rule (formula in ``detail``).
    """
    soql = format_soql(
        "SELECT Id, ValidationName, Active FROM ValidationRule "
        "WHERE EntityDefinition.DeveloperName = {sobject}",
        sobject=sobject,
    )
    with translate_errors(f"reading validation rules on {sobject}"):
        rows = client.sf.toolingexecute("query/", params={"q": soql})["records"]
        rules = []
        for row in rows:
            # Metadata (the formula) is only returned one record at a time.
            detail = client.sf.toolingexecute(f"sobjects/ValidationRule/{row['Id']}")
            formula = str((detail.get("Metadata") or {}).get("errorConditionFormula") or "")
            rules.append(
                OrgRule("validation rule", str(row["ValidationName"]), bool(row["Active"]), formula)
            )
    return rules


def duplicate_rules(client: SalesforceClient, sobject: str) -> list[OrgRule]:
    """Duplicate rules on an object.

    Args:
        client: Connected client.
        sobject: Object API name.

    Returns:
        One entry per rule.
    """
    soql = format_soql(
        "SELECT DeveloperName, IsActive FROM DuplicateRule WHERE SobjectType = {sobject}",
        sobject=sobject,
    )
    rows = _query(client, soql, f"reading duplicate rules on {sobject}")
    return [OrgRule("duplicate rule", str(r["DeveloperName"]), bool(r["IsActive"])) for r in rows]


def record_type_values(
    client: SalesforceClient, sobject: str, field_name: str
) -> list[tuple[str, list[str]]]:
    """Each active record type of an object and the values it allows on a picklist.

    Args:
        client: Connected client.
        sobject: Object API name.
        field_name: Picklist field API name.

    Returns:
        ``[(record type developer name, allowed values)]``.
    """
    soql = format_soql(
        "SELECT Id, DeveloperName FROM RecordType WHERE SobjectType = {sobject} "
        "AND IsActive = true",
        sobject=sobject,
    )
    out = []
    for row in _query(client, soql, f"reading record types of {sobject}"):
        path = f"ui-api/object-info/{sobject}/picklist-values/{row['Id']}/{field_name}"
        with translate_errors(f"reading {field_name} values of record type {row['DeveloperName']}"):
            values = client.sf.restful(path)["values"]
        out.append((str(row["DeveloperName"]), [str(v["value"]) for v in values]))
    return out


def currencies(client: SalesforceClient) -> list[str]:
    """Active currency ISO codes (corporate first); empty in single-currency orgs.

    Args:
        client: Connected client.

    Returns:
        ISO codes.
    """
    try:
        rows = _query(
            client,
            "SELECT IsoCode, IsCorporate FROM CurrencyType WHERE IsActive = true",
            "reading currencies",
        )
    except RequestError as exc:
        if "INVALID_TYPE" in exc.message:  # single-currency orgs have no CurrencyType
            return []
        raise
    return [str(r["IsoCode"]) for r in sorted(rows, key=lambda r: not r["IsCorporate"])]
