"""Tenancy: the current-tenant context and (row-level and schema) tenant isolation."""

from data_arch.tenancy.context import (
    InvalidTenantError,
    NoTenantError,
    Tenant,
    as_tenant,
    current_tenant,
    require_tenant,
    tenant_context,
    validate_schema_name,
)
from data_arch.tenancy.registry import iter_tenants, resolve_tenant

__all__ = [
    "InvalidTenantError",
    "NoTenantError",
    "Tenant",
    "as_tenant",
    "current_tenant",
    "iter_tenants",
    "require_tenant",
    "resolve_tenant",
    "tenant_context",
    "validate_schema_name",
]
