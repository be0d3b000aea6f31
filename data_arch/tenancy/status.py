"""What ``manage.py tenancy status`` reports: row-level tables, their protection, row counts."""

from __future__ import annotations

import dataclasses
from typing import Any

from django.db import connections

from data_arch.tenancy import sql
from data_arch.tenancy.context import current_tenant

__all__ = ["TableStatus", "table_status"]


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
