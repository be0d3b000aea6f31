"""Reads that survive a replica going away: one failed read is re-run elsewhere, correctly.

Retried: one ``execute`` of a read, outside a transaction on the replica, that failed because
the connection broke (OperationalError/InterfaceError) or was cancelled by a hot-standby
conflict (SQLSTATE 40001, "conflict with recovery"). The statement is run again on another
healthy replica of the set that has replayed the context's writes, else on the primary,
through *that* connection's own cursor -- so its own execute wrappers (the tenant settings)
run there afresh -- and the cursor the ORM holds is pointed at the new result. This wrapper
sits outside the tenant wrapper (:mod:`data_arch.wiring`), so it retries the statement the ORM
wrote, not a prefixed one. Not retried: writes, ``executemany``, statements inside
``atomic(using=replica)``, and failures while fetching rows after a successful execute.
"""

from __future__ import annotations

import logging

from django.db import connections
from django.db.utils import DatabaseError, InterfaceError, OperationalError

from data_arch.routing import health, metrics
from data_arch.routing.router import pick_replica, sync_tenant
from data_arch.routing.sets import role_of, set_for_alias
from data_arch.routing.state import current_state
from data_arch.routing.writes import is_write

__all__ = ["is_recovery_conflict", "retry_reads"]

logger = logging.getLogger("data_arch.routing")


def is_recovery_conflict(exc: BaseException) -> bool:
    """A replica query cancelled because WAL replay needed what it was reading."""
    cause = exc.__cause__ or exc
    return getattr(cause, "sqlstate", None) == "40001" and "recovery" in str(cause)


def _fallback(alias: str, primary: str) -> str:
    rset = set_for_alias(alias)
    state = current_state()
    if rset is None or (state is not None and primary in state.pending):
        return primary
    required = state.required.get(primary) if state is not None else None
    return pick_replica(rset, {alias}, required, state, wait=False) or primary


def retry_reads(execute, sql, params, many, context):
    """Execute wrapper on replica connections (see the module docstring)."""
    connection = context["connection"]
    if role_of(connection.alias) != "replica":
        return execute(sql, params, many, context)
    try:
        return execute(sql, params, many, context)
    except (OperationalError, InterfaceError) as exc:
        if many or connection.in_atomic_block or is_write(sql):
            raise
        alias = connection.alias
        rset = set_for_alias(alias)
        if rset is None:
            raise
        conflict = is_recovery_conflict(exc)
        if not conflict:
            health.mark_unhealthy(alias, f"a read failed: {exc}".strip())
            try:
                connection.close()
            except DatabaseError:
                pass
        fallback = _fallback(alias, rset.primary)
        sync_tenant(rset.primary, fallback)
        target = connections[fallback]
        replacement = target.cursor()
        result = replacement.execute(sql, params)
        wrapper = context["cursor"]
        wrapper.cursor = replacement.cursor
        wrapper.db = target
        metrics.record("retry", alias, "conflict" if conflict else "connection")
        logger.warning(
            "read on %r %s (%s); retried on %r", alias,
            "hit a recovery conflict" if conflict else "failed",
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
            fallback,
        )
        return result


