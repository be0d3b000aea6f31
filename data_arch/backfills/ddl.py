"""DDL under ``lock_timeout`` with retries, and the schema-editor guard that applies it.

A DDL statement that needs a strong lock (``ALTER TABLE`` takes ACCESS EXCLUSIVE) queues behind
any long query on the table, and every other statement then queues behind the DDL: one slow
report stalls all writers. Under a short ``lock_timeout`` the DDL gives up instead, the queue
drains, and it tries again after a backoff, so nobody waits longer than the timeout per attempt.

:func:`run_ddl` is the primitive (the partition maintenance has the same loop and could share
this one). Inside a transaction each attempt runs in a savepoint, so a timed-out attempt is
rolled back alone; in autocommit (``atomic = False`` migrations) it runs as it is.

With ``DATA_ARCH["BACKFILLS"]["DDL_GUARD"] = True`` every statement a migration's schema editor
runs goes through :func:`run_ddl`. ``CREATE/DROP INDEX CONCURRENTLY`` run without a lock timeout:
their waits are for older transactions to end, they never block writers, and a cancelled one
leaves an invalid index behind.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import re
import time
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError, transaction

__all__ = ["DDLStats", "GuardedSchemaEditorMixin", "install", "run_ddl", "stats"]

logger = logging.getLogger("data_arch.backfills")

_CONCURRENTLY = re.compile(r"^\s*(CREATE|DROP)\s+(UNIQUE\s+)?INDEX\s+CONCURRENTLY\b",
                           re.IGNORECASE)


@dataclasses.dataclass
class DDLStats:
    statements: int = 0
    lock_timeouts: int = 0


#: Counters since the process started (read by tests and metrics).
stats = DDLStats()


def _is_lock_timeout(exc: BaseException) -> bool:
    cause = exc.__cause__ or exc
    state = getattr(cause, "sqlstate", None) or getattr(getattr(cause, "diag", None), "sqlstate", None)
    return state == "55P03"


def _settings() -> Any:
    from data_arch import conf

    return conf.backfill_settings()


def run_ddl(
    connection: Any,
    statement: str,
    params: Any = None,
    *,
    lock_timeout_ms: int | None = None,
    retries: int | None = None,
    backoff_max: float | None = None,
    execute: Callable[[str, Any], Any] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run ``statement`` on ``connection`` under ``lock_timeout``, retrying when the lock times
    out (exponential backoff with jitter, at most ``backoff_max`` seconds); returns the number
    of attempts. Defaults come from ``DATA_ARCH["BACKFILLS"]`` (``DDL_*``). ``execute`` runs the
    statement (default: a cursor of ``connection``); the last lock timeout is re-raised."""
    config = _settings()
    timeout = config.ddl_lock_timeout_ms if lock_timeout_ms is None else lock_timeout_ms
    attempts = config.ddl_retries if retries is None else retries
    ceiling = config.ddl_backoff_max if backoff_max is None else backoff_max
    if _CONCURRENTLY.match(statement):
        timeout = 0

    def once() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('lock_timeout')")
            (previous,) = cursor.fetchone()
            cursor.execute("SELECT set_config('lock_timeout', %s, false)", [f"{timeout}ms"])
            try:
                if execute is not None:
                    execute(statement, params)
                else:
                    cursor.execute(statement, params)
            finally:
                if connection.in_atomic_block and connection.needs_rollback:
                    pass  # the savepoint's rollback restores it
                else:
                    try:
                        cursor.execute("SELECT set_config('lock_timeout', %s, false)", [previous])
                    except Exception:  # noqa: BLE001 -- an aborted transaction restores it
                        pass

    for attempt in range(1, attempts + 1):
        try:
            if connection.in_atomic_block:
                with transaction.atomic(using=connection.alias):
                    once()
            else:
                once()
            stats.statements += 1
            return attempt
        except OperationalError as exc:
            if not _is_lock_timeout(exc) or attempt == attempts:
                raise
            stats.lock_timeouts += 1
            delay = min(0.05 * 2 ** (attempt - 1), ceiling) * (0.5 + random.random())
            logger.info("DDL lock timeout (attempt %d of %d), retrying in %.2fs: %.120s",
                        attempt, attempts, delay, statement)
            sleep(delay)
    raise AssertionError("unreachable")


class GuardedSchemaEditorMixin:
    """Runs every statement of a schema editor through :func:`run_ddl` when ``DDL_GUARD`` is on."""

    def execute(self, sql: Any, params: Any = ()) -> None:  # type: ignore[override]
        parent = super().execute  # type: ignore[misc]
        if getattr(self, "collect_sql", False) or not _settings().ddl_guard:
            return parent(sql, params)
        run_ddl(self.connection, str(sql), params,  # type: ignore[attr-defined]
                execute=lambda statement, values: parent(sql, values))
        return None


def install() -> None:
    """Mix the guard into the schema editor of every configured PostgreSQL backend."""
    from django.conf import settings
    from django.db.backends.postgresql.schema import DatabaseSchemaEditor as PostgresSchemaEditor
    from django.db.utils import load_backend

    for config in settings.DATABASES.values():
        try:
            backend = load_backend(config["ENGINE"])
        except ImproperlyConfigured:  # Django reports an unloadable backend itself
            continue
        wrapper: Any = backend.DatabaseWrapper
        editor = wrapper.SchemaEditorClass
        if not issubclass(editor, PostgresSchemaEditor) or issubclass(editor, GuardedSchemaEditorMixin):
            continue
        wrapper.SchemaEditorClass = type(
            editor.__name__, (GuardedSchemaEditorMixin, editor), {"__module__": __name__}
        )
