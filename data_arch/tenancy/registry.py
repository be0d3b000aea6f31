"""Finding tenants: by schema name for ``--tenant``, all of them for ``--all-tenants``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.conf import settings

from data_arch.tenancy.context import InvalidTenantError, validate_schema_name


def tenant_model() -> Any:
    """The tenant model (``DATA_ARCH["TENANCY"]["MODEL"]``, else django-tenants'
    ``TENANT_MODEL``), or None when none is configured."""
    from django.apps import apps

    from data_arch.conf import tenancy_settings

    label = tenancy_settings().model or getattr(settings, "TENANT_MODEL", None)
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
    """Every tenant, in schema-name order (the public schema only when asked); without
    django-tenants, in ``TENANCY.LOOKUP_FIELD`` order."""
    model = tenant_model()
    if model is None:
        return iter(())
    from data_arch.conf import tenancy_settings

    has_schema = any(f.name == "schema_name" for f in model._meta.get_fields())
    queryset = model.objects.order_by("schema_name" if has_schema else tenancy_settings().lookup_field)
    if has_schema and not include_public:
        queryset = queryset.exclude(schema_name=public_schema_name())
    return queryset.iterator()


def resolve_tenant_by(value: str) -> Any:
    """The tenant whose ``TENANCY.LOOKUP_FIELD`` equals ``value`` (a header or subdomain).

    InvalidTenantError names the value when it is malformed or matches no tenant.
    """
    from data_arch.conf import tenancy_settings

    field = tenancy_settings().lookup_field
    if field == "schema_name":
        validate_schema_name(value)
    elif not isinstance(value, str) or not value or len(value) > 255:
        raise InvalidTenantError(f"tenant reference must be 1-255 characters, got {value!r}")
    model = tenant_model()
    if model is None:
        raise InvalidTenantError("no tenant model is configured (DATA_ARCH['TENANCY']['MODEL'])")
    try:
        return model.objects.get(**{field: value})
    except (model.DoesNotExist, ValueError, TypeError):
        raise InvalidTenantError(f"unknown tenant {value!r}: no tenant has {field}={value!r}") from None
