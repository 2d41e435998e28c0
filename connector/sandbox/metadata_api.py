"""Metadata API (SOAP) of the sandbox for ``ListView`` (and ``Layout``, stored as given).

Operations: ``createMetadata``, ``readMetadata``, ``updateMetadata``, ``upsertMetadata`` and
``deleteMetadata``.

Served at ``/services/Soap/m/{version}/`` with or without the org id, as simple-salesforce's
``sf.mdapi`` (zeep, ``document/literal``) calls it; shapes from
``shared/docs/api-contracts-realorg.md`` section 2 and the Metadata WSDL 63.0:

- the ``SessionHeader``'s ``sessionId`` is the REST access token; a bad one gets the SOAP fault
  ``sf:INVALID_SESSION_ID`` (HTTP 500);
- results come one per component, in order: ``SaveResult``/``UpsertResult``/``DeleteResult``
  with ``errors{message, statusCode}`` when ``success`` is false (``DUPLICATE_DEVELOPER_NAME``,
  ``INVALID_CROSS_REFERENCE_KEY``, ``FIELD_INTEGRITY_EXCEPTION``, ``INVALID_FIELD``,
  ``INSUFFICIENT_ACCESS``);
- ``readMetadata`` answers ``records xsi:nil="true"`` for a name that does not exist (the
  contract's open point, made explicit here);
- the calling user needs "Customize Application".

ListView ``fullName`` is ``<Object>.<ApiName>``. Columns and filter fields are custom field names
or the standard column tokens (``FULL_NAME``, ``LEAD.COMPANY``, ``LEAD.STATUS``, ...:
``<OBJECT>.<FIELD IN UPPER SNAKE CASE>``). List views are org configuration kept in memory,
like fields created through the Tooling API.
"""

from __future__ import annotations

import re
import threading
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING

from connector.sandbox.ids import make_id
from connector.sandbox.schema import FieldDef, ObjectDef

if TYPE_CHECKING:
    from connector.sandbox.salesforce_api import ApiRequest, ApiResponse, SalesforceApi

MD_NS = "http://soap.sforce.com/2006/04/metadata"
_MD = f"{{{MD_NS}}}"
_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
FILTER_SCOPES = (
    "Everything",
    "Mine",
    "Queue",
    "Delegated",
    "MyTerritory",
    "MyTeamTerritory",
    "Team",
    "SalesTeam",
    "AssignedToMe",
    "MineAndMyGroups",
    "ScopingRule",
)
FILTER_OPERATIONS = (
    "equals",
    "notEqual",
    "lessThan",
    "greaterThan",
    "lessOrEqual",
    "greaterOrEqual",
    "contains",
    "notContain",
    "startsWith",
    "includes",
    "excludes",
    "within",
)
MAX_COMPONENTS = 10
_NAME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)\.([A-Za-z][A-Za-z0-9_]{0,39})$")
_BOOLEAN_FILTER_RE = re.compile(r"^(\s*(\d+|AND|OR|NOT|\(|\))\s*)+$", re.IGNORECASE)
# Standard list view column tokens that are not <OBJECT>.<FIELD_IN_SNAKE_CASE>.
_SPECIAL_TOKENS = {"FULL_NAME": "Name", "NAME": "Name", "CORE.USERS.ALIAS": "OwnerId"}


@dataclass
class ListFilter:
    """One ``ListViewFilter``: field (token or API name), operation, optional value."""

    field: str
    operation: str
    value: str | None = None


@dataclass
class ListView:
    """A stored list view.

    Attributes:
        full_name: ``Lead.Hot_Leads_leadscore``.
        label: Display label.
        filter_scope: ``Everything``, ``Mine``, ...
        columns: Column tokens or field names, in order.
        filters: Filters, numbered from 1 for ``boolean_filter``.
        boolean_filter: Filter logic such as ``1 AND (2 OR 3)`` (None: all filters AND-ed).
        shared_to: The ``sharedTo`` element's children, kept as given.
        record_id: The list view's id (``00B...``).
    """

    full_name: str
    label: str
    filter_scope: str
    columns: list[str] = field(default_factory=list)
    filters: list[ListFilter] = field(default_factory=list)
    boolean_filter: str | None = None
    shared_to: dict[str, list[str]] = field(default_factory=dict)
    record_id: str = ""

    @property
    def sobject(self) -> str:
        """The object the list view belongs to."""
        return self.full_name.split(".", 1)[0]

    @property
    def api_name(self) -> str:
        """The list view's API name (after the object)."""
        return self.full_name.split(".", 1)[1]


class MetadataError(Exception):
    """One component's failure, reported in its result's ``errors``."""

    def __init__(self, status_code: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def resolve_column(obj: ObjectDef, token: str) -> FieldDef | None:
    """The field behind a list view column or filter token.

    Args:
        obj: The list view's object (the org schema).
        token: ``FULL_NAME``, ``LEAD.COMPANY``, ``Lead_Score__c`` ...

    Returns:
        The field, or None when the token names none.
    """
    special = _SPECIAL_TOKENS.get(token.upper())
    if special is not None:
        return obj.field(special)
    if "." in token:
        prefix, _, rest = token.partition(".")
        if prefix.upper() != obj.name.upper():
            return None
        wanted = rest.replace("_", "").lower()
        for definition in obj.fields.values():
            if definition.name.replace("_", "").lower() == wanted and not definition.custom:
                return definition
        # LEAD.CONVERTED -> IsConverted, LEAD.UNREAD -> IsUnreadByOwner ...
        return obj.field(f"Is{rest.replace('_', '')}")
    return obj.field(token)


class MetadataApi:
    """The Metadata API SOAP endpoint of one sandbox org.

    Args:
        api: The REST surface (sessions, users, schema).
    """

    def __init__(self, api: SalesforceApi) -> None:
        self.api = api
        self.list_views: dict[str, ListView] = {}
        self.layouts: dict[str, str] = {}
        self._lock = threading.Lock()
        self._numbers = iter(range(1, 1_000_000))

    # Transport --------------------------------------------------------------------------------

    def handle(self, request: ApiRequest) -> ApiResponse:
        """Serve one SOAP call.

        Args:
            request: The request (POST, text/xml).

        Returns:
            The SOAP response or fault.
        """
        from connector.sandbox.salesforce_api import ApiResponse

        if request.method != "POST":
            return _fault("INVALID_OPERATION", "The Metadata API accepts POST only", 405)
        try:
            # Local test server: expat >= 2.4.1 already refuses entity-expansion attacks.
            root = ElementTree.fromstring(request.body)  # noqa: S314
        except ElementTree.ParseError:
            return _fault("INVALID_XML", "Could not parse the SOAP envelope")
        token = (root.findtext(f".//{_MD}SessionHeader/{_MD}sessionId") or "").strip()
        if not token or not self.api._token_is_valid(token):
            return _fault("INVALID_SESSION_ID", "Invalid Session ID found in SessionHeader")
        self.api.security.act_as(token)
        body = root.find("{http://schemas.xmlsoap.org/soap/envelope/}Body")
        call = body[0] if body is not None and len(body) else None
        if call is None or not call.tag.startswith(_MD):
            return _fault("INVALID_OPERATION", "No Metadata API operation in the body")
        operation = call.tag[len(_MD) :]
        handler = {
            "createMetadata": self._create,
            "updateMetadata": self._update,
            "upsertMetadata": self._upsert,
            "readMetadata": self._read,
            "deleteMetadata": self._delete,
        }.get(operation)
        if handler is None:
            return _fault("INVALID_OPERATION", f"{operation} is not supported by the sandbox")
        with self._lock:
            try:
                results = handler(call)
            except MetadataError as error:
                return _fault(error.status_code, error.message)
        answer = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            f'<soapenv:Body><{operation}Response xmlns="{MD_NS}">{results}'
            f"</{operation}Response></soapenv:Body></soapenv:Envelope>"
        )
        return ApiResponse(200, answer.encode(), "text/xml;charset=UTF-8", category="metadata")

    # Operations -------------------------------------------------------------------------------

    def _components(self, call: ElementTree.Element) -> list[ElementTree.Element]:
        components = call.findall(f"{_MD}metadata")
        if len(components) > MAX_COMPONENTS:
            raise MetadataError(
                "EXCEEDED_ID_LIMIT", f"at most {MAX_COMPONENTS} components per call"
            )
        return components

    def _names(self, call: ElementTree.Element) -> tuple[str, list[str]]:
        kind = (call.findtext(f"{_MD}type") or "").strip()
        names = [(node.text or "").strip() for node in call.findall(f"{_MD}fullNames")]
        if len(names) > MAX_COMPONENTS:
            raise MetadataError(
                "EXCEEDED_ID_LIMIT", f"at most {MAX_COMPONENTS} components per call"
            )
        return kind, names

    def _save(self, call: ElementTree.Element, mode: str) -> str:
        results = []
        for component in self._components(call):
            kind = _local_type(component)
            full_name = (component.findtext(f"{_MD}fullName") or "").strip()
            try:
                self._require_customize()
                created = self._store(kind, full_name, component, mode)
                extra = f"<created>{str(created).lower()}</created>" if mode == "upsert" else ""
                results.append(_result(full_name, None, extra))
            except MetadataError as error:
                extra = "<created>false</created>" if mode == "upsert" else ""
                results.append(_result(full_name, error, extra))
        return "".join(results)

    def _create(self, call: ElementTree.Element) -> str:
        return self._save(call, "create")

    def _update(self, call: ElementTree.Element) -> str:
        return self._save(call, "update")

    def _upsert(self, call: ElementTree.Element) -> str:
        return self._save(call, "upsert")

    def _read(self, call: ElementTree.Element) -> str:
        kind, names = self._names(call)
        records = []
        for name in names:
            if kind == "ListView" and name.lower() in self.list_views:
                records.append(_list_view_xml(self.list_views[name.lower()]))
            elif kind == "Layout" and name.lower() in self.layouts:
                records.append(self.layouts[name.lower()])
            else:
                records.append('<records xsi:nil="true"/>')
        return f"<result>{''.join(records)}</result>"

    def _delete(self, call: ElementTree.Element) -> str:
        kind, names = self._names(call)
        results = []
        for name in names:
            try:
                self._require_customize()
                store = self.list_views if kind == "ListView" else self.layouts
                if kind not in ("ListView", "Layout") or store.pop(name.lower(), None) is None:
                    raise MetadataError(
                        "INVALID_CROSS_REFERENCE_KEY",
                        f"In field: fullName - no {kind} named {name} found",
                    )
                results.append(_result(name, None))
            except MetadataError as error:
                results.append(_result(name, error))
        return "".join(results)

    # Storage ----------------------------------------------------------------------------------

    def _require_customize(self) -> None:
        security = self.api.security
        if not security.has_permission(security.acting_user, "PermissionsCustomizeApplication"):
            raise MetadataError(
                "INSUFFICIENT_ACCESS",
                "insufficient access rights: the user lacks Customize Application",
            )

    def _store(self, kind: str, full_name: str, component: ElementTree.Element, mode: str) -> bool:
        """Create or replace one component; True when it was created."""
        if kind == "Layout":
            exists = full_name.lower() in self.layouts
            self._check_mode(kind, full_name, exists, mode)
            self.layouts[full_name.lower()] = _as_record(component, "Layout")
            return not exists
        if kind != "ListView":
            raise MetadataError(
                "INVALID_TYPE", f"The sandbox stores ListView and Layout, not {kind or 'untyped'}"
            )
        view = self._parse_list_view(full_name, component)
        existing = self.list_views.get(full_name.lower())
        self._check_mode(kind, full_name, existing is not None, mode)
        view.record_id = (
            existing.record_id if existing is not None else make_id("00B", next(self._numbers))
        )
        self.list_views[full_name.lower()] = view
        return existing is None

    @staticmethod
    def _check_mode(kind: str, full_name: str, exists: bool, mode: str) -> None:
        if mode == "create" and exists:
            raise MetadataError(
                "DUPLICATE_DEVELOPER_NAME",
                f"There is already a {kind} named {full_name.split('.', 1)[-1]}.",
            )
        if mode == "update" and not exists:
            raise MetadataError(
                "INVALID_CROSS_REFERENCE_KEY", f"In field: fullName - no {kind} named {full_name}"
            )

    def _parse_list_view(self, full_name: str, node: ElementTree.Element) -> ListView:
        match = _NAME_RE.match(full_name)
        if match is None:
            raise MetadataError(
                "FIELD_INTEGRITY_EXCEPTION",
                "fullName must be <Object>.<ApiName> (letters, digits and underscores)",
            )
        obj = self.api.org_objects.get(match.group(1).lower())
        if obj is None:
            raise MetadataError("INVALID_CROSS_REFERENCE_KEY", f"no sObject named {match.group(1)}")
        label = (node.findtext(f"{_MD}label") or "").strip()
        scope = (node.findtext(f"{_MD}filterScope") or "").strip()
        if not label:
            raise MetadataError("REQUIRED_FIELD_MISSING", "Required field is missing: label")
        if scope not in FILTER_SCOPES:
            raise MetadataError("FIELD_INTEGRITY_EXCEPTION", f"filterScope: bad value '{scope}'")
        columns = [(item.text or "").strip() for item in node.findall(f"{_MD}columns")]
        filters = [
            ListFilter(
                (item.findtext(f"{_MD}field") or "").strip(),
                (item.findtext(f"{_MD}operation") or "").strip(),
                item.findtext(f"{_MD}value"),
            )
            for item in node.findall(f"{_MD}filters")
        ]
        for token in columns:
            if resolve_column(obj, token) is None:
                raise MetadataError("INVALID_FIELD", f"columns: no field {token} on {obj.name}")
        for item in filters:
            if resolve_column(obj, item.field) is None:
                raise MetadataError(
                    "INVALID_FIELD", f"filters: no field {item.field} on {obj.name}"
                )
            if item.operation not in FILTER_OPERATIONS:
                raise MetadataError(
                    "FIELD_INTEGRITY_EXCEPTION", f"filters: bad operation '{item.operation}'"
                )
        boolean_filter = (node.findtext(f"{_MD}booleanFilter") or "").strip() or None
        if boolean_filter is not None:
            numbers = {int(n) for n in re.findall(r"\d+", boolean_filter)}
            if not _BOOLEAN_FILTER_RE.match(boolean_filter) or not numbers <= set(
                range(1, len(filters) + 1)
            ):
                raise MetadataError(
                    "FIELD_INTEGRITY_EXCEPTION", f"booleanFilter: invalid logic '{boolean_filter}'"
                )
        shared: dict[str, list[str]] = {}
        shared_node = node.find(f"{_MD}sharedTo")
        if shared_node is not None:
            for child in shared_node:
                shared.setdefault(child.tag.replace(_MD, ""), []).append((child.text or "").strip())
        return ListView(
            f"{obj.name}.{match.group(2)}",
            label,
            scope,
            columns,
            filters,
            boolean_filter,
            shared,
        )


def _local_type(node: ElementTree.Element) -> str:
    kind = node.get(_XSI_TYPE) or ""
    return kind.rsplit(":", 1)[-1]


def _result(full_name: str, error: MetadataError | None, extra: str = "") -> str:
    if error is None:
        name = escape(full_name)
        return f"<result>{extra}<fullName>{name}</fullName><success>true</success></result>"
    return (
        f"<result>{extra}<errors><message>{escape(error.message)}</message>"
        f"<statusCode>{error.status_code}</statusCode></errors>"
        f"<fullName>{escape(full_name)}</fullName><success>false</success></result>"
    )


def _as_record(node: ElementTree.Element, kind: str) -> str:
    """Re-serialise a component as a ``records`` element in the default namespace."""
    inner = "".join(_plain(child) for child in node)
    return f'<records xsi:type="{kind}">{inner}</records>'


def _plain(node: ElementTree.Element) -> str:
    name = node.tag.replace(_MD, "")
    if len(node):
        return f"<{name}>{''.join(_plain(child) for child in node)}</{name}>"
    return f"<{name}>{escape(node.text or '')}</{name}>"


def _list_view_xml(view: ListView) -> str:
    """A ListView in WSDL sequence order (fullName first, from Metadata)."""
    parts = [f"<fullName>{escape(view.full_name)}</fullName>"]
    if view.boolean_filter:
        parts.append(f"<booleanFilter>{escape(view.boolean_filter)}</booleanFilter>")
    parts += [f"<columns>{escape(column)}</columns>" for column in view.columns]
    parts.append(f"<filterScope>{view.filter_scope}</filterScope>")
    for item in view.filters:
        value = "" if item.value is None else f"<value>{escape(item.value)}</value>"
        parts.append(
            f"<filters><field>{escape(item.field)}</field>"
            f"<operation>{item.operation}</operation>{value}</filters>"
        )
    parts.append(f"<label>{escape(view.label)}</label>")
    if view.shared_to:
        children = "".join(
            f"<{key}>{escape(value)}</{key}>"
            for key, values in view.shared_to.items()
            for value in values
        )
        parts.append(f"<sharedTo>{children}</sharedTo>")
    return f'<records xsi:type="ListView">{"".join(parts)}</records>'


def _fault(code: str, message: str, status: int = 500) -> ApiResponse:
    from connector.sandbox.salesforce_api import ApiResponse

    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:sf="http://soap.sforce.com/2006/04/metadata">'
        f"<soapenv:Body><soapenv:Fault><faultcode>sf:{code}</faultcode>"
        f"<faultstring>{code}: {escape(message)}</faultstring></soapenv:Fault>"
        "</soapenv:Body></soapenv:Envelope>"
    )
    return ApiResponse(status, body.encode(), "text/xml;charset=UTF-8", category="metadata")
