"""Describe and setup: object and field descriptions, custom-field creation (Tooling API)."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from connector.errors import (
    ConfigError,
    RequestError,
)
from connector.salesforce.session import SalesforceClient, translate_errors
from connector.store import quote_identifier

log = logging.getLogger("leadscore.salesforce")


@dataclass(frozen=True)
class FieldDescription:
    """One field of an object's describe, trimmed to what leadscore uses."""

    name: str
    type: str
    updateable: bool
    createable: bool
    nillable: bool
    length: int
    precision: int | None
    scale: int | None
    custom: bool
    external_id: bool
    picklist_values: tuple[str, ...]
    restricted_picklist: bool = False
    calculated: bool = False  # a formula or roll-up summary: SystemModstamp misses its changes
    label: str = ""  # what the org's users see (``Seniority`` for ``Seniority__c``)


@dataclass(frozen=True)
class ObjectDescription:
    """An object's describe: name and fields by lower-case name."""

    name: str
    fields: dict[str, FieldDescription]

    def field(self, name: str) -> FieldDescription | None:
        """Look a field up case-insensitively, as Salesforce does."""
        return self.fields.get(name.lower())


# Salesforce field type -> DuckDB column type in the raw tables.
DB_TYPES: dict[str, str] = {
    "boolean": "BOOLEAN",
    "int": "BIGINT",
    "double": "DOUBLE",
    "currency": "DOUBLE",
    "percent": "DOUBLE",
    "date": "DATE",
    "datetime": "TIMESTAMP",
}


def db_type(sf_type: str) -> str:
    """The DuckDB type a Salesforce field type is stored as.

    Args:
        sf_type: describe ``type`` (``string``, ``picklist``, ``datetime``...).

    Returns:
        A DuckDB type name; text for everything without a better mapping.
    """
    return DB_TYPES.get(sf_type, "VARCHAR")


def describe_object(client: SalesforceClient, sobject: str) -> ObjectDescription:
    """Describe an object (cached per client).

    Args:
        client: connected client.
        sobject: API name, e.g. ``Lead``.

    Returns:
        Its fields.

    Raises:
        ConfigError: the object does not exist or is not accessible.
    """
    key = sobject.lower()
    if key in client._describes:
        return client._describes[key]
    quote_identifier(sobject)  # object names reach URLs and SOQL: plain identifiers only
    try:
        with translate_errors(f"describe of {sobject}"):
            raw = client.sf.restful(f"sobjects/{sobject}/describe")
    except RequestError as exc:
        if "NOT_FOUND" in exc.message:
            raise ConfigError(
                f"Salesforce object '{sobject}' does not exist "
                "or is not visible to the integration user",
                hint="check the object's API name in the config",
            ) from None
        raise
    fields = {}
    for f in raw["fields"]:
        fields[f["name"].lower()] = FieldDescription(
            name=f["name"],
            type=f["type"],
            updateable=bool(f.get("updateable")),
            createable=bool(f.get("createable")),
            nillable=bool(f.get("nillable", True)),
            length=int(f.get("length") or 0),
            precision=f.get("precision"),
            scale=f.get("scale"),
            custom=bool(f.get("custom")),
            external_id=bool(f.get("externalId")),
            picklist_values=tuple(
                v["value"] for v in f.get("picklistValues") or () if v.get("active", True)
            ),
            restricted_picklist=bool(f.get("restrictedPicklist")),
            calculated=bool(f.get("calculated")),
            label=str(f.get("label") or ""),
        )
    description = ObjectDescription(name=raw["name"], fields=fields)
    client._describes[key] = description
    return description


def resolve_fields(
    description: ObjectDescription, requested: Sequence[str], *, setting: str
) -> list[str]:
    """Validate configured field names against describe and return their describe spelling.

    Args:
        description: the object's describe.
        requested: field names from config.
        setting: the config key they came from, for the error message.

    Returns:
        The fields in describe spelling, de-duplicated, in the requested order.

    Raises:
        ConfigError: a field does not exist; the message suggests the closest name.
    """
    resolved: list[str] = []
    for name in requested:
        found = description.field(name)
        if found is None:
            hint = suggest_field(description, name)
            if name.lower().endswith("__c"):
                # Describe omits a custom field the user may not read; SOQL and writes then
                # answer INVALID_FIELD "No such column" (api-contracts-realorg section 1.2).
                hint = (
                    f"{hint}; if it exists, field-level security hides it from the integration "
                    "user (Salesforce answers INVALID_FIELD): `leadscore setup` grants the "
                    "fields leadscore reads and writes"
                )
            raise ConfigError(
                f"{setting}: field '{name}' does not exist on {description.name}",
                hint=hint,
            )
        if found.name not in resolved:
            resolved.append(found.name)
    return resolved


def suggest_field(description: ObjectDescription, name: str) -> str:
    """A hint for a field name describe does not know: the closest name, if any.

    Args:
        description: the object's describe.
        name: the unknown name.

    Returns:
        ``did you mean 'X'?`` or a generic hint.
    """
    names = [f.name for f in description.fields.values()]
    close = difflib.get_close_matches(name, names, n=1)
    return f"did you mean '{close[0]}'?" if close else "check the field's API name in Setup"


@dataclass(frozen=True)
class FieldSpec:
    """The Salesforce field that holds one kind of output.

    Attributes:
        metadata_type: Tooling API ``Metadata.type`` used to create it.
        describe_types: describe types an existing field may have to hold the output.
        options: further ``Metadata`` (precision, scale, length).
        picklist: the values come from the prediction's tiers (a picklist of tier names).
    """

    metadata_type: str
    describe_types: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    picklist: bool = False


# Output kind -> the field that holds it. `leadscore setup` creates missing ones from this table;
# `leadscore doctor` checks existing ones against it.
OUTPUT_FIELD_TYPES: dict[str, FieldSpec] = {
    "score": FieldSpec("Number", ("double", "int", "percent"), {"precision": 3, "scale": 0}),
    "tier": FieldSpec("Picklist", ("picklist", "string"), picklist=True),
    "probability": FieldSpec("Number", ("double", "percent"), {"precision": 5, "scale": 4}),
    "reasons": FieldSpec("Text", ("string", "textarea"), {"length": 255}),
    "percentile": FieldSpec("Number", ("double", "int", "percent"), {"precision": 3, "scale": 0}),
    "predicted_class": FieldSpec("Text", ("string", "picklist"), {"length": 64}),
    "class_probabilities": FieldSpec("Text", ("string", "textarea"), {"length": 255}),
    "predicted_value": FieldSpec(
        "Number", ("double", "currency", "int"), {"precision": 18, "scale": 2}
    ),
    "score_change": FieldSpec("Number", ("double", "int"), {"precision": 4, "scale": 0}),
    "trend": FieldSpec("Text", ("string", "picklist"), {"length": 16}),
    "model_version": FieldSpec("Text", ("string",), {"length": 64}),
    "scored_at": FieldSpec("DateTime", ("datetime",)),
}


def field_label(name: str) -> str:
    """A UI label from a field API name (``Lead_Score__c`` -> ``Lead Score``)."""
    return name.removesuffix("__c").replace("_", " ").strip()


def field_metadata(kind: str, name: str, *, picklist: Sequence[str] = ()) -> dict[str, Any]:
    """The Tooling API ``Metadata`` of the field that holds an output kind.

    Args:
        kind: output kind (a key of ``OUTPUT_FIELD_TYPES``).
        name: field API name (for the label).
        picklist: values of a picklist field (tier names).

    Returns:
        The ``Metadata`` object.
    """
    spec = OUTPUT_FIELD_TYPES[kind]
    metadata: dict[str, Any] = {
        "label": field_label(name),
        "type": spec.metadata_type,
        **spec.options,
    }
    if spec.picklist:
        metadata["valueSet"] = {
            "restricted": True,
            "valueSetDefinition": {
                "sorted": False,
                "value": [{"fullName": v, "label": v, "default": False} for v in picklist],
            },
        }
    return metadata


def create_custom_field(
    client: SalesforceClient, sobject: str, name: str, metadata: dict[str, Any]
) -> str:
    """Create a custom field through the Tooling API (``POST tooling/sobjects/CustomField``).

    https://developer.salesforce.com/docs/atlas.en-us.api_tooling.meta/api_tooling/tooling_api_objects_customfield.htm
    Real orgs also need field-level security granted before the integration user sees the
    field: re-check describe afterwards rather than assume it is usable.

    Args:
        client: connected client.
        sobject: object API name.
        name: field API name ending in ``__c``.
        metadata: the field's ``Metadata`` (:func:`field_metadata`).

    Returns:
        The new field's id (``00N...``).

    Raises:
        ConfigError: the name is not a custom field name, or Salesforce refused (e.g. the user
            may not customize the application).
    """
    quote_identifier(sobject)
    quote_identifier(name)
    if not name.endswith("__c"):
        raise ConfigError(
            f"{sobject}.{name}: only custom fields (ending in __c) can be created",
            hint="name the output field like Lead_Score__c, or create it by hand",
        )
    body = {"FullName": f"{sobject}.{name}", "Metadata": metadata}
    try:
        with translate_errors(f"creating {sobject}.{name}"):
            result = client.sf.toolingexecute("sobjects/CustomField", method="POST", data=body)
    except RequestError as exc:
        raise ConfigError(
            exc.message,
            hint="the integration user needs the Customize Application permission, or create "
            "the field by hand in Setup",
        ) from None
    return str(result.get("id", "")) if isinstance(result, dict) else ""
