"""The one module that knows django-tenants' connection internals.

django-tenants keeps the current schema on the connection object (``set_tenant``,
``set_schema``, ``schema_name``, ``include_public_schema``) and builds the search_path in a
private method. Tenancy and routing go through these functions only, so an upgrade of
django-tenants touches this file alone. Nothing here imports django-tenants: a connection of
any other backend simply has no schema.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "activate_schema",
    "copy_schema",
    "current_schema",
    "is_schema_connection",
    "restore_schema",
    "schema_aliases",
    "search_path",
    "search_path_for",
]


def is_schema_connection(connection: Any) -> bool:
    """Whether ``connection`` is on django-tenants' backend (it carries a search_path)."""
    return hasattr(connection, "set_schema") and hasattr(connection, "set_tenant")


def schema_aliases() -> list[str]:
    """The database aliases on django-tenants' backend."""
    from django.db import connections

    return [alias for alias in connections.settings if is_schema_connection(connections[alias])]


def current_schema(connection: Any) -> str | None:
    return getattr(connection, "schema_name", None) if is_schema_connection(connection) else None


def search_path(connection: Any) -> list[str] | None:
    """The schemas django-tenants puts on the connection's search_path, or None."""
    paths = getattr(connection, "_get_cursor_search_paths", None)
    if paths is None or not getattr(connection, "schema_name", None):
        return None
    return list(paths())


def search_path_for(schema_name: str, include_public: bool = True) -> list[str]:
    """The search_path django-tenants would give a connection switched to ``schema_name``.

    The same rule as the backend's own (the schema, then the public schema unless it is the
    public schema, then ``PG_EXTRA_SEARCH_PATHS``), computed from a schema name alone, so a
    statement can be put in the current tenant's schema whichever thread's connection runs it.
    """
    from django.conf import settings

    from data_arch.tenancy.registry import public_schema_name

    public = public_schema_name()
    paths = [schema_name]
    if include_public and schema_name != public:
        paths.append(public)
    paths.extend(getattr(settings, "PG_EXTRA_SEARCH_PATHS", []))
    return paths


def activate_schema(connection: Any, tenant: Any, schema_name: str) -> Any:
    """Switch ``connection`` to a tenant (a django-tenants tenant object, or only its schema
    name); returns what :func:`restore_schema` needs to switch back."""
    previous = (connection.tenant, connection.include_public_schema)
    if tenant is not None and hasattr(tenant, "schema_name"):
        connection.set_tenant(tenant)
    else:
        connection.set_schema(schema_name)
    return previous


def restore_schema(connection: Any, previous: Any) -> None:
    tenant, include_public = previous
    if tenant is None:
        connection.set_schema_to_public()
    else:
        connection.set_tenant(tenant, include_public)


def copy_schema(source: Any, target: Any) -> None:
    """Give ``target`` the tenant and schema of ``source`` (a replica gets the primary's)."""
    if source is target or not is_schema_connection(target):
        return
    tenant = getattr(source, "tenant", None)
    if tenant is None:
        if target.schema_name is None:
            target.set_schema_to_public()
        return
    if target.tenant is not tenant and (
        target.schema_name != source.schema_name
        or getattr(target.tenant, "pk", None) != getattr(tenant, "pk", None)
        or target.include_public_schema != source.include_public_schema
    ):
        target.set_tenant(tenant, source.include_public_schema)
