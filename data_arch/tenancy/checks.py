"""System checks for tenancy (ids ``data_arch.E100``-``E149``, ``data_arch.W100``-``W149``).

Model checks (always run):

* E100 a row-level model's base manager is not tenant-scoped;
* E101 a unique constraint or ``unique=True`` field of a row-level model lacks the tenant;
* E102 a foreign key between two row-level models is not a ``TenantForeignKey``;
* E103 a model that is not row-level has a foreign key to a row-level model;
* E104 a row-level model has a many-to-many field (its join table would have no tenant);
* W100 an index of a row-level model does not lead with the tenant column.

Database checks (``manage.py check --database <alias>``):

* W101 a row-level table lacks ENABLE / FORCE ROW LEVEL SECURITY or the tenant policy;
* W102 a row-level table's primary key or a foreign key to another row-level table leaves
  the tenant column out (``TenantKeys`` did not run);
* E105 a tenant schema lacks a table of a TENANT_APPS app (django-tenants' search_path would
  resolve it to the public schema's table of that name).

Deployment checks (``manage.py check --deploy --database <alias>``, with the application's
database settings):

* W103 the application role is a superuser;  W104 it has BYPASSRLS;
* W105 it owns (or is a member of the owner of) a row-level table;
* W106 it reaches PostgreSQL through a pooler with the signed context on, and its sessions'
  statement text -- signed values included, which then name only the tenant -- is visible to
  its other sessions in pg_stat_activity (``track_activities`` on).

Deployment check without a database (``manage.py check --deploy``):

* W107 an alias uses django-tenants' backend with ``TENANT_LIMIT_SET_CALLS`` off: django-tenants
  then sends a ``SET search_path`` round trip before every query, which changes nothing, since
  data_arch sets the path with each statement for its own transaction.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core import checks
from django.db import connections, router
from django.db.models import F, UniqueConstraint

from data_arch.tenancy import sql
from data_arch.tenancy.registry import TENANT_FIELD, tenant_model_label, tenant_models

TENANT_COLUMN = f"{TENANT_FIELD}_id"

HINT_KEYS = (
    "Every key of a row-level table must include the tenant column so rows of different tenants "
    "never depend on each other (and Citus can distribute the table by tenant)."
)


def _leads_with_tenant(index: Any) -> bool:
    if index.fields:
        return index.fields[0].lstrip("-") == TENANT_FIELD
    first = index.expressions[0] if index.expressions else None
    while first is not None and not isinstance(first, F) and hasattr(first, "expression"):
        first = first.expression  # OrderBy(F("tenant"))
    return isinstance(first, F) and first.name in (TENANT_FIELD, TENANT_COLUMN)


def _includes_tenant(constraint: UniqueConstraint) -> bool:
    if constraint.fields:
        return TENANT_FIELD in constraint.fields or TENANT_COLUMN in constraint.fields
    return any(
        isinstance(e, F) and e.name in (TENANT_FIELD, TENANT_COLUMN) for e in constraint.expressions
    )


@checks.register(checks.Tags.models)
def check_tenant_models(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    configs = app_configs if app_configs is not None else apps.get_app_configs()
    return model_errors([m for config in configs for m in config.get_models()])


def model_errors(all_models: list[Any]) -> list[checks.CheckMessage]:
    """E100-E104 / W100 for ``all_models``."""
    from data_arch.conf import SettingError

    try:
        if tenant_model_label() is None:
            return []  # no tenant model: no row-level model can exist (TenantModel needs one)
    except SettingError:
        return []  # data_arch.E001 reports the broken setting
    from data_arch.tenancy.models import TenantForeignKey, TenantManager, is_tenant_model

    errors: list[checks.CheckMessage] = []
    for model in [m for m in all_models if is_tenant_model(m)]:
        label = model._meta.label
        if not isinstance(model._base_manager, TenantManager):
            errors.append(checks.Error(
                f"{label}'s base manager is not tenant-scoped, so related access would cross "
                "tenants.",
                hint="Keep Meta.base_manager_name = 'objects' (inherit TenantModel.Meta).",
                obj=model, id="data_arch.E100",
            ))
        for field in model._meta.local_fields:
            if field.unique and not field.primary_key:
                errors.append(checks.Error(
                    f"{label}.{field.name} is unique=True across all tenants.",
                    hint=f"Use tenant_unique({field.name!r}, name=...) in Meta.constraints. "
                    + HINT_KEYS, obj=model, id="data_arch.E101",
                ))
            if field.is_relation and field.many_to_one and field.name != TENANT_FIELD:
                target = field.remote_field.model
                if is_tenant_model(target) and not isinstance(field, TenantForeignKey):
                    errors.append(checks.Error(
                        f"{label}.{field.name} points at the row-level model "
                        f"{target._meta.label} without the tenant in the key.",
                        hint="Declare it as data_arch.tenancy.models.TenantForeignKey. "
                        + HINT_KEYS, obj=model, id="data_arch.E102",
                    ))
        for together in model._meta.unique_together:
            if TENANT_FIELD not in together:
                errors.append(checks.Error(
                    f"{label} unique_together {together!r} leaves out the tenant.",
                    hint=HINT_KEYS, obj=model, id="data_arch.E101",
                ))
        for constraint in model._meta.constraints:
            if isinstance(constraint, UniqueConstraint) and not _includes_tenant(constraint):
                errors.append(checks.Error(
                    f"{label} unique constraint {constraint.name!r} leaves out the tenant.",
                    hint="Build it with tenant_unique(...). " + HINT_KEYS,
                    obj=model, id="data_arch.E101",
                ))
        for field in model._meta.local_many_to_many:
            errors.append(checks.Error(
                f"{label}.{field.name} is a many-to-many field; its join table has no tenant.",
                hint="Use an explicit row-level model with two TenantForeignKeys instead.",
                obj=model, id="data_arch.E104",
            ))
        for index in model._meta.indexes:
            if not _leads_with_tenant(index):
                errors.append(checks.Warning(
                    f"{label} index {index.name!r} does not start with the tenant column, so "
                    "tenant-scoped queries cannot use it well.",
                    hint="Build it with tenant_index(...).", obj=model, id="data_arch.W100",
                ))
    for model in [m for m in all_models if not is_tenant_model(m)]:
        for field in model._meta.local_fields:
            if field.is_relation and field.many_to_one and is_tenant_model(
                field.remote_field.model
            ):
                errors.append(checks.Error(
                    f"{model._meta.label}.{field.name} points at the row-level model "
                    f"{field.remote_field.model._meta.label} from a table without a tenant.",
                    hint="Make the referencing model a TenantModel too. " + HINT_KEYS,
                    obj=model, id="data_arch.E103",
                ))
    return errors


def _database_models(alias: str) -> list[Any]:
    return [m for m in tenant_models() if router.allow_migrate_model(alias, m)]


def _query(alias: str, statement: str, params: list[Any] | None = None) -> list[tuple]:
    with connections[alias].cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall()


@checks.register(checks.Tags.database)
def check_tenant_tables(app_configs: Any = None, databases: Any = None, **kwargs: Any):
    from data_arch.conf import SettingError

    try:
        if tenant_model_label() is None:
            return []  # no tenant model, no row-level tables
    except SettingError:
        return []  # data_arch.E001 reports the broken setting
    from data_arch.tenancy.models import TenantForeignKey

    messages: list[checks.CheckMessage] = []
    for alias in databases or ():
        if connections[alias].vendor != "postgresql":
            continue
        for model in _database_models(alias):
            table = model._meta.db_table
            rows = _query(alias, sql.TABLE_SECURITY, [sql.POLICY_NAME, table])
            if not rows:
                continue  # not migrated yet
            enabled, forced, _owned, _owner, policy = rows[0]
            missing = [what for what, ok in (
                ("ENABLE ROW LEVEL SECURITY", enabled), ("FORCE ROW LEVEL SECURITY", forced),
                (f"policy {sql.POLICY_NAME}", policy)) if not ok]
            if missing:
                messages.append(checks.Warning(
                    f"row-level table {table} on {alias!r} lacks {', '.join(missing)}.",
                    hint="Add EnableRowLevelSecurity(model_name) to its migration.",
                    obj=model, id="data_arch.W101",
                ))
            keys = _query(alias, sql.KEY_COLUMNS, [table])
            tenant_column = model._meta.get_field(TENANT_FIELD).column
            primary = [cols for _name, kind, cols, _t in keys if kind == "p"]
            problems = []
            if not primary or tenant_column not in primary[0]:
                problems.append("its primary key")
            for field in model._meta.local_fields:
                if isinstance(field, TenantForeignKey):
                    target = field.remote_field.model._meta.db_table
                    if not any(kind == "f" and cols == [tenant_column, field.column]
                               and ref.split(".")[-1].strip('"') == target
                               for _n, kind, cols, ref in keys):
                        problems.append(f"the foreign key on {field.column}")
            problems += [f"unique constraint {name}" for name, kind, cols, _t in keys
                         if kind == "u" and tenant_column not in cols]
            if problems:
                messages.append(checks.Warning(
                    f"row-level table {table} on {alias!r}: {', '.join(problems)} "
                    f"leave(s) out {tenant_column}.",
                    hint="Add TenantKeys(model_name) to its migration. " + HINT_KEYS,
                    obj=model, id="data_arch.W102",
                ))
    return messages


@checks.register(checks.Tags.database)
def check_tenant_schemas(app_configs: Any = None, databases: Any = None, **kwargs: Any):
    from data_arch import schema_backend
    from data_arch.conf import SettingError
    from data_arch.tenancy.status import missing_tenant_tables

    try:
        if tenant_model_label() is None:
            return []
    except SettingError:
        return []
    messages: list[checks.CheckMessage] = []
    for alias in databases or ():
        if not schema_backend.is_schema_connection(connections[alias]):
            continue
        missing: dict[str, list[str]] = {}
        for schema, table in missing_tenant_tables(alias):
            missing.setdefault(schema, []).append(table)
        for schema, tables in missing.items():
            messages.append(checks.Error(
                f"tenant schema {schema!r} on {alias!r} lacks {', '.join(tables)}: its queries "
                "of those tables fall back to the public schema (search_path "
                f"\"{schema}\", public), shared by every tenant.",
                hint=f"Run migrate_schemas --schema={schema} (django-tenants) before serving it.",
                id="data_arch.E105",
            ))
    return messages


@checks.register(deploy=True)
def check_search_path_calls(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from django.conf import settings

    if getattr(settings, "TENANT_LIMIT_SET_CALLS", False):
        return []
    aliases = [alias for alias in connections if hasattr(connections[alias], "set_schema")]
    if not aliases:
        return []
    return [checks.Warning(
        f"{', '.join(map(repr, aliases))} use(s) django-tenants' backend with "
        "TENANT_LIMIT_SET_CALLS off: django-tenants sends SET search_path in a round trip of its "
        "own before every query, though data_arch already sets the tenant's search_path with "
        "each statement.",
        hint="Set TENANT_LIMIT_SET_CALLS = True: django-tenants then sets the path only when a "
        "connection's schema changes.",
        id="data_arch.W107")]


@checks.register(checks.Tags.database, deploy=True)
def check_application_role(app_configs: Any = None, databases: Any = None, **kwargs: Any):
    messages: list[checks.CheckMessage] = []
    for alias in databases or ():
        if connections[alias].vendor != "postgresql":
            continue
        # Any alias that reads row-level tables (django-tenants lets only one migrate them).
        if tenant_models() and _pooled_values_visible(alias):
            role = _query(alias, sql.ROLE)[0][0]
            messages.append(checks.Warning(
                f"{alias!r} reaches PostgreSQL through a pooler, so its signed tenant values "
                f"name only the tenant, and {role}'s statements (with those values) are "
                "visible to its other sessions in pg_stat_activity: SQL injected into one "
                "tenant's query could copy another tenant's value from there.",
                hint=f"As a superuser: ALTER ROLE {role} SET track_activities = off (the role "
                "cannot turn it back on; new server connections get it), or connect the "
                "application directly (Django's pool).",
                id="data_arch.W106"))
        models = _database_models(alias)
        if not models:
            continue
        role, superuser, bypass = _query(alias, sql.ROLE)[0]
        hint = ("Connect the application as an ordinary role (see the README's role setup); "
                "run migrations and cross-tenant maintenance as the owner through another alias.")
        if superuser:
            messages.append(checks.Warning(
                f"{alias!r} connects as {role}, a superuser: Row-Level Security does not apply.",
                hint=hint, id="data_arch.W103"))
        if bypass:
            messages.append(checks.Warning(
                f"{alias!r} connects as {role}, which has BYPASSRLS: Row-Level Security does "
                "not apply.", hint=hint, id="data_arch.W104"))
        owned = []
        for model in models:
            rows = _query(alias, sql.TABLE_SECURITY, [sql.POLICY_NAME, model._meta.db_table])
            if rows and rows[0][2]:
                owned.append(model._meta.db_table)
        if owned:
            messages.append(checks.Warning(
                f"{alias!r} connects as {role}, which owns {', '.join(owned)}: an owner can "
                "turn Row-Level Security off.", hint=hint, id="data_arch.W105"))
    return messages


def _pooled_values_visible(alias: str) -> bool:
    from data_arch.conf import tenancy_settings
    from data_arch.tenancy.rls import behind_pooler

    if not tenancy_settings().signed_context:
        return False
    connection = connections[alias]
    connection.ensure_connection()
    if not behind_pooler(connection.connection):
        return False
    return _query(alias, sql.TRACK_ACTIVITIES)[0][0] == "on"
