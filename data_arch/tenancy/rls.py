"""The current tenant on every PostgreSQL statement, per transaction, on every alias.

An execute wrapper on every PostgreSQL connection (primary and replicas alike; placed by
:mod:`data_arch.wiring`, innermost) runs ``set_config(<TENANCY.RLS_SETTING>, <tenant id or ''>, true)`` --
with ``TENANCY.SIGNED_CONTEXT``, ``<tenant id>:<MAC>`` (:func:`signed_value`), which the policy's
SECURITY DEFINER function verifies against a secret the application role cannot read (the MAC
names the server process, or behind a pooler that hides it, only the tenant) --
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

A value set for one statement lasts until its transaction ends, so what reaches PostgreSQL
without passing through the wrapper would otherwise run with the previous statement's tenant:

* :func:`on_switch` -- ``tenant_context`` entering or leaving -- sets the new values at once on
  this thread's connections that are inside a transaction;
* ``cursor.copy()`` and ``cursor.stream()`` (psycopg methods that Django's cursor hands straight
  to the driver) set them first (:func:`install_copy_guard`, called for every new connection);
* a server-side cursor (``iterator()`` inside ``atomic()``) is read by ``FETCH``, and PostgreSQL
  evaluates the policy at each ``FETCH``: while one is open on a connection subject to RLS, a
  statement for another tenant on its connection, and a ``tenant_context`` switch to another
  tenant, raise :class:`CrossTenantError`; leaving the ``tenant_context`` it was opened in
  closes it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import re
import weakref
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg.sql
from psycopg.pq import TransactionStatus

from data_arch import schema_backend
from data_arch.tenancy import sql
from data_arch.tenancy.context import CrossTenantError, current_tenant

__all__ = [
    "POOLED", "behind_pooler", "install_copy_guard", "on_switch", "secret_pads", "set_tenant", "signed_value",
    "tenant_setting_value",
]

# Statements that must not run inside a transaction block, and transaction control itself
# (prefixing those would change their meaning or fail in an aborted transaction).
_PASS_THROUGH = re.compile(
    r"""^\s*(?:
        VACUUM|REINDEX|CLUSTER|CHECKPOINT|DISCARD|ALTER\s+SYSTEM
      | (?:CREATE|DROP|ALTER)\s+(?:DATABASE|TABLESPACE|SUBSCRIPTION)
      | BEGIN|START\s+TRANSACTION|COMMIT|END|ROLLBACK|ABORT|SAVEPOINT|RELEASE
      | PREPARE\s+TRANSACTION|SET\s+(?:SESSION\s+CHARACTERISTICS|TRANSACTION|CONSTRAINTS)
    )\b
    | ^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\b
    | ^\s*DROP\s+INDEX\s+CONCURRENTLY\b
    | ^\s*ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?[^\s;]+\s+DETACH\s+PARTITION\s+[^\s;]+
      \s+(?:CONCURRENTLY|FINALIZE)\s*;?\s*\Z""",
    re.IGNORECASE | re.VERBOSE,
)


def tenant_setting_value() -> str:
    """What the RLS setting holds for the current context: the tenant id, or ''."""
    tenant = current_tenant()
    if tenant is None or tenant.pk is None:
        return ""
    return str(tenant.pk)


@functools.lru_cache(maxsize=4)
def _derived_key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"data_arch.tenancy.rls-context", hashlib.sha256).digest()


def _key() -> bytes:
    from django.conf import settings

    from data_arch.conf import tenancy_settings

    return _derived_key(tenancy_settings().rls_secret or settings.SECRET_KEY)


def secret_pads() -> tuple[bytes, bytes]:
    """HMAC-SHA256's inner and outer pads of the signing key: what the database stores, so it
    can verify a MAC with the built-in sha256() and never holds the key itself."""
    block = _key().ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in block), bytes(b ^ 0x5C for b in block)


#: What a MAC names instead of a server process when the client cannot know which server
#: process runs its statements (a pooler in between).
POOLED = sql.POOLED


def signed_value(value: str, binding: int | str) -> str:
    """``value`` (a tenant id) as the signed setting holds it for ``binding``: a server process
    id, or :data:`POOLED`.

    On a direct connection the MAC binds the id to the one server process, so a value read
    from another session (its statement text is visible in pg_stat_activity to the same role)
    verifies nowhere else. Behind a pooler every transaction may run on another server
    process, so the MAC can only name the tenant (see the README's "Behind PgBouncer").
    """
    if not value:
        return value
    mac = hmac.new(_key(), f"{value}/{binding}".encode(), hashlib.sha256).hexdigest()
    return f"{value}:{mac}"


# raw connection -> what its MACs name: the server process id when the client's connection
# is to that process, else POOLED. The process id the client was given at connect time is
# the server's own on a direct connection; a pooler (PgBouncer) hands out one of its own.
_bindings: weakref.WeakKeyDictionary[Any, int | str] = weakref.WeakKeyDictionary()


def _binding(raw_connection: Any) -> int | str:
    binding = _bindings.get(raw_connection)
    if binding is None:
        announced = raw_connection.info.backend_pid
        (server_pid,) = raw_connection.execute(sql.BACKEND_PID).fetchone()
        binding = _bindings[raw_connection] = announced if server_pid == announced else POOLED
    return binding


def behind_pooler(raw_connection: Any) -> bool:
    """Whether ``raw_connection`` reaches PostgreSQL through a pooler (PgBouncer): its signed
    values then name the tenant only, not a server process."""
    return _binding(raw_connection) == POOLED


def _setting_pair(raw_connection: Any) -> tuple[str, str]:
    from data_arch.conf import tenancy_settings

    config = tenancy_settings()
    value = tenant_setting_value()
    if config.signed_context and value:
        value = signed_value(value, _binding(raw_connection))
    return config.rls_setting, value


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


def _settings(connection: Any, raw_connection: Any = None) -> list[tuple[str, str]]:
    pairs = [_setting_pair(raw_connection if raw_connection is not None else connection.connection)]
    search_path = _search_path(connection)
    if search_path is not None:
        # django-tenants sets search_path for the whole session when a cursor is opened; this
        # repeats it for the statement's own transaction, so a pooler handing the server
        # connection to someone else in between cannot put the statement in a wrong schema.
        pairs.append(("search_path", search_path))
    return pairs


# raw connection -> [(server-side cursor, the tenant value it was opened with)], for the cursors
# opened inside a transaction (a WITH HOLD cursor is materialised at its commit).
_server_cursors: weakref.WeakKeyDictionary[Any, list[tuple[Any, str]]] = weakref.WeakKeyDictionary()


# raw connection -> whether its role is subject to Row-Level Security (not superuser or
# BYPASSRLS): only there does a FETCH depend on the tenant setting, so only there is a
# server-side cursor pinned (maintenance aliases iterate across tenants freely).
_rls_applies: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _subject_to_rls(raw_connection: Any) -> bool:
    applies = _rls_applies.get(raw_connection)
    if applies is None:
        _user, superuser, bypass = raw_connection.execute(sql.ROLE).fetchone()
        applies = _rls_applies[raw_connection] = not (superuser or bypass)
    return applies


def _open_server_cursors(raw_connection: Any) -> list[tuple[Any, str]]:
    entries = _server_cursors.get(raw_connection)
    if not entries:
        return []
    if raw_connection.info.transaction_status == TransactionStatus.IDLE:
        entries.clear()  # no cursor without hold outlives its transaction
        return []
    entries[:] = [(ref, value) for ref, value in entries if ref() is not None and not ref().closed]
    return entries


def _refuse_while_pinned(raw_connection: Any, value: str, what: str) -> None:
    for _ref, pinned in _open_server_cursors(raw_connection):
        if pinned != value:
            raise CrossTenantError(
                f"{what} for tenant {value or '(none)'!r} refused: a server-side cursor "
                f"(iterator()) opened for tenant {pinned or '(none)'!r} is still open on this "
                "connection, and PostgreSQL applies the tenant policy at each FETCH; finish or "
                "close that iterator first"
            )


def _set_config_statement(pairs: list[tuple[str, str]]) -> tuple[str, list[str]]:
    return "SELECT " + ", ".join([sql.SET_CONFIG] * len(pairs)), [v for p in pairs for v in p]


def _django_connection(raw_connection: Any) -> Any:
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        if connection.connection is raw_connection:
            return connection
    return None


def on_switch(leaving: str | None = None) -> None:
    """The current tenant changed: give this thread's open transactions its values now.

    Called by ``tenant_context`` after the context variable changed (``leaving`` is the tenant
    value of the context being left, or None when entering). Refuses a switch to another tenant
    while one of those transactions holds a server-side cursor of a different tenant; on leave,
    closes the server-side cursors that were opened for the tenant being left.
    """
    from django.db import connections

    value = tenant_setting_value()
    for connection in connections.all(initialized_only=True):
        raw_connection = getattr(connection, "connection", None)
        if connection.vendor != "postgresql" or raw_connection is None or raw_connection.closed:
            continue
        if raw_connection.info.transaction_status != TransactionStatus.INTRANS:
            continue  # no transaction (nothing to carry over) or an aborted one
        if leaving is not None:
            for ref, pinned in list(_open_server_cursors(raw_connection)):
                if pinned == leaving and pinned != value:
                    ref().close()
        else:
            _refuse_while_pinned(raw_connection, value, "switching to a tenant")
        statement, values = _set_config_statement(_settings(connection))
        raw_connection.execute(statement, values)


def _guarded(base: type) -> type:
    guarded = _GUARDED.get(base)
    if guarded is None:
        guarded = type(f"TenantGuarded{base.__name__}", (base,), {
            "copy": _copy, "stream": _stream, "_data_arch_guarded": True,
            "__module__": __name__,
        })
        _GUARDED[base] = guarded
    return guarded


_GUARDED: dict[type, type] = {}


def _prepare_unwrapped(cursor: Any, what: str) -> None:
    raw_connection = cursor.connection
    value = tenant_setting_value()
    _refuse_while_pinned(raw_connection, value, what)
    connection = _django_connection(raw_connection)
    pairs = (
        _settings(connection, raw_connection) if connection is not None
        else [_setting_pair(raw_connection)]
    )
    statement, values = _set_config_statement(pairs)
    cursor.execute(statement, values)  # the driver's execute: no wrapper runs twice


@contextlib.contextmanager
def _copy(self: Any, statement: Any, params: Any = None, **kwargs: Any) -> Iterator[Any]:
    base = super(type(self), self).copy
    transaction = (
        self.connection.transaction() if self.connection.autocommit else contextlib.nullcontext()
    )
    with transaction:
        _prepare_unwrapped(self, "COPY")
        with base(statement, params, **kwargs) as copy:
            yield copy


def _stream(self: Any, query: Any, params: Any = None, **kwargs: Any) -> Iterator[Any]:
    base = super(type(self), self).stream
    transaction = (
        self.connection.transaction() if self.connection.autocommit else contextlib.nullcontext()
    )
    with transaction:
        _prepare_unwrapped(self, "stream()")
        yield from base(query, params, **kwargs)


def install_copy_guard(connection: Any) -> None:
    """Make ``cursor.copy()`` and ``cursor.stream()`` on ``connection`` run with the current
    tenant's values (idempotent); Django's execute wrappers never see them."""
    raw_connection = getattr(connection, "connection", None)
    if raw_connection is None or not hasattr(raw_connection, "cursor_factory"):
        return
    factory = raw_connection.cursor_factory
    if not getattr(factory, "_data_arch_guarded", False):
        raw_connection.cursor_factory = _guarded(factory)


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
    _refuse_while_pinned(raw_connection, tenant_setting_value(), "a statement")
    # The settings may cost a round trip (the pooler probe of a new connection): a server gone
    # by then must surface as Django's OperationalError, which the replica retry handles.
    with context["connection"].wrap_database_errors:
        pairs = _settings(context["connection"], raw_connection)
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
    statement, values = _set_config_statement(pairs)
    if raw_connection.autocommit:
        with raw_connection.transaction():
            raw_connection.execute(statement, values)
            return execute(sql_text, params, many, context)
    raw_connection.execute(statement, values)
    result = execute(sql_text, params, many, context)
    if isinstance(raw_cursor, psycopg.ServerCursor) and _subject_to_rls(raw_connection):
        _server_cursors.setdefault(raw_connection, []).append(
            (weakref.ref(raw_cursor), tenant_setting_value())
        )
    return result
