"""What a real org has that breaks a first write (``Sandbox(org_features=...)``).

Validation rules, duplicate rules, record-type picklist restrictions, multi-currency and formula
fields:

- **Validation rules** are Tooling API records: ``GET tooling/query?q=SELECT Id, ValidationName,
  Active, ErrorMessage, EntityDefinition.DeveloperName FROM ValidationRule`` and
  ``GET tooling/sobjects/ValidationRule/{id}`` (with ``Metadata.errorConditionFormula``)
  (https://developer.salesforce.com/docs/atlas.en-us.api_tooling.meta/api_tooling/tooling_api_objects_validationrule.htm).
  The sandbox does not evaluate formulas: an active rule fails every write that sets a field it
  guards (those in ``ISCHANGED(...)``, else every field it names) with
  ``FIELD_CUSTOM_VALIDATION_EXCEPTION`` and its message.
- **Duplicate rules** are ``DuplicateRule`` sObjects. An active rule blocks API edits of the
  records it flags with ``DUPLICATES_DETECTED`` unless the request sends
  ``Sforce-Duplicate-Rule-Header: allowSave=true``
  (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_duplicaterules.htm).
- **Record types** are ``RecordType`` sObjects; leads get ``RecordTypeId`` (round robin). A
  record type may restrict a picklist to fewer values (UI API ``object-info/{object}/
  picklist-values/{recordTypeId}/{field}``); writing another value to a record of that type
  fails with ``INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST``.
- **Multi-currency**: two or more currencies add ``CurrencyType`` rows and a ``CurrencyIsoCode``
  picklist on every object with an amount.
- **Formula and roll-up fields** are described ``calculated: true`` with ``calculatedFormula``;
  ``Sandbox.set_formula_values`` changes their values without moving ``SystemModstamp``, as a
  formula's inputs changing elsewhere does.
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from connector.sandbox.ids import make_id
from connector.sandbox.schema import FieldDef, ObjectDef
from connector.sandbox.security import insert_row


@dataclass(frozen=True)
class ValidationRuleSpec:
    """An org validation rule.

    Attributes:
        name: ``ValidationName``.
        formula: ``errorConditionFormula`` (fields it names are the ones it guards).
        sobject: Object it runs on.
        active: Whether it runs.
        message: ``ErrorMessage``.
    """

    name: str
    formula: str
    sobject: str = "Lead"
    active: bool = True
    message: str = "This record cannot be changed by an integration."


@dataclass(frozen=True)
class DuplicateRuleSpec:
    """An org duplicate rule.

    Attributes:
        name: ``DeveloperName``.
        sobject: Object it runs on.
        active: Whether it runs.
        flagged: Record ids the rule's matching rule finds duplicates of (their edits fail).
    """

    name: str
    sobject: str = "Lead"
    active: bool = True
    flagged: tuple[str, ...] = ()


@dataclass(frozen=True)
class RecordTypeSpec:
    """A record type and the picklist values it allows.

    Attributes:
        name: ``DeveloperName``.
        sobject: Object it belongs to.
        picklists: Field name -> the values this record type allows.
    """

    name: str
    sobject: str = "Lead"
    picklists: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class FormulaSpec:
    """A formula or roll-up summary field.

    Attributes:
        name: Field API name (``__c``).
        formula: ``calculatedFormula`` (for a roll-up: a description such as ``SUM(...)``).
        sobject: Object it belongs to.
        type: Result type (``double``, ``currency``, ``string`` ...).
    """

    name: str
    formula: str
    sobject: str = "Lead"
    type: str = "double"


@dataclass(frozen=True)
class OrgFeatures:
    """The org's rules and settings that a first write meets.

    Attributes:
        validation_rules: Validation rules.
        duplicate_rules: Duplicate rules.
        record_types: Record types (with their picklist restrictions).
        currencies: ISO codes, corporate first; two or more turn multi-currency on.
        formula_fields: Formula and roll-up fields.
    """

    validation_rules: tuple[ValidationRuleSpec, ...] = ()
    duplicate_rules: tuple[DuplicateRuleSpec, ...] = ()
    record_types: tuple[RecordTypeSpec, ...] = ()
    currencies: tuple[str, ...] = ()
    formula_fields: tuple[FormulaSpec, ...] = ()


@dataclass(frozen=True)
class FormulaField(FieldDef):
    """A calculated field: read-only, described with ``calculated`` and its formula."""

    formula: str = ""

    def describe(self) -> dict[str, Any]:
        """The describe entry, marked calculated."""
        entry = super().describe()
        entry["calculated"] = True
        entry["calculatedFormula"] = self.formula
        return entry


def _obj(name: str, prefix: str, fields: Sequence[FieldDef]) -> ObjectDef:
    system = [
        FieldDef(n, "datetime", label=n, createable=False, updateable=False, nillable=False)
        for n in ("CreatedDate", "LastModifiedDate", "SystemModstamp")
    ]
    obj = ObjectDef(name, name, f"{name}s", prefix, has_is_deleted=False)
    readonly = {"createable": False, "updateable": False}
    every = [FieldDef("Id", "id", length=18, nillable=False, id_lookup=True, **readonly)]
    every += [dataclasses.replace(f, createable=False, updateable=False) for f in fields]
    obj.fields = {f.name.lower(): f for f in [*every, *system]}
    return obj


def _text(name: str, length: int = 255) -> FieldDef:
    return FieldDef(name, "string", label=name, length=length)


def _flag(name: str) -> FieldDef:
    return FieldDef(name, "boolean", label=name, nillable=False, default=False)


class OrgRules:
    """The org features of one sandbox: their sObjects, Tooling records and write checks.

    Args:
        lock: The database lock.
        conn: The read-write connection.
        objects: The org schema (objects and fields are added to it).
        features: What the org has.
    """

    def __init__(
        self,
        lock: threading.RLock,
        conn: sqlite3.Connection,
        objects: dict[str, ObjectDef],
        features: OrgFeatures | None = None,
    ) -> None:
        self.lock = lock
        self.conn = conn
        self.features = features or OrgFeatures()
        self.objects = objects
        self._headers = threading.local()
        self.rest_objects = {
            "duplicaterule": _obj(
                "DuplicateRule",
                "0Bm",
                [
                    _text("DeveloperName", 80),
                    _text("MasterLabel", 80),
                    _text("SobjectType", 40),
                    _flag("IsActive"),
                ],
            ),
            "recordtype": _obj(
                "RecordType",
                "012",
                [
                    _text("Name", 80),
                    _text("DeveloperName", 80),
                    _text("SobjectType", 40),
                    _flag("IsActive"),
                ],
            ),
            "currencytype": _obj(
                "CurrencyType",
                "02X",
                [
                    _text("IsoCode", 3),
                    _flag("IsCorporate"),
                    _flag("IsActive"),
                    FieldDef("ConversionRate", "double", label="Rate", precision=18, scale=6),
                ],
            ),
        }
        entity = _obj(
            "EntityDefinition", "01I", [_text("DeveloperName", 40), _text("QualifiedApiName", 40)]
        )
        rule = _obj(
            "ValidationRule",
            "03d",
            [
                _text("ValidationName", 40),
                _flag("Active"),
                _text("ErrorMessage"),
                _text("Description"),
                FieldDef(
                    "EntityDefinitionId",
                    "reference",
                    label="Entity",
                    length=18,
                    reference_to=("EntityDefinition",),
                    relationship_name="EntityDefinition",
                    createable=False,
                    updateable=False,
                ),
            ],
        )
        self.tooling_objects = {"validationrule": rule, "entitydefinition": entity}
        objects.update(self.rest_objects)
        self._formulas: dict[str, str] = {}
        self._install()

    # Org creation ----------------------------------------------------------------------------

    def _install(self) -> None:
        features = self.features
        conn = self.conn
        with self.lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for obj in [*self.rest_objects.values(), *self.tooling_objects.values()]:
                    conn.execute(f'DROP TABLE IF EXISTS "{obj.table}"')
                    columns = ", ".join(f'"{f.name}" {f.sql_type}' for f in obj.fields.values())
                    conn.execute(f'CREATE TABLE "{obj.table}" ({columns})')
                now = int(
                    conn.execute("SELECT COALESCE(MAX(CreatedDate), 0) FROM User").fetchone()[0]
                )
                stamp = {"CreatedDate": now, "LastModifiedDate": now, "SystemModstamp": now}
                entities: dict[str, str] = {}
                for number, obj in enumerate(self.objects.values(), start=1):
                    entities[obj.name.lower()] = make_id("01I", number)
                    insert_row(
                        conn,
                        "EntityDefinition",
                        {
                            "Id": entities[obj.name.lower()],
                            "DeveloperName": obj.name,
                            "QualifiedApiName": obj.name,
                            **stamp,
                        },
                    )
                for number, rule in enumerate(features.validation_rules, start=1):
                    rule_id = make_id("03d", number)
                    self._formulas[rule_id] = rule.formula
                    insert_row(
                        conn,
                        "ValidationRule",
                        {
                            "Id": rule_id,
                            "ValidationName": rule.name,
                            "Active": int(rule.active),
                            "ErrorMessage": rule.message,
                            "Description": None,
                            "EntityDefinitionId": entities[rule.sobject.lower()],
                            **stamp,
                        },
                    )
                for number, duplicate in enumerate(features.duplicate_rules, start=1):
                    insert_row(
                        conn,
                        "DuplicateRule",
                        {
                            "Id": make_id("0Bm", number),
                            "DeveloperName": duplicate.name,
                            "MasterLabel": duplicate.name.replace("_", " "),
                            "SobjectType": duplicate.sobject,
                            "IsActive": int(duplicate.active),
                            **stamp,
                        },
                    )
                self._install_record_types(conn, stamp)
                self._install_currencies(conn, stamp)
                self._install_formulas(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _add_column(self, conn: sqlite3.Connection, obj: ObjectDef, definition: FieldDef) -> None:
        obj.fields[definition.name.lower()] = definition
        columns = {row[1].lower() for row in conn.execute(f'PRAGMA table_info("{obj.table}")')}
        if definition.name.lower() not in columns:
            conn.execute(
                f'ALTER TABLE "{obj.table}" ADD COLUMN "{definition.name}" {definition.sql_type}'
            )

    def _install_record_types(self, conn: sqlite3.Connection, stamp: dict[str, int]) -> None:
        by_object: dict[str, list[str]] = {}
        for number, spec in enumerate(self.features.record_types, start=1):
            type_id = make_id("012", number)
            by_object.setdefault(spec.sobject.lower(), []).append(type_id)
            insert_row(
                conn,
                "RecordType",
                {
                    "Id": type_id,
                    "Name": spec.name.replace("_", " "),
                    "DeveloperName": spec.name,
                    "SobjectType": spec.sobject,
                    "IsActive": 1,
                    **stamp,
                },
            )
        for lower, type_ids in by_object.items():
            obj = self.objects[lower]
            self._add_column(
                conn,
                obj,
                FieldDef(
                    "RecordTypeId",
                    "reference",
                    label="Record Type ID",
                    length=18,
                    reference_to=("RecordType",),
                    relationship_name="RecordType",
                    createable=False,
                    updateable=False,
                ),
            )
            case = " ".join(
                f"WHEN {n} THEN '{type_id}'" for n, type_id in enumerate(type_ids)
            )  # ids are generated here, not input
            conn.execute(
                f'UPDATE "{obj.table}" SET "RecordTypeId" = CASE rowid % {len(type_ids)} {case} END'
            )

    def _install_currencies(self, conn: sqlite3.Connection, stamp: dict[str, int]) -> None:
        codes = self.features.currencies
        for number, code in enumerate(codes, start=1):
            insert_row(
                conn,
                "CurrencyType",
                {
                    "Id": make_id("02X", number),
                    "IsoCode": code,
                    "IsCorporate": int(number == 1),
                    "IsActive": 1,
                    "ConversionRate": 1.0 if number == 1 else 0.9 + number / 10,
                    **stamp,
                },
            )
        if len(codes) < 2:
            return
        for obj in list(self.objects.values()):
            if not any(f.type == "currency" for f in obj.fields.values()):
                continue
            self._add_column(
                conn,
                obj,
                FieldDef(
                    "CurrencyIsoCode",
                    "picklist",
                    label="Currency ISO Code",
                    length=3,
                    picklist=codes,
                    restricted=True,
                    default=codes[0],
                ),
            )
            conn.execute(f'UPDATE "{obj.table}" SET "CurrencyIsoCode" = ?', [codes[0]])

    def _install_formulas(self, conn: sqlite3.Connection) -> None:
        for spec in self.features.formula_fields:
            obj = self.objects[spec.sobject.lower()]
            self._add_column(
                conn,
                obj,
                FormulaField(
                    spec.name,
                    spec.type,
                    label=spec.name.removesuffix("__c").replace("_", " "),
                    precision=18 if spec.type in ("double", "currency") else 0,
                    scale=2 if spec.type in ("double", "currency") else 0,
                    length=255 if spec.type == "string" else 0,
                    createable=False,
                    updateable=False,
                    custom=True,
                    formula=spec.formula,
                ),
            )

    # Requests ----------------------------------------------------------------------------------

    def read_headers(self, headers: Mapping[str, str]) -> None:
        """Remember this request's duplicate-rule header (per request thread).

        Args:
            headers: Request headers.
        """
        value = headers.get("Sforce-Duplicate-Rule-Header") or ""
        options = {
            key.strip().lower(): val.strip().lower()
            for key, _, val in (part.partition("=") for part in value.split(";"))
        }
        self._headers.allow_save = options.get("allowsave") == "true"

    def validation_rule(self, rule_id: str) -> dict[str, Any] | None:
        """A validation rule as ``tooling/sobjects/ValidationRule/{id}`` answers it.

        Args:
            rule_id: The rule's id.

        Returns:
            The record with ``FullName`` and ``Metadata``, or None.
        """
        with self.lock:
            row = self.conn.execute(
                'SELECT v."Id", v."ValidationName", v."Active", v."ErrorMessage", '
                'e."DeveloperName" FROM "ValidationRule" v JOIN "EntityDefinition" e '
                'ON e."Id" = v."EntityDefinitionId" WHERE v."Id" = ?',
                [rule_id],
            ).fetchone()
        if row is None:
            return None
        return {
            "attributes": {"type": "ValidationRule"},
            "Id": row[0],
            "ValidationName": row[1],
            "Active": bool(row[2]),
            "ErrorMessage": row[3],
            "FullName": f"{row[4]}.{row[1]}",
            "Metadata": {
                "active": bool(row[2]),
                "description": None,
                "errorConditionFormula": self._formulas.get(row[0], ""),
                "errorDisplayField": None,
                "errorMessage": row[3],
            },
        }

    def picklist_values(
        self, record_type_id: str, sobject: str, field_name: str
    ) -> list[str] | None:
        """The values a record type allows for a picklist (None: unknown record type).

        Args:
            record_type_id: RecordType id (``012000000000000AAA``: the master record type).
            sobject: Object API name.
            field_name: Picklist field name.

        Returns:
            The allowed values.
        """
        obj = self.objects.get(sobject.lower())
        definition = obj.field(field_name) if obj else None
        if definition is None:
            return None
        if record_type_id.startswith("012000000000000"):
            return list(definition.picklist)
        for number, spec in enumerate(self.features.record_types, start=1):
            if make_id("012", number)[:15] == record_type_id[:15]:
                allowed = _lookup(spec.picklists, definition.name)
                return list(definition.picklist if allowed is None else allowed)
        return None

    def check_write(self, obj: ObjectDef, changes: dict[str, Any], current: dict[str, Any]) -> None:
        """Apply the org's rules to an API create or update.

        Args:
            obj: The object written.
            changes: The fields set by the write.
            current: The record before the write (empty on create).

        Raises:
            RecordError: A rule rejects the write.
        """
        from connector.sandbox.salesforce_api import RecordError

        features = self.features
        written = {name.lower() for name in changes}
        for rule in features.validation_rules:
            same_object = rule.sobject.lower() == obj.name.lower()
            if rule.active and same_object and written & guarded_fields(rule.formula):
                raise RecordError("FIELD_CUSTOM_VALIDATION_EXCEPTION", rule.message)
        record_id = str(current.get("Id") or "")
        allow_save = getattr(self._headers, "allow_save", False)
        for duplicate in features.duplicate_rules:
            if (
                duplicate.active
                and duplicate.sobject.lower() == obj.name.lower()
                and record_id[:15] in {flagged[:15] for flagged in duplicate.flagged}
                and not allow_save
            ):
                raise RecordError(
                    "DUPLICATES_DETECTED",
                    "You're creating a duplicate record. We recommend you use an existing record "
                    "instead.",
                )
        type_id = current.get("RecordTypeId")
        if type_id:
            for name, value in changes.items():
                allowed = self.picklist_values(type_id, obj.name, name)
                if allowed is not None and value is not None and value not in allowed:
                    raise RecordError(
                        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                        f"{name}: bad value for restricted picklist field: {value}",
                        [name],
                    )

    def set_formula_values(self, sobject: str, values: Mapping[str, Any]) -> None:
        """Change formula results without touching ``SystemModstamp`` (their inputs changed).

        Args:
            sobject: Object API name.
            values: Record id -> {field: value}.
        """
        obj = self.objects[sobject.lower()]
        with self.lock:
            for record_id, fields in values.items():
                for name, value in fields.items():
                    definition = obj.field(name)
                    if not isinstance(definition, FormulaField):
                        raise ValueError(f"{sobject}.{name} is not a formula field")
                    self.conn.execute(
                        f'UPDATE "{obj.table}" SET "{definition.name}" = ? WHERE "Id" = ?',
                        [value, record_id],
                    )


def guarded_fields(formula: str) -> set[str]:
    """The fields a validation formula guards, lower case.

    Those inside ``ISCHANGED(...)``/``PRIORVALUE(...)`` when it uses them, else every field name.

    Args:
        formula: The error condition formula.

    Returns:
        Lower-case field names.
    """
    changed = re.findall(r"(?:ISCHANGED|PRIORVALUE)\(\s*([A-Za-z_][A-Za-z0-9_]*)", formula, re.I)
    names = changed or re.findall(r"\b([A-Za-z][A-Za-z0-9_]*)\b(?!\s*\()", formula)
    return {name.lower() for name in names}


def _lookup(mapping: Mapping[str, tuple[str, ...]], name: str) -> tuple[str, ...] | None:
    for key, value in mapping.items():
        if key.lower() == name.lower():
            return value
    return None
