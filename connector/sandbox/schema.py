"""The sandbox org's objects and fields, their describe output and their SQLite storage.

Field types and describe keys follow the Salesforce FieldDescribe schema
(https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_describesobjects_describesobjectresult.htm)
trimmed to what the connector reads (api-contracts section 1.4). Storage is one SQLite table per
object whose columns carry the describe spelling of each field:

- datetime fields are INTEGER seconds since the Unix epoch (UTC), served as
  ``YYYY-MM-DDThh:mm:ss.000+0000``;
- date fields are TEXT ``YYYY-MM-DD``;
- boolean fields are INTEGER 0/1; int fields INTEGER; double, currency and percent fields REAL;
- every other type (id, reference, string, picklist, ...) is TEXT.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from connector.sandbox.describe_keys import (
    complete_field,
    complete_global_sobject,
    complete_sobject,
)

API_VERSION = "59.0"

TEXT_TYPES = frozenset(
    {"string", "email", "phone", "url", "textarea", "picklist", "multipicklist", "combobox"}
)
"""Types compared case-insensitively in SOQL and validated for length on writes."""
NUMBER_TYPES = frozenset({"int", "double", "currency", "percent"})
ID_TYPES = frozenset({"id", "reference"})
_SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "boolean": "xsd:boolean",
    "int": "xsd:int",
    "double": "xsd:double",
    "currency": "xsd:double",
    "percent": "xsd:double",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
}


@dataclass(frozen=True)
class FieldDef:
    """One field of an sObject.

    Attributes:
        name: API name in describe spelling.
        type: Salesforce field type (``string``, ``picklist``, ``datetime``, ...).
        label: UI label, used in error messages.
        length: Maximum length of text fields (0 for other types).
        precision: Total digits of double/currency fields.
        scale: Digits after the decimal point of double/currency fields.
        digits: Maximum digits of int fields.
        nillable: Whether the field may be null.
        createable: Whether the API may set it on create.
        updateable: Whether the API may set it on update.
        custom: Whether it is a custom (``__c``) field.
        picklist: Allowed picklist values, in display order.
        restricted: Whether the picklist rejects values outside ``picklist``.
        reference_to: Object names a reference field may point to.
        relationship_name: Name of the parent relationship (``Owner`` for ``OwnerId``).
        external_id: Whether the field is marked External ID.
        id_lookup: Whether the field can identify a record in upserts.
        required: Whether a create must supply it (not nillable and not defaulted).
        default: Value set on create when the field is omitted.
    """

    name: str
    type: str
    label: str = ""
    length: int = 0
    precision: int = 0
    scale: int = 0
    digits: int = 0
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    custom: bool = False
    picklist: tuple[str, ...] = ()
    restricted: bool = False
    reference_to: tuple[str, ...] = ()
    relationship_name: str | None = None
    external_id: bool = False
    id_lookup: bool = False
    required: bool = False
    default: Any = None

    @property
    def sql_type(self) -> str:
        """SQLite column type used to store the field."""
        if self.type in ("boolean", "int", "datetime"):
            return "INTEGER"
        if self.type in ("double", "currency", "percent"):
            return "REAL"
        return "TEXT"

    def describe(self) -> dict[str, Any]:
        """Return the field's describe entry (FieldDescribe subset).

        Returns:
            A JSON-safe dict.
        """
        is_text = self.type in TEXT_TYPES or self.type in ID_TYPES
        entry: dict[str, Any] = {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "soapType": _SOAP_TYPES.get(self.type, "xsd:string"),
            "custom": self.custom,
            "createable": self.createable,
            "updateable": self.updateable,
            "nillable": self.nillable,
            "defaultedOnCreate": self.default is not None or self.name == "Id",
            "length": self.length if is_text else 0,
            "byteLength": self.length * 3 if is_text else 0,
            "precision": self.precision,
            "scale": self.scale,
            "digits": self.digits,
            "externalId": self.external_id,
            "idLookup": self.id_lookup,
            "unique": self.name == "Id",
            "calculated": False,
            "filterable": True,
            "sortable": self.type not in ("textarea", "multipicklist"),
            "groupable": self.type not in ("double", "currency", "percent", "datetime"),
            "restrictedPicklist": self.restricted,
            "picklistValues": [
                {
                    "active": True,
                    "defaultValue": value == self.default,
                    "label": value,
                    "value": value,
                    "validFor": None,
                }
                for value in self.picklist
            ],
            "referenceTo": list(self.reference_to),
            "relationshipName": self.relationship_name,
            "polymorphicForeignKey": len(self.reference_to) > 1,
        }
        return complete_field(entry)


@dataclass
class ObjectDef:
    """One sObject type.

    Attributes:
        name: API name (``Lead``).
        label: Singular label.
        label_plural: Plural label.
        key_prefix: The 3-character id prefix.
        fields: Fields keyed by lower-case name, in describe order.
        has_is_deleted: Whether the object has ``IsDeleted`` (soft delete, recycle bin).
        custom: Whether it is a custom object.
    """

    name: str
    label: str
    label_plural: str
    key_prefix: str
    fields: dict[str, FieldDef] = field(default_factory=dict)
    has_is_deleted: bool = True
    custom: bool = False

    @property
    def table(self) -> str:
        """SQLite table name (the object's API name)."""
        return self.name

    def field(self, name: str) -> FieldDef | None:
        """Look a field up case-insensitively, as Salesforce does.

        Args:
            name: Field name in any letter case.

        Returns:
            The field, or None when the object has no such field.
        """
        return self.fields.get(name.lower())

    def relationship(self, name: str) -> FieldDef | None:
        """Find the reference field behind a parent relationship name (``Owner`` -> ``OwnerId``).

        Args:
            name: Relationship name in any letter case.

        Returns:
            The reference field, or None.
        """
        lowered = name.lower()
        for candidate in self.fields.values():
            if candidate.relationship_name and candidate.relationship_name.lower() == lowered:
                return candidate
        return None

    def urls(self, version: str = API_VERSION) -> dict[str, str]:
        """Return the object's resource URLs as listed by describe.

        Args:
            version: API version of the request.

        Returns:
            Resource name to URL path.
        """
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {
            "sobject": base,
            "describe": f"{base}/describe",
            "rowTemplate": f"{base}/{{ID}}",
        }

    def describe_global_entry(self, version: str = API_VERSION) -> dict[str, Any]:
        """Return the object's entry in the describeGlobal (``GET /sobjects/``) answer.

        Args:
            version: API version of the request.

        Returns:
            A JSON-safe dict.
        """
        entry = {
            "name": self.name,
            "label": self.label,
            "labelPlural": self.label_plural,
            "keyPrefix": self.key_prefix,
            "custom": self.custom,
            "createable": self.name != "User",
            "updateable": True,
            "deletable": self.has_is_deleted,
            "queryable": True,
            "retrieveable": True,
            "searchable": True,
            "urls": self.urls(version),
        }
        return complete_global_sobject(entry)

    def describe(self, version: str = API_VERSION) -> dict[str, Any]:
        """Return the full describe (``GET /sobjects/{obj}/describe``) answer.

        Args:
            version: API version of the request.

        Returns:
            A JSON-safe dict.
        """
        answer = self.describe_global_entry(version)
        answer["fields"] = [definition.describe() for definition in self.fields.values()]
        answer["childRelationships"] = []
        answer["recordTypeInfos"] = []
        return complete_sobject(answer)


def _label(name: str) -> str:
    """Derive a UI label from an API name (``NumberOfEmployees`` -> ``Number Of Employees``)."""
    base = name.removesuffix("__c").replace("_", " ")
    base = re.sub(r"Id$", " ID", base) if name.endswith("Id") and name != "Id" else base
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", base).strip()


def _f(name: str, type_: str, **options: Any) -> FieldDef:
    """Build a FieldDef with a derived label and the type's usual defaults."""
    options.setdefault("label", _label(name))
    if type_ == "picklist" or type_ == "multipicklist":
        options.setdefault("length", 255)
    if type_ in ID_TYPES:
        options.setdefault("length", 18)
    if name.endswith("__c"):
        options.setdefault("custom", True)
    return FieldDef(name=name, type=type_, **options)


def _system_fields(has_is_deleted: bool = True) -> list[FieldDef]:
    """The read-only audit fields every object carries."""
    readonly = {"createable": False, "updateable": False, "nillable": False}
    fields = [
        _f("CreatedDate", "datetime", label="Created Date", **readonly),
        _f("LastModifiedDate", "datetime", label="Last Modified Date", **readonly),
        _f("SystemModstamp", "datetime", label="System Modstamp", **readonly),
    ]
    if has_is_deleted:
        fields.insert(0, _f("IsDeleted", "boolean", label="Deleted", default=False, **readonly))
    return fields


def _id_field() -> FieldDef:
    return _f(
        "Id",
        "id",
        label="Record ID",
        nillable=False,
        createable=False,
        updateable=False,
        id_lookup=True,
    )


def _activity_fields() -> list[FieldDef]:
    """Who, what and subject: the fields Tasks and Events share (both are activities)."""
    return [
        _f(
            "WhoId",
            "reference",
            label="Name ID",
            reference_to=("Contact", "Lead"),
            relationship_name="Who",
        ),
        _f(
            "WhatId",
            "reference",
            label="Related To ID",
            reference_to=("Account", "Opportunity", "Campaign"),
            relationship_name="What",
        ),
        _f("Subject", "combobox", length=255),
    ]


def _owner_field() -> FieldDef:
    # Real Lead/Task owners are polymorphic (User or Queue); the sandbox only has users.
    return _f(
        "OwnerId",
        "reference",
        label="Owner ID",
        nillable=False,
        reference_to=("User",),
        relationship_name="Owner",
    )


def _name_fields() -> list[FieldDef]:
    return [
        _f("FirstName", "string", label="First Name", length=40),
        _f("LastName", "string", label="Last Name", length=80, nillable=False, required=True),
        # Name is the compound display name, derived from FirstName and LastName.
        _f(
            "Name",
            "string",
            label="Full Name",
            length=121,
            createable=False,
            updateable=False,
            nillable=False,
            id_lookup=True,
        ),
    ]


INDUSTRIES = (
    "Technology",
    "Software",
    "Financial Services",
    "Healthcare",
    "Manufacturing",
    "Retail",
    "Education",
    "Government",
    "Media",
    "Telecommunications",
    "Energy",
    "Consulting",
)
LEAD_SOURCES = (
    "Web",
    "Webinar",
    "Trade Show",
    "Partner Referral",
    "Employee Referral",
    "Paid Search",
    "Content Syndication",
    "Cold Outreach",
)
SENIORITIES = ("C-Level", "VP", "Director", "Manager", "Individual Contributor")
LEAD_STATUSES = (
    "Open - Not Contacted",
    "Working - Contacted",
    "Closed - Converted",
    "Closed - Not Converted",
)
RATINGS = ("Hot", "Warm", "Cold")
LEAD_TIERS = ("A", "B", "C", "D")
SALES_TASK_TYPES = ("Call", "Email", "Meeting")
MARKETING_TASK_TYPES = ("Web Visit", "Email Click", "Webinar", "Content Download")
TASK_TYPES = SALES_TASK_TYPES + MARKETING_TASK_TYPES
TASK_STATUSES = ("Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred")
TASK_SUBTYPES = ("Task", "Email", "ListEmail", "Cadence", "Call", "LinkedIn")
CAMPAIGN_TYPES = ("Webinar", "Email", "Trade Show", "Content")
CAMPAIGN_STATUSES = ("Planned", "In Progress", "Completed", "Aborted")
MEMBER_STATUSES = ("Sent", "Responded")
RESPONDED_STATUSES = frozenset({"Responded"})
OPPORTUNITY_STAGES = (
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
)
ACCOUNT_TYPES = ("Prospect", "Customer - Direct", "Customer - Channel", "Partner", "Other")


def _build_objects() -> dict[str, ObjectDef]:
    """Define every sObject of the sandbox org."""
    readonly = {"createable": False, "updateable": False}
    objects: list[tuple[ObjectDef, list[FieldDef]]] = []

    objects.append(
        (
            ObjectDef("User", "User", "Users", "005", has_is_deleted=False),
            [
                _id_field(),
                _f("Username", "string", length=80, nillable=False, required=True),
                *_name_fields(),
                _f("Email", "email", length=128, nillable=False, required=True),
                _f("Title", "string", length=80),
                _f("Department", "string", length=80),
                _f("IsActive", "boolean", label="Active", default=True, nillable=False),
                *_system_fields(has_is_deleted=False),
            ],
        )
    )
    objects.append(
        (
            ObjectDef("Account", "Account", "Accounts", "001"),
            [
                _id_field(),
                _f(
                    "Name",
                    "string",
                    label="Account Name",
                    length=255,
                    nillable=False,
                    required=True,
                    id_lookup=True,
                ),
                _f("Type", "picklist", label="Account Type", picklist=ACCOUNT_TYPES),
                _f("Industry", "picklist", picklist=INDUSTRIES),
                _f("NumberOfEmployees", "int", label="Employees", digits=8),
                _f("AnnualRevenue", "currency", label="Annual Revenue", precision=18, scale=0),
                _f("BillingCountry", "string", label="Billing Country", length=80),
                _owner_field(),
                *_system_fields(),
            ],
        )
    )
    objects.append(
        (
            ObjectDef("Contact", "Contact", "Contacts", "003"),
            [
                _id_field(),
                _f(
                    "AccountId",
                    "reference",
                    label="Account ID",
                    reference_to=("Account",),
                    relationship_name="Account",
                ),
                *_name_fields(),
                _f("Email", "email", length=80, id_lookup=True),
                _f("Title", "string", length=128),
                _f("LeadSource", "picklist", label="Lead Source", picklist=LEAD_SOURCES),
                _f("MailingCountry", "string", label="Mailing Country", length=80),
                _owner_field(),
                *_system_fields(),
            ],
        )
    )
    objects.append(
        (
            ObjectDef("Lead", "Lead", "Leads", "00Q"),
            [
                _id_field(),
                *_name_fields(),
                _f("Email", "email", length=80, id_lookup=True),
                _f("Company", "string", length=255, nillable=False, required=True),
                _f("Title", "string", length=128),
                _f("Seniority__c", "picklist", label="Seniority", picklist=SENIORITIES),
                _owner_field(),
                _f("Industry", "picklist", picklist=INDUSTRIES),
                _f("LeadSource", "picklist", label="Lead Source", picklist=LEAD_SOURCES),
                _f(
                    "Status",
                    "picklist",
                    nillable=False,
                    picklist=LEAD_STATUSES,
                    default=LEAD_STATUSES[0],
                ),
                _f("Rating", "picklist", picklist=RATINGS),
                _f("Country", "string", length=80),
                _f("NumberOfEmployees", "int", label="Employees", digits=8),
                _f("AnnualRevenue", "currency", label="Annual Revenue", precision=18, scale=0),
                _f(
                    "IsConverted",
                    "boolean",
                    label="Converted",
                    nillable=False,
                    default=False,
                    **readonly,
                ),
                _f("ConvertedDate", "date", label="Converted Date", **readonly),
                _f(
                    "ConvertedAccountId",
                    "reference",
                    label="Converted Account ID",
                    reference_to=("Account",),
                    relationship_name="ConvertedAccount",
                    **readonly,
                ),
                _f(
                    "ConvertedContactId",
                    "reference",
                    label="Converted Contact ID",
                    reference_to=("Contact",),
                    relationship_name="ConvertedContact",
                    **readonly,
                ),
                _f(
                    "ConvertedOpportunityId",
                    "reference",
                    label="Converted Opportunity ID",
                    reference_to=("Opportunity",),
                    relationship_name="ConvertedOpportunity",
                    **readonly,
                ),
                *_system_fields(),
                _f("Lead_Score__c", "double", label="Lead Score", precision=3, scale=0),
                _f(
                    "Lead_Tier__c",
                    "picklist",
                    label="Lead Tier",
                    picklist=LEAD_TIERS,
                    restricted=True,
                ),
                _f("Lead_Score_Reasons__c", "string", label="Lead Score Reasons", length=255),
            ],
        )
    )
    objects.append(
        (
            ObjectDef("Campaign", "Campaign", "Campaigns", "701"),
            [
                _id_field(),
                _f(
                    "Name",
                    "string",
                    label="Campaign Name",
                    length=80,
                    nillable=False,
                    required=True,
                    id_lookup=True,
                ),
                _f("Type", "picklist", picklist=CAMPAIGN_TYPES),
                _f("Status", "picklist", picklist=CAMPAIGN_STATUSES, default="Planned"),
                _f("IsActive", "boolean", label="Active", nillable=False, default=False),
                _f("StartDate", "date", label="Start Date"),
                _f("EndDate", "date", label="End Date"),
                _owner_field(),
                *_system_fields(),
            ],
        )
    )
    objects.append(
        (
            ObjectDef("CampaignMember", "Campaign Member", "Campaign Members", "00v"),
            [
                _id_field(),
                _f(
                    "CampaignId",
                    "reference",
                    label="Campaign ID",
                    nillable=False,
                    required=True,
                    reference_to=("Campaign",),
                    relationship_name="Campaign",
                    updateable=False,
                ),
                _f(
                    "LeadId",
                    "reference",
                    label="Lead ID",
                    reference_to=("Lead",),
                    relationship_name="Lead",
                    updateable=False,
                ),
                _f(
                    "ContactId",
                    "reference",
                    label="Contact ID",
                    reference_to=("Contact",),
                    relationship_name="Contact",
                    updateable=False,
                ),
                _f("Status", "picklist", picklist=MEMBER_STATUSES, default="Sent"),
                # Derived from Status: the member status value carries the "responded" flag.
                _f(
                    "HasResponded",
                    "boolean",
                    label="Responded",
                    nillable=False,
                    default=False,
                    **readonly,
                ),
                _f("FirstRespondedDate", "date", label="First Responded Date", **readonly),
                *_system_fields(),
            ],
        )
    )
    objects.append(
        (
            ObjectDef("Task", "Task", "Tasks", "00T"),
            [
                _id_field(),
                *_activity_fields(),
                _f("Type", "picklist", picklist=TASK_TYPES),
                _f(
                    "Status",
                    "picklist",
                    nillable=False,
                    picklist=TASK_STATUSES,
                    default="Not Started",
                ),
                _f(
                    "Priority",
                    "picklist",
                    nillable=False,
                    picklist=("High", "Normal", "Low"),
                    default="Normal",
                ),
                _f(
                    "IsClosed", "boolean", label="Closed", nillable=False, default=False, **readonly
                ),
                _f("ActivityDate", "date", label="Due Date Only"),
                _f(
                    "TaskSubtype",
                    "picklist",
                    label="Task Subtype",
                    picklist=TASK_SUBTYPES,
                    updateable=False,
                    default="Task",
                ),
                _owner_field(),
                *_system_fields(),
            ],
        )
    )
    objects.append(
        (
            ObjectDef("Event", "Event", "Events", "00U"),
            [
                _id_field(),
                *_activity_fields(),
                _f("Type", "picklist", picklist=("Call", "Email", "Meeting", "Other")),
                _f("ActivityDate", "date", label="Due Date Only", **readonly),
                _f("ActivityDateTime", "datetime", label="Due Date Time"),
                _f("StartDateTime", "datetime", label="Start Date Time"),
                _f("EndDateTime", "datetime", label="End Date Time"),
                _f("DurationInMinutes", "int", label="Duration", digits=8),
                _owner_field(),
                *_system_fields(),
            ],
        )
    )
    objects.append(
        (
            ObjectDef("Opportunity", "Opportunity", "Opportunities", "006"),
            [
                _id_field(),
                _f(
                    "AccountId",
                    "reference",
                    label="Account ID",
                    reference_to=("Account",),
                    relationship_name="Account",
                ),
                _f(
                    "Name",
                    "string",
                    label="Name",
                    length=120,
                    nillable=False,
                    required=True,
                    id_lookup=True,
                ),
                _f(
                    "StageName",
                    "picklist",
                    label="Stage",
                    nillable=False,
                    required=True,
                    picklist=OPPORTUNITY_STAGES,
                ),
                # Derived from StageName, as the stage's IsClosed/IsWon flags dictate.
                _f(
                    "IsClosed", "boolean", label="Closed", nillable=False, default=False, **readonly
                ),
                _f("IsWon", "boolean", label="Won", nillable=False, default=False, **readonly),
                _f("Amount", "currency", precision=18, scale=2),
                _f("CloseDate", "date", label="Close Date", nillable=False, required=True),
                _f("LeadSource", "picklist", label="Lead Source", picklist=LEAD_SOURCES),
                _owner_field(),
                *_system_fields(),
            ],
        )
    )

    result: dict[str, ObjectDef] = {}
    for definition, fields in objects:
        definition.fields = {item.name.lower(): item for item in fields}
        result[definition.name.lower()] = definition
    return result


OBJECTS: dict[str, ObjectDef] = _build_objects()
"""Every sObject, keyed by lower-case API name."""
KEY_PREFIXES: dict[str, ObjectDef] = {obj.key_prefix: obj for obj in OBJECTS.values()}


def copy_schema() -> dict[str, ObjectDef]:
    """A private copy of the base schema that one sandbox may change.

    Fields created through the Tooling API, removed fields and field access changes apply to the
    copy only, so sandboxes in one process never see each other's changes.

    Returns:
        Every sObject, keyed by lower-case API name (fields are immutable and shared).
    """
    return {key: dataclasses.replace(obj, fields=dict(obj.fields)) for key, obj in OBJECTS.items()}


def get_object(name: str) -> ObjectDef | None:
    """Look an sObject type up case-insensitively.

    Args:
        name: Object API name in any letter case.

    Returns:
        The object, or None when the org has no such object.
    """
    return OBJECTS.get(name.lower())


def create_table_sql(obj: ObjectDef) -> str:
    """Return the ``CREATE TABLE`` statement for an object (rowid table; ids unique-indexed).

    Args:
        obj: The object.

    Returns:
        SQL text.
    """
    columns = ", ".join(f'"{item.name}" {item.sql_type}' for item in obj.fields.values())
    return f'CREATE TABLE "{obj.table}" ({columns})'
