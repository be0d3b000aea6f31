"""Tenancy: the current-tenant context and (row-level and schema) tenant isolation.

Importing this package has no side effect: data_arch's app config installs the per-transaction
tenant setting and the Celery signal handlers (:mod:`data_arch.wiring`).
"""

import importlib
from typing import Any

from data_arch.tenancy.context import (
    CrossTenantError,
    InvalidTenantError,
    NoTenantError,
    Tenant,
    UnknownTenantError,
    as_tenant,
    current_tenant,
    require_tenant,
    tenant_context,
    validate_schema_name,
)
from data_arch.tenancy.registry import iter_tenants, resolve_tenant, resolve_tenant_by

__all__ = [
    "CrossTenantError",
    "EnableRowLevelSecurity",
    "InvalidTenantError",
    "NoTenantError",
    "Tenant",
    "TenantForeignKey",
    "TenantKeys",
    "TenantLogFilter",
    "TenantManager",
    "TenantMiddleware",
    "TenantModel",
    "TenantQuerySet",
    "UnknownTenantError",
    "as_tenant",
    "current_tenant",
    "iter_tenants",
    "require_tenant",
    "requires_tenant",
    "resolve_tenant",
    "resolve_tenant_by",
    "tenant_context",
    "tenant_index",
    "tenant_unique",
    "validate_schema_name",
]

# Names whose modules need the app registry (models) or optional packages: imported on use.
_LAZY = {
    "TenantForeignKey": "data_arch.tenancy.models",
    "TenantManager": "data_arch.tenancy.models",
    "TenantModel": "data_arch.tenancy.models",
    "TenantQuerySet": "data_arch.tenancy.models",
    "tenant_index": "data_arch.tenancy.models",
    "tenant_unique": "data_arch.tenancy.models",
    "EnableRowLevelSecurity": "data_arch.tenancy.operations",
    "TenantKeys": "data_arch.tenancy.operations",
    "TenantMiddleware": "data_arch.tenancy.middleware",
    "TenantLogFilter": "data_arch.tenancy.log",
    "requires_tenant": "data_arch.tenancy.celery",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'data_arch.tenancy' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


