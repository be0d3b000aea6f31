"""The current tenant: one immutable value in a contextvar, async- and thread-safe.

Everything that needs to know the tenant -- managers, Row-Level Security settings, replica
connections, cache keys, Celery messages, log records -- reads it from here. Context managers
restore the previous value on exit, so nesting behaves, and a new thread or a Celery worker
starts with no tenant at all (fail closed), never with a leftover one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

__all__ = [
    "CrossTenantError",
    "InvalidTenantError",
    "NoTenantError",
    "Tenant",
    "UnknownTenantError",
    "as_tenant",
    "current_tenant",
    "require_tenant",
    "tenant_context",
    "validate_schema_name",
]

# Same rule as django-tenants, plus the 63-byte limit PostgreSQL really applies (bytes, not chars).
_SCHEMA_RE = re.compile(r"^(?!pg_)[^\"'\\;\x00\r\n\s]+\Z", re.IGNORECASE)


class NoTenantError(RuntimeError):
    """Tenant-scoped data was touched while no tenant is active."""


class InvalidTenantError(ValueError):
    """A tenant reference (schema name, id, object) is malformed or unknown."""


class UnknownTenantError(InvalidTenantError):
    """A well-formed tenant reference that names no tenant."""


class CrossTenantError(RuntimeError):
    """Code running for one tenant tried to read or write another tenant's rows."""


def validate_schema_name(name: Any) -> str:
    """Return ``name`` if it is a usable PostgreSQL schema name, else raise InvalidTenantError."""
    if not isinstance(name, str) or not name:
        raise InvalidTenantError(f"schema name must be a non-empty string, got {name!r}")
    if len(name.encode()) > 63:
        raise InvalidTenantError(
            f"schema name {name[:20]!r}... is {len(name.encode())} bytes; PostgreSQL allows 63"
        )
    if not _SCHEMA_RE.match(name):
        raise InvalidTenantError(
            f"invalid schema name {name!r}: no quotes, backslashes, semicolons, whitespace or "
            "NUL, and no 'pg_' prefix"
        )
    return name


@dataclasses.dataclass(frozen=True, slots=True)
class Tenant:
    """The active tenant: the tenant model's primary key and, with django-tenants, its schema."""

    pk: Any
    schema_name: str | None = None

    def __post_init__(self) -> None:
        if self.pk is None and self.schema_name is None:
            raise InvalidTenantError("a tenant needs a primary key or a schema name")
        if self.schema_name is not None:
            validate_schema_name(self.schema_name)

    @property
    def key(self) -> str:
        """A stable text form for cache keys, log records and metric labels."""
        return self.schema_name if self.schema_name is not None else f"id-{self.pk}"


_current: ContextVar[Tenant | None] = ContextVar("data_arch_tenant", default=None)


def as_tenant(value: Any) -> Tenant:
    """A :class:`Tenant` from a Tenant, a tenant model instance or a django-tenants tenant."""
    if isinstance(value, Tenant):
        return value
    if value is None:
        raise InvalidTenantError("None is not a tenant (data_arch never reads None as 'all tenants')")
    pk = getattr(value, "pk", None)
    schema_name = getattr(value, "schema_name", None)
    if pk is None and schema_name is None:
        raise InvalidTenantError(f"{value!r} is neither a Tenant nor a saved tenant model instance")
    return Tenant(pk=pk, schema_name=schema_name)


def current_tenant() -> Tenant | None:
    return _current.get()


def require_tenant() -> Tenant:
    tenant = _current.get()
    if tenant is None:
        raise NoTenantError(
            "no tenant is active: wrap the code in data_arch.tenancy.tenant_context(tenant), or "
            "use the model's unscoped manager for deliberate cross-tenant work"
        )
    return tenant


@contextlib.contextmanager
def tenant_context(tenant: Any) -> Iterator[Tenant]:
    """Make ``tenant`` current for the block; restores the previous tenant (or none) after.

    With django-tenants, the schema is switched on every alias that uses its backend -- the
    primary and the replicas alike -- so a read routed to a replica sees the same schema. A
    transaction already open on this thread gets the new tenant's settings at once, on entry
    and on exit (see :mod:`data_arch.tenancy.rls`).
    """
    value = as_tenant(tenant)
    token = _current.set(value)
    switched: list[tuple[Any, Any]] = []
    from data_arch.tenancy import rls

    try:
        if value.schema_name is not None:
            from django.db import connections

            from data_arch import schema_backend

            instance = tenant if value.pk is not None and not isinstance(tenant, Tenant) else None
            for alias in schema_backend.schema_aliases():
                connection = connections[alias]
                previous = schema_backend.activate_schema(connection, instance, value.schema_name)
                switched.append((connection, previous))
        rls.on_switch()
        yield value
    finally:
        from data_arch import schema_backend

        leaving = rls.tenant_setting_value()
        for connection, previous in reversed(switched):
            schema_backend.restore_schema(connection, previous)
        _current.reset(token)
        rls.on_switch(leaving=leaving)
