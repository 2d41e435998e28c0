"""Tooling API for the sandbox: ``POST tooling/sobjects/CustomField`` creates a custom field.

Shape (``shared/docs/api-contracts.md`` section 1.8,
https://developer.salesforce.com/docs/atlas.en-us.api_tooling.meta/api_tooling/tooling_api_objects_customfield.htm)::

    {"FullName": "Lead.Lead_Score__c",
     "Metadata": {"label": "Lead Score", "type": "Number", "precision": 3, "scale": 0}}

answered with 201 ``{"id": "00N...", "success": true, "errors": []}``. The field joins the
object's describe (``custom: true``) and gets a column in the org's table. As in real orgs, a new
field has no ``FieldPermissions`` rows, so it is invisible to every user (absent from describe and
SOQL) until field-level security grants it (``connector/sandbox/security.py``). With
``grant_access=True`` the sandbox grants read and edit to the integration user's profile at once,
as the Setup UI's "establish field-level security" step would.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from connector.sandbox.ids import make_id
from connector.sandbox.salesforce_api import ApiError, ApiRequest, ApiResponse, SalesforceApi, _json
from connector.sandbox.schema import FieldDef
from connector.sandbox.security import INTEGRATION_PROFILE
from connector.sandbox.soql import SoqlError, compile_query

_NAME = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)\.([A-Za-z][A-Za-z0-9_]*__c)$")
MAX_TEXT_LENGTH = 255
MAX_LONG_TEXT_LENGTH = 131_072


def field_from_metadata(name: str, metadata: dict[str, Any]) -> FieldDef:
    """Build the describe definition of a custom field from its Tooling API metadata.

    Args:
        name: Field API name (``Lead_Score__c``).
        metadata: The ``Metadata`` object of the request.

    Returns:
        The field definition.

    Raises:
        ApiError: Missing label, unsupported type or invalid sizes.
    """
    label = metadata.get("label")
    if not isinstance(label, str) or not label.strip():
        raise ApiError(400, "REQUIRED_FIELD_MISSING", "Required field is missing: label", ["label"])
    kind = metadata.get("type")
    common: dict[str, Any] = {"label": label.strip(), "custom": True}
    if kind in ("Number", "Percent", "Currency"):
        precision = int(metadata.get("precision", 18))
        scale = int(metadata.get("scale", 0))
        if not 1 <= precision <= 18 or not 0 <= scale <= precision:
            raise ApiError(
                400, "FIELD_INTEGRITY_EXCEPTION", "precision must be 1-18 and scale 0-precision"
            )
        sf_type = {"Number": "double", "Percent": "percent", "Currency": "currency"}[kind]
        return FieldDef(name, sf_type, precision=precision, scale=scale, **common)
    if kind in ("Text", "TextArea", "LongTextArea"):
        limit = MAX_TEXT_LENGTH if kind != "LongTextArea" else MAX_LONG_TEXT_LENGTH
        length = int(metadata.get("length", MAX_TEXT_LENGTH))
        if not 1 <= length <= limit:
            raise ApiError(400, "FIELD_INTEGRITY_EXCEPTION", f"length must be 1-{limit}")
        sf_type = "string" if kind == "Text" else "textarea"
        return FieldDef(name, sf_type, length=length, **common)
    if kind == "Picklist":
        value_set = metadata.get("valueSet") or {}
        definition = value_set.get("valueSetDefinition") or {}
        values = tuple(
            str(item["fullName"]) for item in definition.get("value") or () if "fullName" in item
        )
        if not values:
            raise ApiError(400, "FIELD_INTEGRITY_EXCEPTION", "a picklist needs at least one value")
        return FieldDef(
            name,
            "picklist",
            length=MAX_TEXT_LENGTH,
            picklist=values,
            restricted=bool(value_set.get("restricted")),
            **common,
        )
    if kind == "Checkbox":
        return FieldDef(name, "boolean", nillable=False, default=False, **common)
    if kind == "DateTime":
        return FieldDef(name, "datetime", **common)
    if kind == "Date":
        return FieldDef(name, "date", **common)
    raise ApiError(400, "FIELD_INTEGRITY_EXCEPTION", f"Unsupported custom field type: {kind}")


class ToolingApi:
    """The ``/services/data/vXX.X/tooling/...`` resources of one sandbox org.

    Args:
        api: The REST surface (schema and database).
        grant_access: Whether new fields are visible and editable to the integration user at
            once (field-level security granted on create).
    """

    def __init__(self, api: SalesforceApi, *, grant_access: bool = True) -> None:
        self.api = api
        self.grant_access = grant_access
        self._numbers = itertools.count(1)

    def handle(self, request: ApiRequest, version: str, rest: list[str]) -> ApiResponse:
        """Serve ``tooling/sobjects/CustomField`` (POST).

        Args:
            request: The request.
            version: API version of the URL.
            rest: Path segments after ``tooling``.

        Returns:
            The response.
        """
        if rest[0] == "query" and len(rest) == 1:
            self.api._require_method(request, "GET")
            return self._query(request, version)
        if rest[:2] == ["sobjects", "ValidationRule"] and len(rest) == 3:
            self.api._require_method(request, "GET")
            record = self.api.rules.validation_rule(rest[2])
            if record is None:
                raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
            return ApiResponse(200, _json(record))
        if rest[:2] != ["sobjects", "CustomField"] or len(rest) != 2:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        self.api._require_method(request, "POST")
        body = self.api._parse_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("Metadata"), dict):
            raise ApiError(400, "JSON_PARSER_ERROR", "FullName and Metadata are required")
        match = _NAME.match(str(body.get("FullName") or ""))
        if match is None:
            raise ApiError(
                400,
                "INVALID_FIELD",
                "FullName must be Object.Field__c (a custom field ends in __c)",
                ["FullName"],
            )
        obj = self.api.org_objects.get(match.group(1).lower())
        if obj is None:
            raise ApiError(400, "INVALID_TYPE", f"sObject type '{match.group(1)}' is not supported")
        definition = field_from_metadata(match.group(2), body["Metadata"])
        key = definition.name.lower()
        with self.api.db.lock:
            if obj.field(key) is not None:
                raise ApiError(
                    400,
                    "DUPLICATE_DEVELOPER_NAME",
                    f"There is already a field named {definition.name} on {obj.name}.",
                )
            conn = self.api.db.connection
            columns = {row[1].lower() for row in conn.execute(f'PRAGMA table_info("{obj.table}")')}
            if key not in columns:
                conn.execute(
                    f'ALTER TABLE "{obj.table}" ADD COLUMN "{definition.name}" '
                    f"{definition.sql_type}"
                )
            obj.fields[key] = definition
            if self.grant_access:
                self.api.security.grant_profile(
                    INTEGRATION_PROFILE, obj.name, definition.name, edit=True
                )
        field_id = make_id("00N", next(self._numbers))
        return ApiResponse(
            201, _json({"id": field_id, "success": True, "errors": [], "warnings": [], "infos": []})
        )

    def _query(self, request: ApiRequest, version: str) -> ApiResponse:
        """``tooling/query?q=`` over the Tooling objects (``ValidationRule``, one page)."""
        source = (request.query.get("q") or [""])[0]
        try:
            compiled = compile_query(source, objects=self.api.rules.tooling_objects)
        except SoqlError as error:
            raise ApiError(400, error.error_code, error.message) from error
        with self.api.db.lock:
            conn = self.api.db.connection
            if compiled.count_only:
                total = conn.execute(compiled.count_sql, compiled.params).fetchone()[0]
                return ApiResponse(
                    200, _json({"size": total, "totalSize": total, "done": True, "records": []})
                )
            rowids = [row[0] for row in conn.execute(compiled.ids_sql, compiled.params)]
            rows = conn.execute(compiled.page_sql(len(rowids)), rowids).fetchall() if rowids else []
            shaped = compiled.shape(rows, version)
        records = [shaped[rowid] for rowid in rowids if rowid in shaped]
        body = {
            "size": len(records),
            "totalSize": len(records),
            "done": True,
            "entityTypeName": compiled.sobject.name,
            "records": records,
        }
        return ApiResponse(200, _json(body))

    def grant(self, sobject: str, field_name: str) -> None:
        """Grant the integration user access to a hidden field (field-level security).

        Args:
            sobject: Object API name.
            field_name: Field API name.

        Raises:
            ValueError: No such hidden field.
        """
        obj = self.api.org_objects.get(sobject.lower())
        definition = obj.field(field_name) if obj is not None else None
        if obj is None or definition is None:
            raise ValueError(f"unknown field {sobject}.{field_name}")
        self.api.security.grant_profile(INTEGRATION_PROFILE, obj.name, definition.name, edit=True)
