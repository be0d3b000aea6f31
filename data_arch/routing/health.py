"""Lazy, cached health probes of replicas: reachable, still a standby, not lagging too far.

A probe opens its own short-lived connection (``connect_timeout`` = PROBE_TIMEOUT) so a dead
replica costs at most that once per HEALTH_TTL per process, and never touches the connections
the ORM uses. Results are shared by all threads of the process.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

from data_arch.routing.lsn import parse_lsn

__all__ = ["ReplicaHealth", "health_of", "mark_unhealthy", "reset_health"]

logger = logging.getLogger("data_arch.routing")

# Time lag from the last replayed commit overstates lag when the primary is idle, so a standby
# that has replayed everything it received counts as 0 s behind.
PROBE_REPLICA_SQL = """
SELECT pg_is_in_recovery(),
       pg_last_wal_replay_lsn()::text,
       CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
            ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)
       END::float8
"""
PROBE_PRIMARY_SQL = "SELECT pg_current_wal_lsn()::text"


@dataclasses.dataclass(frozen=True)
class ReplicaHealth:
    alias: str
    healthy: bool
    reason: str = ""
    replay_lsn: int | None = None
    lag_seconds: float | None = None
    lag_bytes: int | None = None
    checked_at: float = 0.0


_lock = threading.Lock()
_cache: dict[str, ReplicaHealth] = {}


def reset_health() -> None:
    """Forget every probe result (tests; after changing DATABASES)."""
    with _lock:
        _cache.clear()


def mark_unhealthy(alias: str, reason: str) -> None:
    """Skip ``alias`` until its next probe (after HEALTH_TTL)."""
    with _lock:
        previous = _cache.get(alias)
        _cache[alias] = ReplicaHealth(alias, False, reason, checked_at=time.monotonic())
    if previous is None or previous.healthy:
        logger.warning("replica %r skipped: %s", alias, reason)


def _connect(alias: str, timeout: int):
    import psycopg
    from django.db import connections

    params = connections[alias].get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.pop("prepare_threshold", None)
    params.pop("server_side_binding", None)
    params["connect_timeout"] = timeout
    params["autocommit"] = True
    return psycopg.connect(**params)


def _probe(alias: str, primary: str) -> ReplicaHealth:
    from data_arch import conf

    config = conf.router_settings()
    now = time.monotonic()
    try:
        with _connect(alias, config.probe_timeout) as conn:
            in_recovery, replay, lag_seconds = conn.execute(PROBE_REPLICA_SQL).fetchone()
    except Exception as exc:  # any failure to reach or query it means: do not read there
        return ReplicaHealth(alias, False, f"unreachable: {exc}".strip(), checked_at=now)
    if not in_recovery:
        return ReplicaHealth(
            alias, False,
            "is not a standby (pg_is_in_recovery() is false): it was promoted or the alias "
            "points at a primary; reads there could miss nothing but writes would diverge",
            checked_at=now,
        )
    replay_lsn = parse_lsn(replay) if replay else None
    lag_bytes = None
    if config.max_lag_bytes is not None and replay_lsn is not None:
        try:
            with _connect(primary, config.probe_timeout) as conn:
                (current,) = conn.execute(PROBE_PRIMARY_SQL).fetchone()
            lag_bytes = max(0, parse_lsn(current) - replay_lsn)
        except Exception:
            lag_bytes = None  # the primary's health is not ours to judge here
    if lag_seconds > config.max_lag_seconds:
        return ReplicaHealth(alias, False, f"lagging {lag_seconds:.1f}s > MAX_LAG_SECONDS",
                             replay_lsn, lag_seconds, lag_bytes, now)
    if lag_bytes is not None and lag_bytes > config.max_lag_bytes:
        return ReplicaHealth(alias, False, f"lagging {lag_bytes} bytes > MAX_LAG_BYTES",
                             replay_lsn, lag_seconds, lag_bytes, now)
    return ReplicaHealth(alias, True, "", replay_lsn, lag_seconds, lag_bytes, now)


def health_of(alias: str, primary: str, ttl: float) -> ReplicaHealth:
    """The cached probe of ``alias``, re-probed when older than ``ttl`` seconds."""
    cached = _cache.get(alias)
    if cached is not None and time.monotonic() - cached.checked_at < ttl:
        return cached
    result = _probe(alias, primary)
    with _lock:
        previous = _cache.get(alias)
        _cache[alias] = result
    was_healthy = previous is None or previous.healthy
    if was_healthy and not result.healthy:
        log = logger.error if "not a standby" in result.reason else logger.warning
        log("replica %r skipped: %s", alias, result.reason)
    elif previous is not None and not previous.healthy and result.healthy:
        logger.info("replica %r is healthy again", alias)
    return result
