"""Finding tenants: by schema name for ``--tenant``, all of them for ``--all-tenants``."""

from __future__ import annotations

import reprlib
from collections.abc import Iterator
from typing import Any

from django.conf import settings

from data_arch.tenancy.context import InvalidTenantError, UnknownTenantError, validate_schema_name

#: The name of the tenant foreign key on every row-level model (column ``tenant_id``).
TENANT_FIELD = "tenant"


def tenant_model_label() -> str | None:
    """The tenant model as ``"app_label.Model"``: ``DATA_ARCH["TENANCY"]["MODEL"]``, else
    django-tenants' ``TENANT_MODEL``; None when neither is set (no tenancy in this project)."""
    from data_arch.conf import tenancy_settings

    return tenancy_settings().model or getattr(settings, "TENANT_MODEL", None) or None


def tenant_model() -> Any:
    """The tenant model class, or None when none is configured."""
    from django.apps import apps

    label = tenant_model_label()
    return apps.get_model(label) if label else None


def tenant_models(app_configs: Any = None) -> list[Any]:
    """Every concrete row-level (``TenantModel``) model; none when no tenant model is set."""
    if tenant_model_label() is None:
        return []  # TenantModel cannot even be defined without one
    from django.apps import apps

    from data_arch.tenancy.models import is_tenant_model

    configs = app_configs if app_configs is not None else apps.get_app_configs()
    return [m for config in configs for m in config.get_models() if is_tenant_model(m)]


def public_schema_name() -> str:
    """The schema shared by every tenant (django-tenants' PUBLIC_SCHEMA_NAME, else public)."""
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
        raise UnknownTenantError(f"unknown tenant {schema_name!r}: no tenant has that schema") from None


def verify_tenant(tenant: Any) -> Any:
    """``tenant`` (a :class:`~data_arch.tenancy.context.Tenant`) if the registry knows it as
    given: its primary key exists and, when it names a schema, that tenant has that schema.

    For references that arrive from outside the process (task messages), where a primary key
    and a schema name could have been put together from two different tenants.
    """
    model = tenant_model()
    if model is None:
        return tenant
    has_schema = any(f.name == "schema_name" for f in model._meta.get_fields())
    if tenant.pk is None:
        if not has_schema or not model.objects.filter(schema_name=tenant.schema_name).exists():
            raise UnknownTenantError(f"unknown tenant: no tenant has schema {tenant.schema_name!r}")
        return tenant
    try:
        row = model.objects.get(pk=tenant.pk)
    except (model.DoesNotExist, ValueError, TypeError):
        raise UnknownTenantError(f"unknown tenant: no tenant has primary key {tenant.pk!r}") from None
    if tenant.schema_name is not None and getattr(row, "schema_name", None) != tenant.schema_name:
        raise InvalidTenantError(
            f"tenant {tenant.pk!r} has schema {getattr(row, 'schema_name', None)!r}, not "
            f"{tenant.schema_name!r}: the primary key and the schema name belong to different "
            "tenants"
        )
    return tenant


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

    A value the field could never hold (not a valid schema name, slug, number, too long) is
    InvalidTenantError; a well-formed one that matches no tenant is UnknownTenantError.
    """
    from django.core.exceptions import FieldDoesNotExist, ValidationError

    from data_arch.conf import tenancy_settings

    field_name = tenancy_settings().lookup_field
    if not isinstance(value, str) or not value or len(value) > 255:
        raise InvalidTenantError(
            f"tenant reference must be 1-255 characters, got {reprlib.repr(value)}"
        )
    if field_name == "schema_name":
        validate_schema_name(value)
    model = tenant_model()
    if model is None:
        raise InvalidTenantError("no tenant model is configured (DATA_ARCH['TENANCY']['MODEL'])")
    try:
        field = model._meta.get_field(field_name)
    except FieldDoesNotExist:
        raise InvalidTenantError(
            f"TENANCY.LOOKUP_FIELD {field_name!r} is not a field of {model._meta.label}"
        ) from None
    try:
        lookup = field.to_python(value)
        field.run_validators(lookup)
    except ValidationError:
        raise InvalidTenantError(
            f"malformed tenant reference {value!r}: not a valid {model._meta.label}.{field_name}"
        ) from None
    try:
        return model.objects.get(**{field_name: lookup})
    except model.DoesNotExist:
        raise UnknownTenantError(
            f"unknown tenant {value!r}: no tenant has {field_name}={value!r}"
        ) from None
