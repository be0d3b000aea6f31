"""What ``manage.py tenancy status`` reports: row-level tables, their protection, row counts."""

from __future__ import annotations

import dataclasses
from typing import Any

from django.db import connections

from data_arch.tenancy import sql
from data_arch.tenancy.context import current_tenant

__all__ = ["TableStatus", "missing_tenant_tables", "table_status", "tenant_app_tables"]


@dataclasses.dataclass(frozen=True)
class TableStatus:
    model: str
    table: str
    rls_enabled: bool
    rls_forced: bool
    policy: bool
    owner: str
    #: Rows of the current tenant (None when no tenant is active).
    rows: int | None


def table_status(alias: str = "default") -> list[TableStatus]:
    """One :class:`TableStatus` per row-level model whose table exists on ``alias``."""
    from data_arch.tenancy.registry import tenant_models

    # No router.allow_migrate here: with django-tenants it says "no" for shared tables while a
    # tenant schema is active, yet the shared tables are what this reports on.
    result = []
    for model in tenant_models():
        with connections[alias].cursor() as cursor:
            cursor.execute(sql.TABLE_SECURITY, [sql.POLICY_NAME, model._meta.db_table])
            row = cursor.fetchone()
        if row is None:
            continue
        enabled, forced, _owned, owner, policy = row
        rows = model.objects.using(alias).count() if current_tenant() is not None else None
        result.append(TableStatus(
            model=model._meta.label, table=model._meta.db_table, rls_enabled=enabled,
            rls_forced=forced, policy=policy, owner=owner, rows=rows,
        ))
    return result


def as_dict(status: TableStatus) -> dict[str, Any]:
    return dataclasses.asdict(status)


def tenant_app_tables() -> list[str]:
    """The tables every tenant schema must have: those of django-tenants' TENANT_APPS,
    auto-created many-to-many tables included.

    An app listed in SHARED_APPS as well is migrated into public *and* every tenant schema:
    its public table is exactly what a tenant schema lacking its own copy falls back to.
    """
    from django.apps import apps
    from django.conf import settings

    tables: set[str] = set()
    for name in getattr(settings, "TENANT_APPS", ()):
        config = next((c for c in apps.get_app_configs() if c.name == name), None)
        if config is None:
            continue
        for model in config.get_models(include_auto_created=True):
            if model._meta.managed and not model._meta.proxy:
                tables.add(model._meta.db_table)
    return sorted(tables)


def missing_tenant_tables(alias: str = "default") -> list[tuple[str, str]]:
    """(schema, table) for each tenant schema on ``alias`` that lacks a TENANT_APPS table.

    django-tenants puts ``public`` after the tenant's schema on the search_path, so a query of
    such a table would silently read and write ``public.<table>`` (every tenant's, shared) when
    one exists there. Tenants without a schema of their own (row-level only) are skipped.
    """
    from data_arch.tenancy.registry import public_schema_name, tenant_model

    model = tenant_model()
    tables = tenant_app_tables()
    if model is None or not tables or not any(f.name == "schema_name" for f in model._meta.fields):
        return []
    connection = connections[alias]
    with connection.cursor() as cursor:
        if model._meta.db_table not in connection.introspection.table_names(cursor):
            return []  # not migrated yet (``migrate`` runs the database checks first)
    schemas = list(
        model.objects.using(alias).exclude(schema_name=public_schema_name())
        .values_list("schema_name", flat=True)
    )
    if not schemas:
        return []
    with connections[alias].cursor() as cursor:
        cursor.execute(sql.MISSING_SCHEMA_TABLES, [schemas, tables])
        return [(schema, table) for schema, table in cursor.fetchall()]
