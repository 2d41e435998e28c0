"""Users, profiles, permission sets and field-level security (FLS) of the sandbox org.

Modelled on ``shared/docs/api-contracts-realorg.md`` section 1:

- ``Profile``, ``PermissionSet``, ``FieldPermissions``, ``ObjectPermissions`` and
  ``PermissionSetAssignment`` are plain sObjects (REST CRUD and SOQL through the generic
  handlers). Every profile is backed by a permission set with ``IsOwnedByProfile = true``.
- A user reads a custom field when a ``FieldPermissions`` row with ``PermissionsRead`` exists on
  their profile's permission set or on a set assigned to them (or their object permission has
  ``PermissionsViewAllFields``); ``PermissionsEdit`` makes it editable. Standard fields follow
  the object's describe. For the calling user an unreadable field is absent from describe, SOQL
  answers ``INVALID_FIELD`` ("No such column"), writes answer ``INVALID_FIELD``; a readable but
  read-only field answers ``INVALID_FIELD_FOR_INSERT_UPDATE``.
- A field created through the Tooling API has no ``FieldPermissions`` rows (the contract's
  emulator rule) unless the sandbox runs with ``new_field_access=True`` (default), which models
  the Setup UI's "establish field-level security" step for the integration user's profile.
- Tokens act as a user: client credentials as the connected app's run-as (integration) user,
  JWT bearer and password as the named user.

``field_security="enforced"`` gives the integration user the "Minimum Access - API Only
Integrations" profile with no access to any custom field (section 1.4) and the sales profile none
either, as a new real org; ``"granted"`` (default) grants both profiles the custom fields the org
was generated with, so leadscore's integration user works as before ``setup``.

The security tables are org configuration, not generated data: they are rebuilt on every start
(like fields created through the Tooling API, which live in memory).
"""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connector.sandbox.ids import make_id
from connector.sandbox.schema import FieldDef, ObjectDef

INTEGRATION_PROFILE = "Minimum Access - API Only Integrations"
SALES_PROFILE = "Standard User"
ADMIN_PROFILE = "System Administrator"
MARKETING_PROFILE = "Marketing User"
FIELD_SECURITY_MODES = ("granted", "enforced")

# User permissions a profile or permission set may hold (booleans on PermissionSet).
USER_PERMISSIONS = (
    "PermissionsApiEnabled",
    "PermissionsApiUserOnly",
    "PermissionsViewSetup",
    "PermissionsCustomizeApplication",
    "PermissionsManageProfilesPermissionsets",
    "PermissionsAssignPermissionSets",
    "PermissionsViewAllData",
)
_SETUP_RIGHTS = (
    "PermissionsViewSetup",
    "PermissionsCustomizeApplication",
    "PermissionsManageProfilesPermissionsets",
    "PermissionsAssignPermissionSets",
)
SETUP_OBJECTS = frozenset(
    {"Profile", "PermissionSet", "FieldPermissions", "ObjectPermissions", "PermissionSetAssignment"}
)
"""Objects without a recycle bin that API deletes remove for good."""


def _f(name: str, type_: str, **options: Any) -> FieldDef:
    options.setdefault("label", name)
    if type_ in ("reference", "id"):
        options.setdefault("length", 18)
    return FieldDef(name=name, type=type_, **options)


def _system() -> list[FieldDef]:
    readonly = {"createable": False, "updateable": False, "nillable": False}
    return [
        _f("CreatedDate", "datetime", **readonly),
        _f("LastModifiedDate", "datetime", **readonly),
        _f("SystemModstamp", "datetime", **readonly),
    ]


def _id() -> FieldDef:
    return _f("Id", "id", nillable=False, createable=False, updateable=False, id_lookup=True)


def _flag(name: str) -> FieldDef:
    return _f(name, "boolean", nillable=False, default=False)


def _ref(name: str, target: str, relationship: str, **options: Any) -> FieldDef:
    return _f(name, "reference", reference_to=(target,), relationship_name=relationship, **options)


def _permission_parent() -> list[FieldDef]:
    """The permission set and object a FieldPermissions or ObjectPermissions row belongs to."""
    fixed = {"nillable": False, "required": True, "updateable": False}
    return [
        _ref("ParentId", "PermissionSet", "Parent", **fixed),
        _f("SobjectType", "string", length=40, **fixed),
    ]


def security_objects() -> dict[str, ObjectDef]:
    """The setup sObjects behind field-level security, keyed by lower-case name.

    Returns:
        Profile, PermissionSet, FieldPermissions, ObjectPermissions, PermissionSetAssignment.
    """
    name = {"nillable": False, "required": True}
    objects = [
        (
            ObjectDef("Profile", "Profile", "Profiles", "00e", has_is_deleted=False),
            [_id(), _f("Name", "string", length=255, **name), *_system()],
        ),
        (
            ObjectDef(
                "PermissionSet", "Permission Set", "Permission Sets", "0PS", has_is_deleted=False
            ),
            [
                _id(),
                _f("Name", "string", length=80, id_lookup=True, **name),
                _f("Label", "string", length=80, **name),
                _f("Description", "textarea", length=255),
                _f(
                    "IsOwnedByProfile",
                    "boolean",
                    nillable=False,
                    default=False,
                    createable=False,
                    updateable=False,
                ),
                _ref("ProfileId", "Profile", "Profile", createable=False, updateable=False),
                *(_flag(permission) for permission in USER_PERMISSIONS),
                *_system(),
            ],
        ),
        (
            ObjectDef(
                "FieldPermissions",
                "Field Permissions",
                "Field Permissions",
                "01k",
                has_is_deleted=False,
            ),
            [
                _id(),
                *_permission_parent(),
                _f("Field", "string", length=80, nillable=False, required=True, updateable=False),
                _flag("PermissionsRead"),
                _flag("PermissionsEdit"),
                *_system(),
            ],
        ),
        (
            ObjectDef(
                "ObjectPermissions",
                "Object Permissions",
                "Object Permissions",
                "110",
                has_is_deleted=False,
            ),
            [
                _id(),
                *_permission_parent(),
                *(
                    _flag(f"Permissions{kind}")
                    for kind in (
                        "Create",
                        "Read",
                        "Edit",
                        "Delete",
                        "ViewAllRecords",
                        "ModifyAllRecords",
                        "ViewAllFields",
                    )
                ),
                *_system(),
            ],
        ),
        (
            ObjectDef(
                "PermissionSetAssignment",
                "Permission Set Assignment",
                "Permission Set Assignments",
                "0Pa",
                has_is_deleted=False,
            ),
            [
                _id(),
                _ref(
                    "AssigneeId",
                    "User",
                    "Assignee",
                    nillable=False,
                    required=True,
                    updateable=False,
                ),
                _ref(
                    "PermissionSetId",
                    "PermissionSet",
                    "PermissionSet",
                    nillable=False,
                    required=True,
                    updateable=False,
                ),
                *_system(),
            ],
        ),
    ]
    result = {}
    for obj, fields in objects:
        obj.fields = {item.name.lower(): item for item in fields}
        result[obj.name.lower()] = obj
    return result


PROFILE_ID_FIELD = _ref(
    "ProfileId", "Profile", "Profile", label="Profile ID", updateable=False, createable=False
)


@dataclass(frozen=True)
class SalesUser:
    """A sales rep who can log in with the OAuth username-password flow.

    Attributes:
        user_id: User id.
        username: Login username.
        password: Login password (local test credential, derived from the seed).
    """

    user_id: str
    username: str
    password: str


@dataclass
class OrgView:
    """The org's schema as one user sees it.

    Attributes:
        objects: Objects keyed by lower-case name, with unreadable fields removed and
            read-only fields marked not createable/updateable.
        key_prefixes: The same objects by key prefix.
    """

    objects: dict[str, ObjectDef]
    key_prefixes: dict[str, ObjectDef]


class Security:
    """Users, their profiles and permission sets, and each user's view of the schema.

    Args:
        conn_lock: The database lock (held while reading the security tables).
        conn: The read-write database connection.
        objects: The org schema (the security objects are added to it).
        integration_user_id: The connected app's run-as user.
        seed: Seed for the sales users' passwords.
        field_security: ``granted`` or ``enforced`` (see the module docstring).
        setup_rights: Whether the integration user may manage permission sets, assign them and
            customize the application (Metadata API); False models an integration user that
            ``setup`` cannot grant anything with (``INSUFFICIENT_ACCESS_OR_READONLY``).
        next_id: The org's id generator, ``(connection, object name) -> id`` (shared with API
            creates, so ids never collide).
    """

    def __init__(
        self,
        conn_lock: threading.RLock,
        conn: sqlite3.Connection,
        objects: dict[str, ObjectDef],
        integration_user_id: str,
        *,
        seed: int = 42,
        field_security: str = "granted",
        setup_rights: bool = True,
        next_id: Callable[[sqlite3.Connection, str], str] | None = None,
    ) -> None:
        if field_security not in FIELD_SECURITY_MODES:
            raise ValueError(f"field_security must be one of {FIELD_SECURITY_MODES}")
        self.lock = conn_lock
        self.conn = conn
        self.org_objects = objects
        self.integration_user_id = integration_user_id
        self.field_security = field_security
        self.setup_rights = setup_rights
        self.seed = seed
        self.next_id = next_id or (lambda conn, name: make_id("01k", 1_000_000))
        self._acting = threading.local()
        self._views: dict[str, tuple[tuple[int, int], OrgView]] = {}
        # Bumped by every write to the security tables: views are cached until it moves.
        self._version = 0
        self.token_users: dict[str, str] = {}
        self.sales_users: list[SalesUser] = []
        self.profile_sets: dict[str, str] = {}
        objects.update(security_objects())
        user = objects.get("user")
        if user is not None and "profileid" not in user.fields:
            user.fields["profileid"] = PROFILE_ID_FIELD
        self._install()

    # Org creation ---------------------------------------------------------------------------

    def _install(self) -> None:
        """(Re)create the security tables and seed profiles, users' profiles and FLS."""
        conn = self.conn
        with self.lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for obj in security_objects().values():
                    conn.execute(f'DROP TABLE IF EXISTS "{obj.table}"')
                    columns = ", ".join(
                        f'"{item.name}" {item.sql_type}' for item in obj.fields.values()
                    )
                    conn.execute(f'CREATE TABLE "{obj.table}" ({columns})')
                    conn.execute(f'CREATE UNIQUE INDEX "{obj.table}_id" ON "{obj.table}" ("Id")')
                user_columns = {row[1] for row in conn.execute('PRAGMA table_info("User")')}
                if "ProfileId" not in user_columns:
                    conn.execute('ALTER TABLE "User" ADD COLUMN "ProfileId" TEXT')
                self._seed(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _seed(self, conn: sqlite3.Connection) -> None:
        now = int(conn.execute("SELECT COALESCE(MAX(CreatedDate), 0) FROM User").fetchone()[0])
        system = {"CreatedDate": now, "LastModifiedDate": now, "SystemModstamp": now}
        rights = dict.fromkeys(_SETUP_RIGHTS, self.setup_rights)
        profiles = {
            ADMIN_PROFILE: {
                **dict.fromkeys(USER_PERMISSIONS, True),
                "PermissionsApiUserOnly": False,
            },
            SALES_PROFILE: {"PermissionsApiEnabled": True},
            MARKETING_PROFILE: {"PermissionsApiEnabled": True},
            INTEGRATION_PROFILE: {
                "PermissionsApiEnabled": True,
                "PermissionsApiUserOnly": True,
                **rights,
            },
        }
        profile_ids: dict[str, str] = {}
        for number, (name, permissions) in enumerate(profiles.items(), start=1):
            profile_id = make_id("00e", number)
            profile_ids[name] = profile_id
            insert_row(conn, "Profile", {"Id": profile_id, "Name": name, **system})
            set_id = make_id("0PS", number)
            self.profile_sets[name] = set_id
            flags = {key: int(bool(permissions.get(key))) for key in USER_PERMISSIONS}
            label = f"X{hashlib.sha256(name.encode()).hexdigest()[:8]}"  # profile-owned set names
            insert_row(
                conn,
                "PermissionSet",
                {
                    "Id": set_id,
                    "Name": label,
                    "Label": label,
                    "IsOwnedByProfile": 1,
                    "ProfileId": profile_id,
                    **flags,
                    **system,
                },
            )
        # Profiles by user: the integration user, sales reps, the marketing user.
        users = conn.execute('SELECT "Id", "Username", "Department" FROM "User"').fetchall()
        for user_id, username, department in users:
            if user_id == self.integration_user_id:
                profile = INTEGRATION_PROFILE
            elif department == "Sales":
                profile = SALES_PROFILE
                password = (
                    "Rep-"
                    + hashlib.sha256(
                        f"leadscore-sandbox:{self.seed}:rep:{username}".encode()
                    ).hexdigest()[:12]
                )
                self.sales_users.append(SalesUser(user_id, username, password))
            elif department == "Marketing":
                profile = MARKETING_PROFILE
            else:
                profile = ADMIN_PROFILE
            conn.execute(
                'UPDATE "User" SET "ProfileId" = ? WHERE "Id" = ?', [profile_ids[profile], user_id]
            )
        # Object access for every profile; FLS on the custom fields the org was generated with.
        number = 0
        for profile, set_id in self.profile_sets.items():
            for obj in self.org_objects.values():
                if obj.name in SETUP_OBJECTS:
                    continue
                number += 1
                insert_row(
                    conn,
                    "ObjectPermissions",
                    {
                        "Id": make_id("110", number),
                        "ParentId": set_id,
                        "SobjectType": obj.name,
                        "PermissionsCreate": 1,
                        "PermissionsRead": 1,
                        "PermissionsEdit": 1,
                        "PermissionsDelete": 1,
                        "PermissionsViewAllRecords": int(profile == ADMIN_PROFILE),
                        "PermissionsModifyAllRecords": int(profile == ADMIN_PROFILE),
                        "PermissionsViewAllFields": 0,
                        **system,
                    },
                )
        grants: list[tuple[str, bool]] = [(self.profile_sets[ADMIN_PROFILE], True)]
        if self.field_security == "granted":
            grants += [
                (self.profile_sets[INTEGRATION_PROFILE], True),
                (self.profile_sets[SALES_PROFILE], False),
                (self.profile_sets[MARKETING_PROFILE], False),
            ]
        number = 0
        for set_id, edit in grants:
            for obj in self.org_objects.values():
                for definition in obj.fields.values():
                    if not definition.custom:
                        continue
                    number += 1
                    insert_row(
                        conn,
                        "FieldPermissions",
                        {
                            "Id": make_id("01k", number),
                            "ParentId": set_id,
                            "SobjectType": obj.name,
                            "Field": f"{obj.name}.{definition.name}",
                            "PermissionsRead": 1,
                            "PermissionsEdit": int(edit and definition.updateable),
                            **system,
                        },
                    )

    # Users and tokens -----------------------------------------------------------------------

    def user_by_username(self, username: str) -> str | None:
        """The id of an active user.

        Args:
            username: Login username (case-insensitive).

        Returns:
            The user id, or None.
        """
        with self.lock:
            row = self.conn.execute(
                'SELECT "Id" FROM "User" WHERE lower("Username") = lower(?) AND "IsActive" = 1',
                [username],
            ).fetchone()
        return row[0] if row else None

    def password_user(self, username: str, password: str) -> str | None:
        """The sales user whose username and password these are.

        Args:
            username: Login username.
            password: Password.

        Returns:
            The user id, or None.
        """
        for user in self.sales_users:
            if user.username == username.lower() and user.password == password:
                return user.user_id
        return None

    def act_as(self, token: str | None) -> None:
        """Make the current request thread act as the user a token was issued to.

        Args:
            token: The access token (None: no user, the org's whole schema).
        """
        self._acting.user_id = self.token_users.get(token) if token else None

    @property
    def acting_user(self) -> str | None:
        """The user the current request acts as (None outside requests)."""
        return getattr(self._acting, "user_id", None)

    # Field-level security -------------------------------------------------------------------

    def permission_sets_of(self, user_id: str) -> list[str]:
        """The permission sets a user holds: their profile's and the assigned ones.

        Args:
            user_id: User id.

        Returns:
            Permission set ids.
        """
        with self.lock:
            rows = self.conn.execute(
                'SELECT ps."Id" FROM "PermissionSet" ps JOIN "User" u ON u."ProfileId" = '
                'ps."ProfileId" WHERE u."Id" = ? AND ps."IsOwnedByProfile" = 1 '
                'UNION SELECT "PermissionSetId" FROM "PermissionSetAssignment" '
                'WHERE "AssigneeId" = ?',
                [user_id, user_id],
            ).fetchall()
        return [row[0] for row in rows]

    def has_permission(self, user_id: str | None, permission: str) -> bool:
        """Whether a user holds a user permission through any of their permission sets.

        Args:
            user_id: User id (None: no user, always allowed).
            permission: ``PermissionSet`` column such as ``PermissionsCustomizeApplication``.

        Returns:
            True when allowed.
        """
        if user_id is None:
            return True
        sets = self.permission_sets_of(user_id)
        if not sets:
            return False
        with self.lock:
            row = self.conn.execute(
                f'SELECT MAX("{permission}") FROM "PermissionSet" '
                f'WHERE "Id" IN ({",".join("?" * len(sets))})',
                sets,
            ).fetchone()
        return bool(row and row[0])

    def field_access(self, user_id: str) -> tuple[dict[tuple[str, str], bool], set[str]]:
        """A user's custom-field access.

        Args:
            user_id: User id.

        Returns:
            ``{(object, lower-case field): editable}`` for every readable custom field, and the
            objects whose fields the user reads in full (``PermissionsViewAllFields``).
        """
        sets = self.permission_sets_of(user_id)
        marks = ",".join("?" * len(sets)) or "NULL"
        with self.lock:
            rows = self.conn.execute(
                f'SELECT "Field", MAX("PermissionsEdit") FROM "FieldPermissions" '
                f'WHERE "ParentId" IN ({marks}) AND "PermissionsRead" = 1 GROUP BY "Field"',
                sets,
            ).fetchall()
            view_all = self.conn.execute(
                f'SELECT DISTINCT "SobjectType" FROM "ObjectPermissions" '
                f'WHERE "ParentId" IN ({marks}) AND "PermissionsViewAllFields" = 1',
                sets,
            ).fetchall()
        access: dict[tuple[str, str], bool] = {}
        for field_name, edit in rows:
            sobject, _, name = str(field_name).partition(".")
            access[(sobject.lower(), name.lower())] = bool(edit)
        return access, {row[0].lower() for row in view_all}

    def view(self) -> OrgView | None:
        """The schema as the acting user sees it (None outside requests: the whole org).

        Cached per user until a security table or the schema changes.

        Returns:
            The view, or None.
        """
        user_id = self.acting_user
        if user_id is None:
            return None
        key = (self._version, _schema_mark(self.org_objects))
        cached = self._views.get(user_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        access, view_all = self.field_access(user_id)
        objects: dict[str, ObjectDef] = {}
        for lower, obj in self.org_objects.items():
            fields: dict[str, FieldDef] = {}
            changed = False
            for key_name, definition in obj.fields.items():
                if not definition.custom or lower in view_all:
                    fields[key_name] = definition
                    continue
                editable = access.get((lower, key_name))
                if editable is None:
                    changed = True
                    continue
                if not editable and (definition.updateable or definition.createable):
                    definition = dataclasses.replace(definition, updateable=False, createable=False)
                    changed = True
                fields[key_name] = definition
            objects[lower] = dataclasses.replace(obj, fields=fields) if changed else obj
        result = OrgView(objects, {obj.key_prefix: obj for obj in objects.values()})
        self._views[user_id] = (key, result)
        return result

    def grant_profile(self, profile: str, sobject: str, field_name: str, *, edit: bool) -> None:
        """Add a FieldPermissions row on a profile's permission set (outside any request).

        Args:
            profile: Profile name.
            sobject: Object API name.
            field_name: Field API name.
            edit: Also grant edit.
        """
        self._version += 1
        with self.lock:
            conn = self.conn
            conn.execute(
                'DELETE FROM "FieldPermissions" WHERE "ParentId" = ? AND lower("Field") = lower(?)',
                [self.profile_sets[profile], f"{sobject}.{field_name}"],
            )
            now = int(conn.execute("SELECT strftime('%s','now')").fetchone()[0])
            insert_row(
                conn,
                "FieldPermissions",
                {
                    "Id": self.next_id(conn, "FieldPermissions"),
                    "ParentId": self.profile_sets[profile],
                    "SobjectType": sobject,
                    "Field": f"{sobject}.{field_name}",
                    "PermissionsRead": 1,
                    "PermissionsEdit": int(edit),
                    "CreatedDate": now,
                    "LastModifiedDate": now,
                    "SystemModstamp": now,
                },
            )

    # Write rules of the setup objects ---------------------------------------------------------

    def check_write(
        self, conn: sqlite3.Connection, obj: ObjectDef, row: dict[str, Any], current: dict[str, Any]
    ) -> None:
        """Enforce the setup objects' rules before a create or update is stored.

        Args:
            conn: Database connection (inside the write transaction).
            obj: The object written.
            row: The record's values after the write (merged with ``current``).
            current: The stored values before the write (empty on create).

        Raises:
            RecordError: The write breaks a rule or the user lacks the right to make it.
        """
        from connector.sandbox.salesforce_api import RecordError

        if obj.name not in SETUP_OBJECTS:
            return
        self._version += 1
        needed = (
            "PermissionsAssignPermissionSets"
            if obj.name == "PermissionSetAssignment"
            else "PermissionsManageProfilesPermissionsets"
        )
        if not self.has_permission(self.acting_user, needed):
            raise RecordError(
                "INSUFFICIENT_ACCESS_OR_READONLY",
                f"insufficient access rights on object id (the user lacks {needed})",
            )
        if obj.name == "Profile":
            raise RecordError("INSUFFICIENT_ACCESS_OR_READONLY", "profiles cannot be changed here")
        if obj.name == "PermissionSet":
            name = str(row.get("Name") or "")
            if not name.replace("_", "a").isalnum() or not name[:1].isalpha():
                raise RecordError(
                    "FIELD_INTEGRITY_EXCEPTION",
                    "API Name: the name must begin with a letter and use only alphanumeric "
                    "characters and underscores",
                    ["Name"],
                )
            duplicate = conn.execute(
                'SELECT "Id" FROM "PermissionSet" WHERE lower("Name") = lower(?) AND "Id" IS NOT ?',
                [name, current.get("Id")],
            ).fetchone()
            if duplicate:
                raise RecordError(
                    "DUPLICATE_DEVELOPER_NAME",
                    f"The API name {name} is already in use by permission set {duplicate[0]}.",
                    ["Name"],
                )
            return
        if obj.name in ("FieldPermissions", "ObjectPermissions"):
            parent = conn.execute(
                'SELECT "IsOwnedByProfile" FROM "PermissionSet" WHERE "Id" = ?', [row["ParentId"]]
            ).fetchone()
            if parent is None:
                raise RecordError(
                    "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", ["ParentId"]
                )
        if obj.name == "FieldPermissions":
            self._check_field_permission(conn, row, current)
        if obj.name == "PermissionSetAssignment":
            duplicate = conn.execute(
                'SELECT "Id" FROM "PermissionSetAssignment" WHERE "AssigneeId" = ? '
                'AND "PermissionSetId" = ?',
                [row["AssigneeId"], row["PermissionSetId"]],
            ).fetchone()
            if duplicate and not current:
                raise RecordError(
                    "DUPLICATE_VALUE",
                    f"duplicate value found: <unknown> duplicates value on record with id: "
                    f"{duplicate[0]}",
                )
            owned = conn.execute(
                'SELECT "IsOwnedByProfile" FROM "PermissionSet" WHERE "Id" = ?',
                [row["PermissionSetId"]],
            ).fetchone()
            if owned and owned[0]:
                raise RecordError(
                    "INVALID_CROSS_REFERENCE_KEY",
                    "You can't assign or unassign this permission set because it's associated "
                    "with a profile.",
                    ["PermissionSetId"],
                )

    def _check_field_permission(
        self, conn: sqlite3.Connection, row: dict[str, Any], current: dict[str, Any]
    ) -> None:
        from connector.sandbox.salesforce_api import RecordError

        sobject = str(row.get("SobjectType") or "")
        field_name = str(row.get("Field") or "")
        prefix, _, name = field_name.partition(".")
        obj = self.org_objects.get(sobject.lower())
        definition = obj.field(name) if obj is not None else None
        if obj is None or prefix.lower() != sobject.lower() or definition is None:
            # The contract: Field must be prefixed with SobjectType (Lead.Lead_Score__c).
            raise RecordError(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"Field Name: bad value for restricted picklist field: {field_name}",
                ["Field"],
            )
        if row.get("PermissionsEdit") and not row.get("PermissionsRead"):
            raise RecordError(
                "FIELD_INTEGRITY_EXCEPTION",
                "Permission Edit depends on permission(s): Read",
                ["PermissionsEdit"],
            )
        if row.get("PermissionsEdit") and not definition.updateable:
            raise RecordError(
                "FIELD_INTEGRITY_EXCEPTION",
                f"Field {field_name} is not editable: it cannot be granted Edit",
                ["PermissionsEdit"],
            )
        duplicate = conn.execute(
            'SELECT "Id" FROM "FieldPermissions" WHERE "ParentId" = ? AND lower("Field") = '
            'lower(?) AND "Id" IS NOT ?',
            [row["ParentId"], field_name, current.get("Id")],
        ).fetchone()
        if duplicate:
            raise RecordError(
                "DUPLICATE_VALUE",
                f"duplicate value found: <unknown> duplicates value on record with id: "
                f"{duplicate[0]}",
            )
        row["Field"] = f"{obj.name}.{definition.name}"
        row["SobjectType"] = obj.name

    def after_write(self, conn: sqlite3.Connection, obj: ObjectDef, record_id: str) -> None:
        """Drop a FieldPermissions row left without read ("it will be deleted", per the docs).

        Args:
            conn: Database connection (inside the write transaction).
            obj: The object written.
            record_id: The record's id.
        """
        if obj.name == "FieldPermissions":
            conn.execute(
                'DELETE FROM "FieldPermissions" WHERE "Id" = ? AND "PermissionsRead" = 0',
                [record_id],
            )

    def delete(self, conn: sqlite3.Connection, obj: ObjectDef, record_id: str) -> None:
        """Delete a setup record for good, with the rows that depend on it.

        Args:
            conn: Database connection (inside the write transaction).
            obj: The setup object.
            record_id: The record's id.

        Raises:
            RecordError: The user may not, or the record is a profile's own set.
        """
        from connector.sandbox.salesforce_api import RecordError

        needed = (
            "PermissionsAssignPermissionSets"
            if obj.name == "PermissionSetAssignment"
            else "PermissionsManageProfilesPermissionsets"
        )
        if obj.name == "Profile" or not self.has_permission(self.acting_user, needed):
            raise RecordError("INSUFFICIENT_ACCESS_OR_READONLY", "insufficient access rights")
        self._version += 1
        if obj.name == "PermissionSet":
            owned = conn.execute(
                'SELECT "IsOwnedByProfile" FROM "PermissionSet" WHERE "Id" = ?', [record_id]
            ).fetchone()
            if owned and owned[0]:
                raise RecordError(
                    "INSUFFICIENT_ACCESS_OR_READONLY",
                    "a profile's permission set cannot be deleted",
                )
            for table in ("FieldPermissions", "ObjectPermissions"):
                conn.execute(f'DELETE FROM "{table}" WHERE "ParentId" = ?', [record_id])
            conn.execute(
                'DELETE FROM "PermissionSetAssignment" WHERE "PermissionSetId" = ?', [record_id]
            )
        conn.execute(f'DELETE FROM "{obj.table}" WHERE "Id" = ?', [record_id])


def _schema_mark(objects: dict[str, ObjectDef]) -> int:
    """Changes whenever a field is added, removed or replaced in the org schema."""
    return hash(tuple(id(f) for obj in objects.values() for f in obj.fields.values()))


def insert_row(conn: sqlite3.Connection, table: str, row: dict[str, Any]) -> None:
    """Insert one row (table and column names are the sandbox's own, never request input)."""
    columns = ", ".join(f'"{name}"' for name in row)
    conn.execute(
        f'INSERT INTO "{table}" ({columns}) VALUES ({", ".join("?" * len(row))})',
        list(row.values()),
    )
