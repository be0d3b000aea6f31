"""The current tenant on every PostgreSQL statement, per transaction, on every alias.

An execute wrapper on every PostgreSQL connection (primary and replicas alike; placed by
:mod:`data_arch.wiring`, innermost) runs ``set_config(<TENANCY.RLS_SETTING>, <tenant id or ''>, true)`` --
and, on django-tenants connections, ``set_config('search_path', <the schema's path>, true)`` --
in the same transaction as each statement:

* a plain statement gets ``SELECT set_config(...);`` in front of it, sent in the same round
  trip. PostgreSQL runs a multi-statement query as one transaction even in autocommit, and the
  cursor is moved past the ``set_config`` result so the caller sees its own statement's result;
* server-side cursors, ``executemany`` and server-side binding (which refuses several
  statements in one ``execute``) get a separate ``set_config`` first -- inside a transaction
  opened for the purpose when the connection is in autocommit.

``true`` makes the values transaction-local, so a connection returned to Django's pool or to
PgBouncer in transaction mode carries nothing to its next user, and a value an earlier
statement set session-wide is overridden for every statement that follows. With no tenant the
value is ``''``, which the policy reads as "no rows".
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
import psycopg.sql

from data_arch import schema_backend
from data_arch.tenancy import sql
from data_arch.tenancy.context import current_tenant

__all__ = ["set_tenant", "tenant_setting_value"]

# Statements that must not run inside a transaction block, and transaction control itself
# (prefixing those would change their meaning or fail in an aborted transaction).
_PASS_THROUGH = re.compile(
    r"""^\s*(?:
        VACUUM|REINDEX|CLUSTER|CHECKPOINT|DISCARD|ALTER\s+SYSTEM
      | (?:CREATE|DROP|ALTER)\s+(?:DATABASE|TABLESPACE|SUBSCRIPTION)
      | BEGIN|START\s+TRANSACTION|COMMIT|END|ROLLBACK|ABORT|SAVEPOINT|RELEASE
      | PREPARE\s+TRANSACTION|SET\s+(?:SESSION\s+CHARACTERISTICS|TRANSACTION|CONSTRAINTS)
    )\b
    | ^\s*(?:CREATE|DROP|ALTER|REINDEX)\b[^;]*\bCONCURRENTLY\b""",
    re.IGNORECASE | re.VERBOSE,
)


def tenant_setting_value() -> str:
    """What the RLS setting holds for the current context: the tenant id, or ''."""
    tenant = current_tenant()
    if tenant is None or tenant.pk is None:
        return ""
    return str(tenant.pk)


def _setting_name() -> str:
    from data_arch.conf import tenancy_settings

    return tenancy_settings().rls_setting


def _literal(value: str, raw_connection: Any) -> str:
    return psycopg.sql.Literal(value).as_string(raw_connection)


def _search_path(connection: Any) -> str | None:
    """The search_path a statement on ``connection`` runs with, or None (no schemas).

    The current tenant's schema when one is set: the connection object belongs to a thread,
    and under ASGI the thread that runs a ``sync_to_async`` call (or an async ORM method) is
    not the one whose ``tenant_context`` is current -- the contextvar is. Without a tenant
    schema, django-tenants' own choice for the connection (``schema_context``, migrations).
    """
    if not schema_backend.is_schema_connection(connection):
        return None
    tenant = current_tenant()
    if tenant is not None and tenant.schema_name is not None:
        paths = schema_backend.search_path_for(tenant.schema_name)
    else:
        paths = schema_backend.search_path(connection)
    if paths is None:
        return None
    return ", ".join(connection.ops.quote_name(path) for path in paths)


def _settings(connection: Any) -> list[tuple[str, str]]:
    pairs = [(_setting_name(), tenant_setting_value())]
    search_path = _search_path(connection)
    if search_path is not None:
        # django-tenants sets search_path for the whole session when a cursor is opened; this
        # repeats it for the statement's own transaction, so a pooler handing the server
        # connection to someone else in between cannot put the statement in a wrong schema.
        pairs.append(("search_path", search_path))
    return pairs


def set_tenant(execute, sql_text, params, many, context):
    """Execute wrapper: run the statement with the current tenant set for its transaction."""
    raw_cursor = context["cursor"].cursor
    raw_connection = raw_cursor.connection
    if isinstance(sql_text, psycopg.sql.Composable):
        sql_text = sql_text.as_string(raw_connection)
    elif isinstance(sql_text, bytes):
        sql_text = sql_text.decode(raw_connection.info.encoding)
    if _PASS_THROUGH.match(sql_text):
        return execute(sql_text, params, many, context)
    pairs = _settings(context["connection"])
    single_round_trip = (
        not many
        and isinstance(raw_cursor, psycopg.ClientCursor)
        and not isinstance(raw_cursor, psycopg.ServerCursor)
    )
    if single_round_trip:
        prefix = "SELECT " + ", ".join(
            f"set_config({_literal(name, raw_connection)}, {_literal(value, raw_connection)}, true)"
            for name, value in pairs
        ) + "; "
        if params is not None:
            prefix = prefix.replace("%", "%%")
        result = execute(prefix + sql_text, params, many, context)
        # The cursor sits on set_config's result; move it to the caller's statement.
        raw_cursor.nextset()
        return result
    statement = "SELECT " + ", ".join([sql.SET_CONFIG] * len(pairs))
    values = [item for pair in pairs for item in pair]
    if raw_connection.autocommit:
        with raw_connection.transaction():
            raw_connection.execute(statement, values)
            return execute(sql_text, params, many, context)
    raw_connection.execute(statement, values)
    return execute(sql_text, params, many, context)
