"""The database router: writes and migrations to the primary, reads to a healthy replica.

A read goes to the primary when the block is pinned (``use_primary()``), when a migration is
running, or when the primary connection is inside ``transaction.atomic``. Otherwise it goes to
the replica this routing context already reads from (one per set, so reads are monotonic),
or a healthy one picked by weighted round-robin -- provided that replica has replayed the
WAL position of the context's last write (checked per replica, waiting at most
MAX_LSN_WAIT). Failing that, the read goes to the primary, and in a request or task the
context stays there so later reads never go back in time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import re
import time
from collections.abc import Iterable
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.utils import DatabaseError, InterfaceError, OperationalError

from data_arch import conf
from data_arch.routing import health
from data_arch.routing.lsn import parse_lsn
from data_arch.routing.state import RoutingState, current_state, pinned

__all__ = ["NoHealthyReplica", "ReplicaRouter", "RouterSet", "capture_pending", "router_sets"]

logger = logging.getLogger("data_arch.routing")


class NoHealthyReplica(OperationalError):
    """NO_HEALTHY_REPLICA is 'error' and no replica of the set can serve the read."""


@dataclasses.dataclass(frozen=True)
class RouterSet:
    primary: str
    replicas: tuple[str, ...]
    apps: tuple[str, ...] = ()
    weights: tuple[tuple[str, int], ...] = ()

    def weight(self, alias: str) -> int:
        return dict(self.weights).get(alias, 1)


_cached: tuple[Any, conf.RouterSettings, list[RouterSet]] | None = None


def _settings_key() -> Any:
    from django.conf import settings

    return (id(getattr(settings, "DATA_ARCH", None)), id(settings.DATABASES))


def router_config() -> conf.RouterSettings:
    """ROUTER settings, validated once per settings object (every read consults them)."""
    return _configured()[0]


def router_sets() -> list[RouterSet]:
    """The configured sets; the first (PRIMARY/REPLICAS) serves every app not listed in SETS."""
    return _configured()[1]


def clear_settings_cache(**kwargs: Any) -> None:
    global _cached
    _cached = None


def _configured() -> tuple[conf.RouterSettings, list[RouterSet]]:
    global _cached
    key = _settings_key()
    cached = _cached
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    config = conf.router_settings()
    weights = tuple(config.weights.items())
    sets = [RouterSet(config.primary, config.replicas, (), weights)]
    for item in config.sets:
        sets.append(RouterSet(item["primary"], item["replicas"], item["apps"], weights))
    _cached = (key, config, sets)
    return config, sets


def _set_for_app(app_label: str, sets: list[RouterSet]) -> RouterSet:
    for rset in sets[1:]:
        if app_label in rset.apps:
            return rset
    return sets[0]


def _set_for_alias(alias: str, sets: list[RouterSet]) -> RouterSet | None:
    for rset in sets:
        if alias == rset.primary or alias in rset.replicas:
            return rset
    return None


# --------------------------------------------------------------------------- write capture

_NOT_WRITES = frozenset({
    "SELECT", "SHOW", "EXPLAIN", "SET", "RESET", "BEGIN", "START", "COMMIT", "END", "ROLLBACK",
    "SAVEPOINT", "RELEASE", "DECLARE", "FETCH", "MOVE", "CLOSE", "VALUES", "TABLE", "LISTEN",
})
_DML = re.compile(r"\b(INSERT|UPDATE|DELETE|MERGE)\b", re.IGNORECASE)
_HEAD = re.compile(r"[\s(]*([A-Za-z]+)")
_SET_CONFIG_PREFIX = re.compile(r"\s*SELECT\s+set_config\(", re.IGNORECASE)


def is_write(sql: Any) -> bool:
    """Whether a statement changes data (anything but a read; a WITH counts if it has DML).

    A plain ``SELECT`` calling a function that writes is not seen as a write.
    """
    text = sql if isinstance(sql, str) else str(sql)
    if _SET_CONFIG_PREFIX.match(text):
        # data_arch.tenancy sends "SELECT set_config(...); <statement>" in one round trip.
        text = text.split(";", 1)[1] if ";" in text else text
    match = _HEAD.match(text)
    if match is None:
        return True
    head = match[1].upper()
    if head == "WITH":
        return bool(_DML.search(text))
    return head not in _NOT_WRITES


class _WriteWatcher:
    """Execute wrapper on a primary connection: notes that the context wrote (no query)."""

    def __init__(self, alias: str) -> None:
        self.alias = alias

    def __call__(self, execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if is_write(sql):
            current_state(create=True).note_write(self.alias)
        return result


class _ReplicaFailover:
    """Execute wrapper on a replica connection: retries a failed read once elsewhere.

    Retried: one ``execute`` of a read statement, outside a transaction on the replica, that
    failed with OperationalError/InterfaceError (the server went away). The statement is run
    again on another healthy replica of the set, or the primary, and the cursor the ORM holds
    is pointed at the new result. Not retried: writes, ``executemany``, statements inside
    ``atomic(using=replica)``, and failures while fetching rows after a successful execute.
    """

    def __init__(self, alias: str) -> None:
        self.alias = alias

    def __call__(self, execute, sql, params, many, context):
        try:
            return execute(sql, params, many, context)
        except (OperationalError, InterfaceError) as exc:
            connection = context["connection"]
            if many or connection.in_atomic_block or is_write(sql):
                raise
            health.mark_unhealthy(self.alias, f"a read failed: {exc}".strip())
            sets = router_sets()
            rset = _set_for_alias(self.alias, sets)
            if rset is None:
                raise
            try:
                connection.close()
            except DatabaseError:
                pass
            fallback = _pick(rset, exclude={self.alias}, required=None, state=None)
            if fallback is None:
                fallback = rset.primary
            _sync_tenant(rset.primary, fallback)
            target = connections[fallback]
            replacement = target.cursor()
            with target.wrap_database_errors:
                if params is None:
                    replacement.cursor.execute(sql)
                else:
                    replacement.cursor.execute(sql, params)
            wrapper = context["cursor"]
            wrapper.cursor = replacement.cursor
            wrapper.db = target
            logger.warning("read on %r failed (%s); retried on %r", self.alias,
                           str(exc).strip() or type(exc).__name__, fallback)
            return None


def _install(connection) -> None:
    """Put our execute wrapper on ``connection`` if it is a primary or replica alias."""
    if getattr(connection, "_data_arch_wrapped", False):
        return
    try:
        sets = router_sets()
    except Exception:
        return  # misconfiguration is reported by the system checks
    rset = _set_for_alias(connection.alias, sets)
    connection._data_arch_wrapped = True
    if rset is None:
        return
    if connection.alias == rset.primary:
        # Outermost, so it sees the statement as the ORM wrote it (before any prefix is added).
        connection.execute_wrappers.insert(0, _WriteWatcher(connection.alias))
    else:
        connection.execute_wrappers.append(_ReplicaFailover(connection.alias))


def on_connection_created(sender, connection, **kwargs) -> None:
    _install(connection)


def capture_pending(state: RoutingState, only: str | None = None) -> None:
    """Read the primary's WAL insert position for writes noted but not yet captured.

    Inside a transaction on the primary the position read covers every write committed before
    it (autocommit writes earlier in the context included), but not the transaction's own
    writes, whose commit comes later: the alias then stays pending, to be read again.
    """
    for alias in list(state.pending):
        if only is not None and alias != only:
            continue
        connection = connections[alias]
        in_transaction = connection.in_atomic_block
        connection.ensure_connection()
        try:
            with connection.connection.cursor() as cursor:
                cursor.execute("SELECT pg_current_wal_insert_lsn()::text")
                (lsn,) = cursor.fetchone()
        except Exception:  # noqa: BLE001 -- the driver's own error class
            if in_transaction:
                continue  # an aborted transaction: nothing to read until it ends
            raise
        state.require(alias, parse_lsn(lsn))
        if not in_transaction:
            state.pending.discard(alias)


# --------------------------------------------------------------------------- migrations

_migrating = False


def on_pre_migrate(**kwargs) -> None:
    global _migrating
    _migrating = True


def on_post_migrate(using: str | None = None, **kwargs) -> None:
    global _migrating
    _migrating = False
    # A migration wrote to the primary (DDL, RunPython) possibly before any router call put the
    # write watcher on its connection: the reads that follow (django-tenants lists tenant
    # schemas right after migrating public) must wait for the replicas to replay it.
    if using is not None and _set_for_alias(using, router_sets()) is not None:
        if using in {rset.primary for rset in router_sets()}:
            current_state(create=True).note_write(using)


# --------------------------------------------------------------------------- reads

_counters: dict[str, Iterable[int]] = {}


def _sync_tenant(primary: str, alias: str) -> None:
    """Give ``alias`` the django-tenants tenant/schema of the primary connection."""
    if alias == primary:
        return
    source, target = connections[primary], connections[alias]
    if not hasattr(target, "set_tenant"):
        return
    tenant = getattr(source, "tenant", None)
    if tenant is None:
        if target.schema_name is None:
            target.set_schema_to_public()
        return
    if (
        target.tenant is not tenant
        and (
            target.schema_name != source.schema_name
            or getattr(target.tenant, "pk", None) != getattr(tenant, "pk", None)
            or target.include_public_schema != source.include_public_schema
        )
    ):
        target.set_tenant(tenant, source.include_public_schema)


def _replayed(alias: str, required: int, state: RoutingState | None) -> bool:
    """Whether ``alias`` has replayed ``required``, polling up to MAX_LSN_WAIT."""
    if state is not None and state.confirmed.get(alias, -1) >= required:
        return True
    deadline = time.monotonic() + router_config().max_lsn_wait
    connection = connections[alias]
    try:
        connection.ensure_connection()
        with connection.connection.cursor() as cursor:
            while True:
                cursor.execute("SELECT pg_last_wal_replay_lsn()::text")
                (lsn,) = cursor.fetchone()
                if lsn is not None and parse_lsn(lsn) >= required:
                    if state is not None:
                        state.confirmed[alias] = parse_lsn(lsn)
                    return True
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.001)
    except Exception as exc:  # psycopg or Django error: the replica cannot serve us now
        health.mark_unhealthy(alias, f"replay position check failed: {exc}".strip())
        try:
            connection.close()
        except DatabaseError:
            pass
        return False


def _usable(alias: str) -> bool:
    """Connect now if needed, so a replica that is down is skipped instead of failing a read."""
    connection = connections[alias]
    _install(connection)
    if connection.connection is not None:
        if connection.connection.info.dbname == connection.settings_dict["NAME"]:
            return True
        # Opened before NAME changed (the test runner points mirrors at the test database).
        connection.close()
    try:
        connection.ensure_connection()
    except DatabaseError as exc:
        health.mark_unhealthy(alias, f"connect failed: {exc}".strip())
        return False
    return True


def _healthy(rset: RouterSet, exclude: set[str]) -> list[str]:
    ttl = router_config().health_ttl
    return [
        alias for alias in rset.replicas
        if alias not in exclude and health.health_of(alias, rset.primary, ttl).healthy
    ]


def _pick(rset: RouterSet, exclude: set[str], required: int | None,
          state: RoutingState | None) -> str | None:
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
        start = next(counter) % len(wheel)  # type: ignore[call-overload]
        first = wheel[start]
        order = [first] + [a for a in healthy if a != first]
    for alias in order:
        if not _usable(alias):
            continue
        _sync_tenant(rset.primary, alias)
        if required is not None and not _replayed(alias, required, state):
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
    primary = rset.primary
    if not rset.replicas or pinned() or _migrating:
        return primary
    primary_connection = connections[primary]
    _install(primary_connection)
    if primary_connection.in_atomic_block:
        return primary
    state = current_state()
    required = None
    if state is not None:
        if state.chosen.get(primary) == primary and state.scoped:
            return primary
        if primary in state.pending:
            if _in_event_loop():
                # Reading the WAL position here would block the event loop (Django refuses it):
                # the primary certainly has this context's write.
                return primary
            capture_pending(state, only=primary)
        required = state.required.get(primary)
    alias = _pick(rset, set(), required, state)
    if alias is not None:
        if state is not None and state.scoped:
            state.chosen[primary] = alias
        return alias
    if not _healthy(rset, set()):
        if router_config().no_healthy_replica == "error":
            raise NoHealthyReplica(
                f"no healthy replica among {', '.join(rset.replicas)} for primary {primary!r} "
                "and DATA_ARCH['ROUTER']['NO_HEALTHY_REPLICA'] is 'error'; see the "
                "'data_arch.routing' log for why each was skipped"
            )
        return primary
    # Replicas are up but behind this context's last write: read it from the primary, and
    # stay there for the rest of the request/task so no later read goes back in time.
    if state is not None and state.scoped:
        state.chosen[primary] = primary
    return primary


class ReplicaRouter:
    """``DATABASE_ROUTERS`` entry; list it after django-tenants' TenantSyncRouter."""

    def _set(self, model: Any) -> RouterSet:
        return _set_for_app(model._meta.app_label, router_sets())

    def db_for_read(self, model: Any, **hints: Any) -> str:
        rset = self._set(model)
        instance = hints.get("instance")
        db = getattr(getattr(instance, "_state", None), "db", None)
        if db is not None and db not in rset.replicas:
            return db  # loaded from or saved to the primary (or another database): stay there
        return read_alias(rset)

    def db_for_write(self, model: Any, **hints: Any) -> str:
        rset = self._set(model)
        _install(connections[rset.primary])
        return rset.primary

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        sets = router_sets()
        first = _set_for_alias(obj1._state.db or DEFAULT_DB_ALIAS, sets)
        second = _set_for_alias(obj2._state.db or DEFAULT_DB_ALIAS, sets)
        if first is not None and first is second:
            return True
        return None

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None,
                      **hints: Any) -> bool | None:
        sets = router_sets()
        if any(db in rset.replicas for rset in sets):
            return False  # never migrate a standby (it is read-only; it gets DDL by WAL)
        own = _set_for_app(app_label, sets)
        if own is not sets[0]:
            return None if db == own.primary else False
        if any(db == rset.primary for rset in sets[1:]):
            return False
        return None
