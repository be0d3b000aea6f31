"""The database router: writes and migrations to the primary, reads to a healthy replica.

A read goes to the primary when the block is pinned (``use_primary()``), while a migration
runs in this context, or when the primary connection is inside ``transaction.atomic``; inside
``atomic(using=<replica>)`` it stays on that replica. Otherwise it goes to the replica this
routing context already reads from (one per set, so reads are monotonic), or a healthy one
picked by weighted round-robin -- provided that replica has replayed the WAL position of the
context's last write: known from the process-wide memory of replayed positions, else polled
for at most MAX_LSN_WAIT. Failing that, the read goes to the primary, and the context stays
there so later reads never go back in time.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.utils import DatabaseError, OperationalError

from data_arch import schema_backend
from data_arch.routing import health, metrics, sql, wal
from data_arch.routing.lsn import parse_lsn
from data_arch.routing.sets import RouterSet, router_config, router_sets, set_for_alias, set_for_app
from data_arch.routing.state import RoutingState, current_state, migrating, pinned

__all__ = ["NoHealthyReplica", "ReplicaRouter", "pick_replica", "read_alias"]

logger = logging.getLogger("data_arch.routing")


class NoHealthyReplica(OperationalError):
    """NO_HEALTHY_REPLICA is 'error' and no replica of the set can serve the read."""


_counters: dict[str, Iterator[int]] = {}


def sync_tenant(primary: str, alias: str) -> None:
    """Give ``alias`` the django-tenants tenant/schema of the primary connection."""
    if alias != primary:
        schema_backend.copy_schema(connections[primary], connections[alias])


def _replayed(alias: str, required: int, state: RoutingState | None, wait: bool) -> bool:
    """Whether ``alias`` has replayed ``required``; polls up to MAX_LSN_WAIT when ``wait``."""
    if wal.known_replayed(alias) >= required:
        return True
    if state is not None and state.confirmed.get(alias, -1) >= required:
        return True
    deadline = time.monotonic() + (router_config().max_lsn_wait if wait else 0.0)
    connection = connections[alias]
    try:
        connection.ensure_connection()
        with connection.connection.cursor() as cursor:
            while True:
                cursor.execute(sql.REPLAY_LSN)
                (text,) = cursor.fetchone()
                lsn = parse_lsn(text) if text is not None else None
                wal.note_replayed(alias, lsn)
                if lsn is not None and lsn >= required:
                    if state is not None:
                        state.confirmed[alias] = lsn
                    return True
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.001)
    except Exception as exc:  # psycopg or Django error: the replica cannot serve us now
        health.mark_unhealthy(alias, f"replay position check failed: {exc}".strip())
        _close(connection)
        return False


def _close(connection: Any) -> None:
    try:
        connection.close()
    except DatabaseError:
        pass


#: How long a read waits for another thread's connect to the same replica before it gives up on
#: that replica for this read (a connect on a working network takes milliseconds).
CONNECT_WAIT = 0.1

# alias -> set when the connect in flight to it ends (one per alias per process).
_connecting: dict[str, threading.Event] = {}
_connecting_lock = threading.Lock()


def _usable(alias: str) -> bool:
    """Connect now if needed, so a replica that is down is skipped instead of failing a read.

    Connects to one alias are single-flight per process: while one thread waits on a host that
    does not answer (at most its ``connect_timeout``), the others wait :data:`CONNECT_WAIT`
    for it and then read elsewhere, so one request per outage pays the timeout, not all.
    """
    connection = connections[alias]
    options = connection.settings_dict.setdefault("OPTIONS", {})
    if "connect_timeout" not in options:
        # A hung host would otherwise hold the connect for as long as the kernel retries.
        options["connect_timeout"] = router_config().probe_timeout
    if connection.connection is not None:
        if connection.connection.info.dbname == connection.settings_dict["NAME"]:
            return _standby(alias, connection)
        # Opened before NAME changed (the test runner points mirrors at the test database).
        _close(connection)
    with _connecting_lock:
        in_flight = _connecting.get(alias)
        if in_flight is None:
            in_flight = _connecting[alias] = threading.Event()
            mine = True
        else:
            mine = False
    if not mine:
        if not in_flight.wait(CONNECT_WAIT):
            return False  # another thread has been waiting on this host: read elsewhere
        verdict = health.last_verdict(alias)
        if verdict is not None and not verdict.healthy:
            return False  # that connect failed
    try:
        connection.ensure_connection()
    except DatabaseError as exc:
        health.mark_unhealthy(alias, f"connect failed: {exc}".strip())
        return False
    finally:
        if mine:
            with _connecting_lock:
                _connecting.pop(alias, None)
            in_flight.set()
    return _standby(alias, connection)


def _standby(alias: str, connection: Any) -> bool:
    """False (and the replica marked unhealthy) when the server says it is not a standby.

    PostgreSQL reports ``in_hot_standby`` to every client, at connect and when it changes: a
    multi-host replica alias (``prefer-standby``) that reached a promoted or former primary is
    seen before its first read, not at the next probe. Unreported (a pooler in between): trusted.
    """
    try:
        in_hot_standby = connection.connection.info.parameter_status("in_hot_standby")
    except Exception:  # noqa: BLE001 -- another driver: the probes decide
        return True
    if in_hot_standby != "off":
        return True
    health.mark_unhealthy(alias, health.NOT_A_STANDBY)
    _close(connection)
    return False


def _healthy(rset: RouterSet, exclude: set[str]) -> list[str]:
    return [
        alias for alias in rset.replicas
        if alias not in exclude and health.health_of(alias, rset.primary).healthy
    ]


def pick_replica(rset: RouterSet, exclude: set[str], required: int | None,
                 state: RoutingState | None, wait: bool = True) -> str | None:
    """A healthy, reachable replica that has replayed ``required``; None if there is none."""
    healthy = _healthy(rset, exclude)
    if not healthy:
        return None
    chosen = state.chosen.get(rset.primary) if state is not None else None
    if chosen in healthy:
        order = [chosen] + [a for a in healthy if a != chosen]
    else:
        wheel = [alias for alias in healthy for _ in range(rset.weight(alias))]
        counter = _counters.setdefault(rset.primary, itertools.count())
        start = next(counter) % len(wheel)
        first = wheel[start]
        order = [first] + [a for a in healthy if a != first]
    if required is not None:
        # Replicas known to have replayed the position first: nobody waits on a lagging one
        # while another is current.
        order.sort(key=lambda alias: wal.known_replayed(alias) < required)
    for alias in order:
        if not _usable(alias):
            continue
        sync_tenant(rset.primary, alias)
        if required is not None and not _replayed(alias, required, state, wait):
            continue
        return alias
    return None


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def read_alias(rset: RouterSet) -> str:
    """Where a read for ``rset`` goes now (the router's decision, usable directly)."""
    alias, reason = _decide(rset)
    metrics.record("read", alias, reason)
    return alias


def _decide(rset: RouterSet) -> tuple[str, str]:
    """The alias a read goes to, and why (a bounded label: see :data:`metrics.REASONS`)."""
    primary = rset.primary
    if not rset.replicas:
        return primary, "no_replicas"
    if pinned():
        return primary, "pinned"
    if migrating():
        return primary, "migrating"
    primary_connection = connections[primary]
    if primary_connection.in_atomic_block:
        return primary, "primary_transaction"
    for replica in rset.replicas:
        if replica in connections.settings and connections[replica].in_atomic_block:
            return replica, "replica_transaction"  # a transaction there reads there to its end
    state = current_state()
    required = None
    wait = True
    if state is not None:
        if state.chosen.get(primary) == primary and state.scoped:
            return primary, "sticky_primary"
        if primary in state.pending:
            if _in_event_loop():
                # Reading the WAL position here would block the event loop (Django refuses it):
                # the primary certainly has this context's write.
                return primary, "own_write"
            wal.capture_pending(state, only=primary)
        required = state.required.get(primary)
        # Outside a request/task, a context that already fell back does not wait again: it
        # goes back to a replica once one is known (probes, other reads) to have caught up.
        wait = primary not in state.fell_back
    alias = pick_replica(rset, set(), required, state, wait)
    if alias is not None:
        if state is not None:
            state.fell_back.discard(primary)
            if state.scoped:
                state.chosen[primary] = alias
        return alias, "replica"
    if not _healthy(rset, set()):
        if router_config().no_healthy_replica == "error":
            raise NoHealthyReplica(
                f"no healthy replica among {', '.join(rset.replicas)} for primary {primary!r} "
                "and DATA_ARCH['ROUTER']['NO_HEALTHY_REPLICA'] is 'error'; see the "
                "'data_arch.routing' log for why each was skipped"
            )
        return primary, "no_healthy_replica"
    # Replicas are up but behind this context's last write: read it from the primary, and
    # stay there for the rest of the request/task so no later read goes back in time.
    if state is not None:
        if state.scoped:
            state.chosen[primary] = primary
        else:
            state.fell_back.add(primary)
    return primary, "replicas_behind"


class ReplicaRouter:
    """``DATABASE_ROUTERS`` entry; list it after django-tenants' TenantSyncRouter."""

    def _set(self, model: Any) -> RouterSet:
        return set_for_app(model._meta.app_label)

    def db_for_read(self, model: Any, **hints: Any) -> str:
        rset = self._set(model)
        instance = hints.get("instance")
        db = getattr(getattr(instance, "_state", None), "db", None)
        if db is not None and db not in rset.replicas:
            return db  # loaded from or saved to the primary (or another database): stay there
        return read_alias(rset)

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return self._set(model).primary

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        first = set_for_alias(obj1._state.db or DEFAULT_DB_ALIAS)
        second = set_for_alias(obj2._state.db or DEFAULT_DB_ALIAS)
        if first is not None and first is second:
            return True
        return None

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None,
                      **hints: Any) -> bool | None:
        sets = router_sets()
        if any(db in rset.replicas for rset in sets):
            return False  # never migrate a standby (it is read-only; it gets DDL by WAL)
        own = set_for_app(app_label, sets)
        if own is not sets[0]:
            return None if db == own.primary else False
        if any(db == rset.primary for rset in sets[1:]):
            return False
        return None
