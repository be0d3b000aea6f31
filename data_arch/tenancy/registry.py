"""Finding tenants: by schema name for ``--tenant``, all of them for ``--all-tenants``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.conf import settings

from data_arch.tenancy.context import InvalidTenantError, validate_schema_name


def tenant_model() -> Any:
    """The tenant model (django-tenants' ``TENANT_MODEL``), or None when none is configured."""
    from django.apps import apps

    label = getattr(settings, "TENANT_MODEL", None)
    return apps.get_model(label) if label else None


def public_schema_name() -> str:
    return getattr(settings, "PUBLIC_SCHEMA_NAME", "public")


def resolve_tenant(schema_name: str) -> Any:
    """The tenant whose schema is ``schema_name``; InvalidTenantError naming it otherwise."""
    validate_schema_name(schema_name)
    model = tenant_model()
    if model is None:
        raise InvalidTenantError("no TENANT_MODEL is configured, so --tenant cannot be resolved")
    try:
        return model.objects.get(schema_name=schema_name)
    except model.DoesNotExist:
        raise InvalidTenantError(f"unknown tenant {schema_name!r}: no tenant has that schema") from None


def iter_tenants(include_public: bool = False) -> Iterator[Any]:
    """Every tenant, in schema-name order (the public schema only when asked)."""
    model = tenant_model()
    if model is None:
        return iter(())
    queryset = model.objects.order_by("schema_name")
    if not include_public:
        queryset = queryset.exclude(schema_name=public_schema_name())
    return queryset.iterator()
