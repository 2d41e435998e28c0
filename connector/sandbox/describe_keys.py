"""Every standard key of Salesforce's describe answers, with the value an unused key carries.

Real orgs always send the full key set of ``DescribeSObjectResult``, ``DescribeGlobalSObjectResult``
and ``Field``, with ``null`` or ``false`` where a key does not apply
(https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_describesobjects_describesobjectresult.htm),
and clients index them directly: tap-salesforce reads ``customSetting``, ``relationshipName`` and
``referenceTo``; community scripts read ``f["compoundFieldName"]``; Airbyte reads ``queryable``
(api-contracts-realorg section 7.3). ``schema.py`` fills in what the sandbox models; the functions
here add every other key with its "unused" value, without overriding a modelled one.
"""

from __future__ import annotations

from typing import Any

FIELD_DEFAULTS: dict[str, Any] = {
    "aggregatable": True,
    "aiPredictionField": False,
    "autoNumber": False,
    "byteLength": 0,
    "calculated": False,
    "calculatedFormula": None,
    "cascadeDelete": False,
    "caseSensitive": False,
    "compoundFieldName": None,
    "controllerName": None,
    "createable": False,
    "custom": False,
    "defaultValue": None,
    "defaultValueFormula": None,
    "defaultedOnCreate": False,
    "dependentPicklist": False,
    "deprecatedAndHidden": False,
    "digits": 0,
    "displayLocationInDecimal": False,
    "encrypted": False,
    "externalId": False,
    "extraTypeInfo": None,
    "filterable": True,
    "filteredLookupInfo": None,
    "formulaTreatNullNumberAsZero": False,
    "groupable": False,
    "highScaleNumber": False,
    "htmlFormatted": False,
    "idLookup": False,
    "inlineHelpText": None,
    "label": "",
    "length": 0,
    "mask": None,
    "maskType": None,
    "name": "",
    "nameField": False,
    "namePointing": False,
    "nillable": True,
    "permissionable": False,
    "picklistValues": [],
    "polymorphicForeignKey": False,
    "precision": 0,
    "queryByDistance": False,
    "referenceTargetField": None,
    "referenceTo": [],
    "relationshipName": None,
    "relationshipOrder": None,
    "restrictedDelete": False,
    "restrictedPicklist": False,
    "scale": 0,
    "searchPrefilterable": False,
    "soapType": "xsd:string",
    "sortable": True,
    "type": "string",
    "unique": False,
    "updateable": False,
    "writeRequiresMasterRead": False,
}
"""FieldDescribe keys (REST ``fields[]``) and their value when the field does not use them."""

GLOBAL_SOBJECT_DEFAULTS: dict[str, Any] = {
    "activateable": False,
    "associateEntityType": None,
    "associateParentEntity": None,
    "createable": False,
    "custom": False,
    "customSetting": False,
    "deepCloneable": False,
    "deletable": False,
    "deprecatedAndHidden": False,
    "feedEnabled": False,
    "hasSubtypes": False,
    "isInterface": False,
    "isSubtype": False,
    "keyPrefix": None,
    "label": "",
    "labelPlural": "",
    "layoutable": True,
    "mergeable": False,
    "mruEnabled": True,
    "name": "",
    "queryable": True,
    "replicateable": True,
    "retrieveable": True,
    "searchable": False,
    "triggerable": True,
    "undeletable": False,
    "updateable": False,
    "urls": {},
}
"""describeGlobal ``sobjects[]`` keys and their value when unused."""

SOBJECT_DEFAULTS: dict[str, Any] = {
    **GLOBAL_SOBJECT_DEFAULTS,
    "actionOverrides": [],
    "childRelationships": [],
    "compactLayoutable": True,
    "dataTranslationEnabled": False,
    "defaultImplementation": None,
    "extendedBy": None,
    "extendsInterfaces": None,
    "fields": [],
    "implementedBy": None,
    "implementsInterfaces": None,
    "listviewable": None,
    "lookupLayoutable": None,
    "namedLayoutInfos": [],
    "networkScopeFieldName": None,
    "recordTypeInfos": [],
    "searchLayoutable": True,
    "sobjectDescribeOption": "FULL",
    "supportedScopes": [],
}
"""Object describe (``GET /sobjects/{obj}/describe``) keys and their value when unused."""

_PARENT_NAME_FIELDS = {"Name"}
_NOT_AGGREGATABLE = frozenset({"textarea", "multipicklist", "base64", "location", "address"})


def complete_field(entry: dict[str, Any]) -> dict[str, Any]:
    """Return a field describe entry with every standard key, sorted as Salesforce sends them.

    Keys the entry already has win; a few are derived from it: ``aggregatable`` (not for long
    text and multi-select picklists), ``nameField`` (the record name), ``caseSensitive`` (never
    for the sandbox's case-insensitive text), ``permissionable`` (custom fields that may be null
    carry field-level security).

    Args:
        entry: The modelled keys (at least ``name`` and ``type``).

    Returns:
        A new dict with all keys of :data:`FIELD_DEFAULTS` and any extra ones of ``entry``.
    """
    derived = {
        "aggregatable": entry.get("type") not in _NOT_AGGREGATABLE,
        "nameField": entry.get("name") in _PARENT_NAME_FIELDS,
        "permissionable": bool(entry.get("custom")) and bool(entry.get("nillable", True)),
    }
    merged = {**FIELD_DEFAULTS, **derived, **entry}
    return dict(sorted(merged.items()))


def complete_global_sobject(entry: dict[str, Any]) -> dict[str, Any]:
    """Return a describeGlobal entry with every standard key (modelled keys win).

    Args:
        entry: The modelled keys.

    Returns:
        A new dict, keys sorted.
    """
    return dict(sorted({**GLOBAL_SOBJECT_DEFAULTS, **entry}.items()))


def complete_sobject(entry: dict[str, Any]) -> dict[str, Any]:
    """Return an object describe with every standard key (modelled keys win).

    Args:
        entry: The modelled keys, ``fields`` already completed.

    Returns:
        A new dict, keys sorted.
    """
    return dict(sorted({**SOBJECT_DEFAULTS, **entry}.items()))
