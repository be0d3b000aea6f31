"""Leases on Redis for maintenance jobs: single-flight per job and tenant, and a counting
semaphore capping how many tenants one job works on at once across every worker.

Both expire unless their holder renews them (a heartbeat thread does, every third of the
lease), so a worker killed mid-run holds nothing for longer than one lease. Time is Redis'
own (``TIME`` inside the scripts), so clocks of different hosts never disagree.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

__all__ = ["lease", "redis_client", "semaphore_slot"]

#: KEYS[1] the semaphore's sorted set; ARGV: holder, lease ms, cap. Returns 1 if held.
_ACQUIRE = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
  return 1
end
return 0
"""

_PREFIX = "data_arch:maintenance"


def redis_client() -> Any:
    """The raw Redis client behind ``CACHE.ALIAS`` (django-redis)."""
    from django_redis import get_redis_connection

    from data_arch import conf

    return get_redis_connection(conf.cache_settings().alias)


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class _Heartbeat(threading.Thread):
    def __init__(self, renew: Any, every: float) -> None:
        super().__init__(name="data_arch-lease", daemon=True)
        self.renew, self.every, self.stopped = renew, every, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                if not self.renew():
                    return  # lost (expired while Redis was away): nothing left to renew
            except Exception:  # noqa: BLE001 -- Redis away: the lease may lapse, the run goes on
                continue


#: KEYS[1] the lease; ARGV: owner, ms. Taken when free or already the owner's (a task that
#: is delivered again after its worker died continues under its own lease).
_TAKE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

#: KEYS[1] the lease; ARGV: owner. Released only by its owner.
_GIVE_BACK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@contextlib.contextmanager
def lease(name: str, seconds: float, owner: str | None = None) -> Iterator[bool]:
    """Hold ``name`` for the block if nobody else does (yields False, without waiting, if
    someone does), renewed every ``seconds / 3`` while the block runs. ``owner`` (a Celery
    task id) lets the same task take its lease back after its worker died."""
    client = redis_client()
    key, owner, ms = f"{_PREFIX}:lease:{name}", owner or holder_name(), int(seconds * 1000)
    take = client.register_script(_TAKE)
    if not take(keys=[key], args=[owner, ms]):
        yield False
        return
    beat = _Heartbeat(lambda: bool(take(keys=[key], args=[owner, ms])), seconds / 3)
    beat.start()
    try:
        yield True
    finally:
        beat.stopped.set()
        with contextlib.suppress(Exception):  # Redis away: it lapses by itself
            client.register_script(_GIVE_BACK)(keys=[key], args=[owner])


@contextlib.contextmanager
def semaphore_slot(
    name: str, cap: int, seconds: float, owner: str | None = None
) -> Iterator[bool]:
    """One of ``cap`` slots of ``name`` for the block (False at once when all are taken)."""
    client = redis_client()
    key, holder, ms = f"{_PREFIX}:slots:{name}", owner or holder_name(), int(seconds * 1000)
    acquire = client.register_script(_ACQUIRE)
    if not acquire(keys=[key], args=[holder, ms, cap]):
        yield False
        return
    beat = _Heartbeat(lambda: bool(acquire(keys=[key], args=[holder, ms, cap])), seconds / 3)
    beat.start()
    try:
        yield True
    finally:
        beat.stopped.set()
        with contextlib.suppress(Exception):
            client.zrem(key, holder)
