"""UI API list views of the sandbox: ``ui-api/list-records`` and ``ui-api/list-info``.

``GET /services/data/vXX.X/ui-api/list-records/{objectApiName}/{listViewApiName}`` (42.0+) and
``.../list-records/{listViewId}`` answer a List Record Collection; ``.../list-info/...`` answers
List Info (``shared/docs/api-contracts-realorg.md`` section 3):

- parameters ``pageSize`` (1-2000, default 50), ``pageToken`` (offset, at most 2000), ``sortBy``
  (one field, ``-`` prefix for descending; sortable columns only), ``fields`` (an unavailable one
  is an error) and ``optionalFields`` (silently dropped when unavailable);
- records carry ``apiName``, ``childRelationships``, ``eTag``, ``fields.X.{displayValue,value}``,
  ``id``, ``lastModifiedDate``, ``systemModstamp``, ``weakEtag``;
- ``nextPageToken``/``nextPageUrl`` are null on the last page;
- field-level security is the calling user's: a column they cannot read is dropped from
  ``displayColumns`` and from every record (the contract's inferred rule); filters apply as
  stored, the way the list view's owner defined them;
- without ``sortBy`` records come in ``orderedByInfo`` order, ``Name`` then ``Id`` ascending.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from connector.sandbox.metadata_api import ListFilter, ListView, resolve_column
from connector.sandbox.schema import NUMBER_TYPES, TEXT_TYPES, FieldDef, ObjectDef
from connector.sandbox.soql import converter_for

if TYPE_CHECKING:
    from connector.sandbox.salesforce_api import ApiRequest, ApiResponse, SalesforceApi

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 2000
MAX_OFFSET = 2000
_TOKEN_RE = re.compile(r"\d+|AND|OR|NOT|\(|\)", re.IGNORECASE)
_OPERATORS = {
    "equals": "=",
    "notEqual": "!=",
    "lessThan": "<",
    "greaterThan": ">",
    "lessOrEqual": "<=",
    "greaterOrEqual": ">=",
}


class UiApi:
    """The ``/services/data/vXX.X/ui-api/...`` list view resources.

    Args:
        api: The REST surface (schema as the caller sees it, database, list views).
    """

    def __init__(self, api: SalesforceApi) -> None:
        self.api = api

    def handle(self, request: ApiRequest, version: str, rest: list[str]) -> ApiResponse:
        """Serve ``ui-api/list-records/...`` and ``ui-api/list-info/...`` (GET).

        Args:
            request: The request.
            version: API version of the URL.
            rest: Path segments after ``ui-api``.

        Returns:
            The response.
        """
        from connector.sandbox.salesforce_api import ApiError, ApiResponse

        self.api._require_method(request, "GET")
        if float(version) < 42.0:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        if len(rest) == 5 and rest[0] == "object-info" and rest[2] == "picklist-values":
            return ApiResponse(
                200, _json(self._picklist_values(rest[1], rest[3], rest[4], version))
            )
        if len(rest) not in (2, 3) or rest[0] not in ("list-records", "list-info"):
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        view = self._find(rest[1:])
        if rest[0] == "list-info":
            return ApiResponse(200, _json(self._list_info(view, version)))
        return ApiResponse(200, _json(self._list_records(request, view, version, rest[1:])))

    def _picklist_values(
        self, sobject: str, record_type_id: str, field_name: str, version: str
    ) -> dict[str, Any]:
        """``object-info/{object}/picklist-values/{recordTypeId}/{field}`` (record-type values)."""
        from connector.sandbox.salesforce_api import ApiError

        obj = self.api.get_object(sobject)
        values = None
        if obj is not None and obj.field(field_name) is not None:
            values = self.api.rules.picklist_values(record_type_id, obj.name, field_name)
        if values is None or obj is None:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        return {
            "controllerValues": {},
            "defaultValue": None,
            "eTag": _etag(f"{obj.name}.{field_name}.{record_type_id}", version),
            "url": f"/services/data/v{version}/ui-api/object-info/{obj.name}/picklist-values/"
            f"{record_type_id}/{field_name}",
            "values": [
                {"attributes": None, "label": value, "validFor": [], "value": value}
                for value in values
            ],
        }

    def _find(self, names: list[str]) -> ListView:
        from connector.sandbox.salesforce_api import ApiError

        views = self.api.metadata.list_views
        if len(names) == 1:
            found = next((v for v in views.values() if v.record_id[:15] == names[0][:15]), None)
        else:
            found = views.get(f"{names[0]}.{names[1]}".lower())
        if found is None:
            raise ApiError(
                404,
                "NOT_FOUND",
                "The requested resource does not exist: no list view " + "/".join(names),
            )
        return found

    # List info --------------------------------------------------------------------------------

    def _columns(self, view: ListView) -> list[FieldDef]:
        """The columns the calling user can read, as fields of their schema."""
        obj = self._object(view)
        org = self.api.org_objects[view.sobject.lower()]
        columns = []
        for token in view.columns:
            definition = resolve_column(org, token)
            visible = obj.field(definition.name) if definition is not None else None
            if visible is not None:
                columns.append(visible)
        return columns

    def _object(self, view: ListView) -> ObjectDef:
        return self.api.objects[view.sobject.lower()]

    def _list_info(self, view: ListView, version: str) -> dict[str, Any]:
        return {
            "cloneable": True,
            "createable": True,
            "deletable": True,
            "displayColumns": [
                {"fieldApiName": c.name, "label": c.label, "sortable": _sortable(c)}
                for c in self._columns(view)
            ],
            "filterLogicString": view.boolean_filter,
            "filteredByInfo": [
                {
                    "fieldApiName": self._filter_field(view, item).name,
                    "label": self._filter_field(view, item).label,
                    "operandLabels": _operands(item),
                    "operator": _operator_name(item.operation),
                }
                for item in view.filters
            ],
            "label": view.label,
            "listReference": self._reference(view),
            "orderedByInfo": [{"fieldApiName": "Name", "isAscending": True, "label": "Name"}],
            "updateable": True,
            "userPreferences": {"columnWidths": {}, "columnWrap": {}},
            "visibility": "Public" if view.filter_scope == "Everything" else "Private",
            "visibilityEditable": True,
            "eTag": _etag(view.full_name, version),
        }

    def _reference(self, view: ListView) -> dict[str, Any]:
        return {
            "id": view.record_id,
            "listViewApiName": view.api_name,
            "objectApiName": view.sobject,
            "type": "listView",
        }

    def _filter_field(self, view: ListView, item: ListFilter) -> FieldDef:
        definition = resolve_column(self.api.org_objects[view.sobject.lower()], item.field)
        assert definition is not None  # checked when the list view was saved
        return definition

    # List records -----------------------------------------------------------------------------

    def _list_records(
        self, request: ApiRequest, view: ListView, version: str, names: list[str]
    ) -> dict[str, Any]:
        from connector.sandbox.salesforce_api import ApiError

        obj = self._object(view)
        page_size = _int_param(request, "pageSize", DEFAULT_PAGE_SIZE)
        offset = _int_param(request, "pageToken", 0)
        if not 1 <= page_size <= MAX_PAGE_SIZE or not 0 <= offset <= MAX_OFFSET:
            raise ApiError(
                400,
                "ILLEGAL_QUERY_PARAMETER_VALUE",
                f"pageSize must be 1-{MAX_PAGE_SIZE} and pageToken 0-{MAX_OFFSET}",
            )
        columns = self._columns(view)
        for name in _list_param(request, "fields"):
            definition = obj.field(name.split(".", 1)[-1])
            if definition is None:
                raise ApiError(
                    400, "INVALID_FIELD", f"The field {name} isn't available to this user"
                )
            columns.append(definition)
        optional = [
            obj.field(name.split(".", 1)[-1]) for name in _list_param(request, "optionalFields")
        ]
        columns += [definition for definition in optional if definition is not None]
        unique = {definition.name: definition for definition in columns}
        sort = (request.query.get("sortBy") or [""])[0].strip()
        order = '"Name" ASC, "Id" ASC'
        if sort:
            descending = sort.startswith("-")
            definition = obj.field(sort.lstrip("-").split(".", 1)[-1])
            if definition is None or definition.name not in unique or not _sortable(definition):
                raise ApiError(
                    400, "INVALID_FIELD", f"sortBy: {sort.lstrip('-')} is not a sortable column"
                )
            direction = "DESC NULLS LAST" if descending else "ASC NULLS FIRST"
            order = f'"{definition.name}" {direction}, "Id" ASC'
        where, params = self._where(view)
        names_sql = ", ".join(f'"{d.name}"' for d in unique.values())
        extra = ', "LastModifiedDate", "SystemModstamp"'
        rows = self.api.db.fetch_all(
            f'SELECT "Id"{extra}{", " + names_sql if names_sql else ""} FROM "{obj.table}" '
            f"WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
            [*params, page_size + 1, offset],
        )
        more = len(rows) > page_size
        rows = rows[:page_size]
        converters = [converter_for(d) for d in unique.values()]
        datetime = converter_for(FieldDef("SystemModstamp", "datetime"))
        records = []
        for row in rows:
            values = {
                d.name: {"displayValue": _display(d, v), "value": convert(v)}
                for d, convert, v in zip(unique.values(), converters, row[3:], strict=True)
            }
            etag = hashlib.md5(json.dumps([row[0], row[2]]).encode()).hexdigest()  # noqa: S324
            records.append(
                {
                    "apiName": obj.name,
                    "childRelationships": {},
                    "eTag": etag,
                    "fields": values,
                    "id": row[0],
                    "lastModifiedById": None,
                    "lastModifiedDate": datetime(row[1]),
                    "recordTypeId": None,
                    "recordTypeInfo": None,
                    "systemModstamp": datetime(row[2]),
                    "weakEtag": int(row[2] or 0) * 1000,
                }
            )
        base = f"/services/data/v{version}/ui-api/list-records/{'/'.join(names)}"

        def page_url(token: int) -> str:
            query = {"pageSize": page_size, "pageToken": token}
            if sort:
                query["sortBy"] = sort
            return f"{base}?{urlencode(query)}"

        next_token = offset + page_size if more else None
        previous_token = max(0, offset - page_size) if offset else None
        return {
            "count": len(records),
            "currentPageToken": str(offset),
            "currentPageUrl": page_url(offset),
            "fields": _list_param(request, "fields"),
            "listInfoETag": _etag(view.full_name, version),
            "listReference": self._reference(view),
            "nextPageToken": None if next_token is None else str(next_token),
            "nextPageUrl": None if next_token is None else page_url(next_token),
            "optionalFields": _list_param(request, "optionalFields"),
            "pageSize": page_size,
            "previousPageToken": None if previous_token is None else str(previous_token),
            "previousPageUrl": None if previous_token is None else page_url(previous_token),
            "records": records,
            "sortBy": sort or None,
        }

    def _where(self, view: ListView) -> tuple[str, list[Any]]:
        """The list view's filters as SQL (filter scope, filter logic, live records only)."""
        obj = self.api.org_objects[view.sobject.lower()]
        clauses: list[str] = []
        params_by_clause: list[list[Any]] = []
        for item in view.filters:
            sql, params = _filter_sql(self._filter_field(view, item), item)
            clauses.append(sql)
            params_by_clause.append(params)
        params: list[Any] = []
        if view.boolean_filter:
            parts = []
            for token in _TOKEN_RE.findall(view.boolean_filter):
                if token.isdigit():
                    parts.append(clauses[int(token) - 1])
                    params += params_by_clause[int(token) - 1]
                else:
                    parts.append(token.upper())
            logic = " ".join(parts)
        else:
            logic = " AND ".join(clauses) or "1"
            params = [value for group in params_by_clause for value in group]
        where = f"({logic})"
        if obj.has_is_deleted:
            where += ' AND "IsDeleted" = 0'
        user = self.api.security.acting_user
        if view.filter_scope in ("Mine", "AssignedToMe") and obj.field("OwnerId") and user:
            where += ' AND "OwnerId" = ?'
            params.append(user)
        return where, params


def _filter_sql(definition: FieldDef, item: ListFilter) -> tuple[str, list[Any]]:
    """One list view filter as SQL. Values are comma-separated (any of them matches)."""
    column = f'"{definition.name}"'
    raw = [] if item.value is None else [v.strip() for v in item.value.split(",")]
    values = [_typed(definition, v) for v in raw] or [None]
    text = definition.type in TEXT_TYPES
    target = f"lower({column})" if text else column
    if text:
        values = [v.lower() if isinstance(v, str) else v for v in values]
    operation = item.operation
    if operation in ("equals", "notEqual"):
        if values == [None] or values == [""]:
            null = "IS NULL" if operation == "equals" else "IS NOT NULL"
            return f"{column} {null}", []
        marks = ", ".join("?" * len(values))
        if operation == "equals":
            return f"{target} IN ({marks})", values
        return f"({column} IS NULL OR {target} NOT IN ({marks}))", values
    if operation in _OPERATORS:
        return " OR ".join(f"{target} {_OPERATORS[operation]} ?" for _ in values), values
    if operation in ("contains", "notContain", "startsWith", "includes", "excludes"):
        patterns = [f"{value}%" if operation == "startsWith" else f"%{value}%" for value in values]
        joined = " OR ".join(f"{target} LIKE ?" for _ in patterns)
        if operation in ("notContain", "excludes"):
            return f"NOT ({joined})", patterns
        return f"({joined})", patterns
    return "1", []


def _typed(definition: FieldDef, value: str) -> Any:
    if definition.type == "boolean":
        return int(value.lower() in ("1", "true"))
    if definition.type in NUMBER_TYPES:
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _display(definition: FieldDef, value: Any) -> Any:
    if value is None or definition.type in ("id", "reference"):
        return None
    if definition.type in NUMBER_TYPES:
        return f"{value:g}" if isinstance(value, float) else str(value)
    if definition.type == "boolean":
        return None
    return None if definition.type in TEXT_TYPES and definition.type != "picklist" else value


def _sortable(definition: FieldDef) -> bool:
    return definition.type not in ("textarea", "multipicklist")


def _operands(item: ListFilter) -> list[str]:
    return [] if item.value is None else [v.strip() for v in item.value.split(",")]


def _operator_name(operation: str) -> str:
    return {
        "equals": "Equals",
        "notEqual": "NotEqual",
        "lessThan": "LessThan",
        "greaterThan": "GreaterThan",
        "lessOrEqual": "LessOrEqual",
        "greaterOrEqual": "GreaterOrEqual",
        "contains": "Contains",
        "notContain": "NotContain",
        "startsWith": "StartsWith",
        "includes": "Includes",
        "excludes": "Excludes",
        "within": "Within",
    }[operation]


def _list_param(request: ApiRequest, name: str) -> list[str]:
    values = ",".join(request.query.get(name, []))
    return [value.strip() for value in values.split(",") if value.strip()]


def _int_param(request: ApiRequest, name: str, default: int) -> int:
    from connector.sandbox.salesforce_api import ApiError

    raw = (request.query.get(name) or [""])[0].strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ApiError(400, "ILLEGAL_QUERY_PARAMETER_VALUE", f"{name} must be a whole number")
    return int(raw)


def _etag(full_name: str, version: str) -> str:
    return hashlib.md5(f"{full_name}:{version}".encode()).hexdigest()  # noqa: S324


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
