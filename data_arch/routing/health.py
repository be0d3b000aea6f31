"""Replica health: reachable, still a standby, receiving WAL, not lagging too far behind.

Probes are lazy and cached per process. What makes them safe under real faults:

* a verdict is stamped when its probe *ends*, and trusted for HEALTH_TTL (healthy) or for an
  exponential backoff (unhealthy: HEALTH_TTL, 2x, 4x ... up to HEALTH_BACKOFF_MAX);
* one probe per alias is in flight per process (single-flight), and a verdict that is due is
  re-checked in the background while every caller keeps the last one (stale-while-revalidate):
  no request pays for a probe except the very first one of an alias in a process;
* a probe is bounded by PROBE_TIMEOUT in total, connect included, even when the host hangs
  (a frozen process accepts TCP but never answers): past the deadline the verdict is
  "unhealthy, probe timed out" and the hung probe is left to finish on its own;
* lag is measured against the primary: bytes of WAL the replica has not replayed, and seconds
  since the primary first wrote WAL the replica still lacks (sampled by the probes, so an idle
  primary never makes an up-to-date replica look behind). A replica whose WAL receiver does
  not advance to the primary's position within a short grace period is cut off (stalled
  receiver, broken link, recycled segment) and unhealthy, even though "its" lag looks like 0.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from typing import Any

from data_arch.routing import metrics, sql
from data_arch.routing.lsn import parse_lsn
from data_arch.routing.wal import note_replayed

__all__ = [
    "ReplicaHealth", "health_of", "last_verdict", "mark_unhealthy", "probe", "refresh",
    "reset_health", "schedule",
]

logger = logging.getLogger("data_arch.routing")

#: How long a probe waits for a replica that is behind to receive the primary's position.
RECEIVE_GRACE = 0.25


@dataclasses.dataclass(frozen=True)
class ReplicaHealth:
    alias: str
    healthy: bool
    reason: str = ""
    replay_lsn: int | None = None
    lag_seconds: float | None = None
    lag_bytes: int | None = None
    #: ``time.monotonic()`` when the probe that produced this verdict ended.
    checked_at: float = 0.0


@dataclasses.dataclass
class _Host:
    verdict: ReplicaHealth | None = None
    #: monotonic time after which the verdict is re-checked.
    recheck_at: float = 0.0
    #: consecutive failed verdicts (drives the backoff).
    failures: int = 0
    #: the probe in flight, if any.
    probing: threading.Thread | None = None
    done: threading.Event = dataclasses.field(default_factory=threading.Event)


_lock = threading.Lock()
_hosts: dict[str, _Host] = {}
# primary alias -> recent (monotonic time, WAL position) samples, for lag in seconds.
_samples: dict[str, collections.deque[tuple[float, int]]] = {}


#: Why a replica alias that reached a primary is skipped (E303 and the error log look for it).
NOT_A_STANDBY = (
    "is not a standby (pg_is_in_recovery() is false): it was promoted or the alias points at a "
    "primary; reads there could miss nothing but writes would diverge"
)

def reset_health() -> None:
    """Forget every probe result (tests; after changing DATABASES)."""
    with _lock:
        _hosts.clear()
        _samples.clear()


def _config() -> Any:
    from data_arch import conf

    return conf.router_settings()


def _backoff(failures: int, config: Any) -> float:
    return min(config.health_ttl * (2 ** max(failures - 1, 0)), config.backoff_ceiling)


def _store(alias: str, result: ReplicaHealth) -> ReplicaHealth:
    config = _config()
    with _lock:
        host = _hosts.setdefault(alias, _Host())
        previous = host.verdict
        host.verdict = result
        if result.healthy:
            host.failures = 0
            host.recheck_at = result.checked_at + config.health_ttl
        elif previous is not None and not previous.healthy and result.checked_at < host.recheck_at:
            pass  # the same outage reported again (by another read): the backoff stands
        else:
            host.failures += 1
            host.recheck_at = result.checked_at + _backoff(host.failures, config)
    was_healthy = previous is None or previous.healthy
    if was_healthy and not result.healthy:
        log = logger.error if "not a standby" in result.reason else logger.warning
        log("replica %r skipped: %s", alias, result.reason)
    elif previous is not None and not previous.healthy and result.healthy:
        logger.info("replica %r is healthy again", alias)
    return result


def last_verdict(alias: str) -> ReplicaHealth | None:
    """The verdict on ``alias`` as it stands, without probing."""
    host = _hosts.get(alias)
    return host.verdict if host is not None else None


def schedule(alias: str) -> tuple[int, float | None, float | None]:
    """``(consecutive failures, seconds since the last probe ended, seconds until the next
    re-probe)`` of ``alias`` in this process (Nones before its first probe)."""
    host = _hosts.get(alias)
    if host is None or host.verdict is None:
        return 0, None, None
    now = time.monotonic()
    return host.failures, now - host.verdict.checked_at, max(0.0, host.recheck_at - now)


def mark_unhealthy(alias: str, reason: str) -> None:
    """Skip ``alias`` (a read or a connect to it failed) until its backoff has passed."""
    _store(alias, ReplicaHealth(alias, False, reason, checked_at=time.monotonic()))


def _params(alias: str, timeout: int) -> dict[str, Any]:
    """libpq parameters of ``alias``, read in the caller's thread (connections are per thread)."""
    from django.db import connections

    params = connections[alias].get_connection_params()
    for key in ("cursor_factory", "context", "prepare_threshold", "server_side_binding", "pool"):
        params.pop(key, None)
    params["connect_timeout"] = timeout
    params["autocommit"] = True
    return params


def _connect(params: dict[str, Any]) -> Any:
    import psycopg

    return psycopg.connect(**params)


def _lag_seconds(primary: str, replay: int, now: float, position: int) -> float:
    """Seconds since the primary first had WAL beyond ``replay`` (0 when there is none)."""
    samples = _samples.setdefault(primary, collections.deque(maxlen=64))
    samples.append((now, position))
    if replay >= position:
        return 0.0
    for at, lsn in samples:
        if lsn > replay:
            return max(0.0, now - at)
    return 0.0


def _measure(alias: str, primary: str, config: Any, params: tuple[dict, dict]) -> ReplicaHealth:
    """One probe; may block as long as a hung host makes it (:func:`probe` bounds the wait)."""
    try:
        replica = _connect(params[0])
    except Exception as exc:  # any failure to reach it means: do not read there
        return ReplicaHealth(alias, False, f"unreachable: {exc}".strip(), checked_at=time.monotonic())
    with replica:
        try:
            row = replica.execute(sql.PROBE_REPLICA).fetchone()
        except Exception as exc:  # noqa: BLE001
            return ReplicaHealth(alias, False, f"probe query failed: {exc}".strip(),
                                 checked_at=time.monotonic())
        in_recovery, replay, receive, status, _silent, _since_replay, paused = row
        if not in_recovery:
            return ReplicaHealth(
                alias, False,
                NOT_A_STANDBY,
                checked_at=time.monotonic(),
            )
        replay_lsn = parse_lsn(replay) if replay else None
        note_replayed(alias, replay_lsn)
        try:
            with _connect(params[1]) as conn:
                (current, _now) = conn.execute(sql.PRIMARY_WAL_LSN).fetchone()
            position: int | None = parse_lsn(current)
        except Exception:  # noqa: BLE001 -- the primary's health is not ours to judge here
            position = None
        if position is None or replay_lsn is None:
            return ReplicaHealth(alias, True, "", replay_lsn, None, None, time.monotonic())
        # After a restart the receive position can sit behind replay until WAL arrives.
        received = max(parse_lsn(receive) if receive else -1, replay_lsn)
        deadline = time.monotonic() + min(RECEIVE_GRACE, config.probe_timeout / 4)
        while received < position and time.monotonic() < deadline:
            time.sleep(0.005)
            _, replay, receive, status, *_ = replica.execute(sql.PROBE_REPLICA).fetchone()
            replay_lsn = parse_lsn(replay) if replay else replay_lsn
            received = max(parse_lsn(receive) if receive else -1, replay_lsn)
        note_replayed(alias, replay_lsn)
    now = time.monotonic()
    lag_bytes = max(0, position - replay_lsn)
    lag_seconds = _lag_seconds(primary, replay_lsn, now, position)
    if received < position:
        return ReplicaHealth(
            alias, False,
            f"not receiving WAL (receiver {status or 'not running'}; {position - received} bytes "
            "written on the primary did not arrive)",
            replay_lsn, lag_seconds, lag_bytes, now,
        )
    if lag_seconds > config.max_lag_seconds:
        why = " (replay is paused)" if paused else ""
        return ReplicaHealth(alias, False,
                             f"lagging {lag_seconds:.1f}s > MAX_LAG_SECONDS{why}",
                             replay_lsn, lag_seconds, lag_bytes, now)
    if config.max_lag_bytes is not None and lag_bytes > config.max_lag_bytes:
        return ReplicaHealth(alias, False, f"lagging {lag_bytes} bytes > MAX_LAG_BYTES",
                             replay_lsn, lag_seconds, lag_bytes, now)
    return ReplicaHealth(alias, True, "", replay_lsn, lag_seconds, lag_bytes, now)


def probe(alias: str, primary: str) -> ReplicaHealth:
    """Probe ``alias`` now, waiting at most PROBE_TIMEOUT (the verdict is not stored)."""
    config = _config()
    try:
        params = (_params(alias, config.probe_timeout), _params(primary, config.probe_timeout))
    except Exception as exc:  # noqa: BLE001 -- an alias Django cannot build a connection for
        return ReplicaHealth(alias, False, f"cannot connect: {exc}", checked_at=time.monotonic())
    return _bounded(alias, primary, params)


def refresh(alias: str, primary: str) -> ReplicaHealth:
    """Probe ``alias`` now and keep the verdict (a scheduled refresh; waits for the probe)."""
    verdict = _store(alias, probe(alias, primary))
    metrics.record("probe", alias, "healthy" if verdict.healthy else "unhealthy")
    return verdict


def _bounded(alias: str, primary: str, params: Any) -> ReplicaHealth:
    config = _config()
    if isinstance(params, ReplicaHealth):
        return params
    box: list[ReplicaHealth] = []
    thread = threading.Thread(target=lambda: box.append(_measure(alias, primary, config, params)),
                              name=f"data_arch-probe-{alias}", daemon=True)
    thread.start()
    thread.join(config.probe_timeout)
    if box:
        return box[0]
    return ReplicaHealth(alias, False, f"probe timed out after {config.probe_timeout}s "
                         "(the host accepts no connection or does not answer)",
                         checked_at=time.monotonic())


def _run_probe(alias: str, primary: str, host: _Host, params: Any) -> None:
    try:
        verdict = _store(alias, _bounded(alias, primary, params))
        metrics.record("probe", alias, "healthy" if verdict.healthy else "unhealthy")
    finally:
        with _lock:
            host.probing = None
            host.done.set()


def health_of(alias: str, primary: str, ttl: float | None = None) -> ReplicaHealth:
    """The cached verdict on ``alias``, re-probed when it is due (see the module docstring)."""
    now = time.monotonic()
    host = _hosts.get(alias)
    if host is not None and host.verdict is not None and now < host.recheck_at:
        return host.verdict
    with _lock:
        host = _hosts.setdefault(alias, _Host())
        verdict = host.verdict
        if verdict is not None and time.monotonic() < host.recheck_at:
            return verdict
        if host.probing is not None:
            # Single-flight: someone else is probing; keep the last verdict meanwhile.
            return verdict or ReplicaHealth(alias, False, "first probe still running",
                                            checked_at=now)
        host.done = threading.Event()
        background = verdict is not None
        config = _config()
        try:
            params: Any = (_params(alias, config.probe_timeout),
                           _params(primary, config.probe_timeout))
        except Exception as exc:  # noqa: BLE001 -- an alias Django cannot build a connection for
            params = ReplicaHealth(alias, False, f"cannot connect: {exc}", checked_at=now)
        thread = threading.Thread(target=_run_probe, args=(alias, primary, host, params),
                                  name=f"data_arch-health-{alias}", daemon=True)
        host.probing = thread
    thread.start()
    if background:
        return verdict  # type: ignore[return-value]
    host.done.wait()
    return _hosts[alias].verdict or ReplicaHealth(alias, False, "probe lost", checked_at=now)
