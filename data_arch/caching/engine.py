"""The cache-aside engine: one per django-redis alias and process.

A **hit** is one ``MGET`` of the value's generation counters and its envelope (on Redis
Cluster one ``MGET`` per slot: the counters' and the value's), served only while the
generations recorded in the envelope are still current -- or no Redis call at all, from the
L1.

A **miss** reads the counters with the WAL positions of their last bumps (seeding missing
counters and making them outlive the value), then takes the value's lease. The holder loads
-- in a routing context that requires those positions, so a lagging replica cannot hand it
rows older than the write that invalidated the value (:mod:`.replicas`) -- while a heartbeat
extends its lease; the others wait for the value to be published (:mod:`.leases`). The store
script refuses a value whose key was invalidated (its version moved, or its lease was taken
away) or, on a single Redis, whose counters moved since the load began; readers never serve
an envelope whose generations are not current in any case.

Before expiry, XFetch lets one caller refresh early with a probability that grows as expiry
approaches, scaled by the measured load time. Past expiry, with ``stale_ttl``, the old value is
served while the one lease holder refreshes. Redis errors never reach the caller (fail open):
the loader runs, the error is counted, and the circuit breaker (:mod:`.breaker`) bypasses Redis
with one probe per ``RETRY_AFTER`` window. Invalidations that cannot be delivered are queued
and spooled to disk (:mod:`.spool`).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from django.conf import settings as django_settings

from data_arch import conf
from data_arch.caching import metrics, replicas, wire
from data_arch.caching.breaker import CircuitBreaker
from data_arch.caching.envelope import Envelope, decode, encode
from data_arch.caching.keys import (
    Keys,
    Namespace,
    positions_of_generation,
    safe_part,
    value_record_keys,
)
from data_arch.caching.l1 import L1Cache, Subscriber, invalidation_handler
from data_arch.caching.leases import Heartbeat, Waiters
from data_arch.caching.metrics import count
from data_arch.caching.replicas import merge
from data_arch.caching.scripts import Scripts
from data_arch.caching.spool import GENERATION, VALUE, Pending, claim_spooled, spool_directory

__all__ = ["CacheAliasError", "CacheAside", "Call", "Spec", "engine", "reset_engines"]

logger = logging.getLogger("data_arch.caching")

_getpid = os.getpid
_monotonic = time.monotonic
_time = time.time
#: Generation counters and version records outlive the values under them by this much.
_MARGIN_MS = 60_000
_SPOOL_EVERY = 1.0


def cache_settings() -> conf.CacheSettings:
    """The validated ``DATA_ARCH['CACHE']`` section (memoised by :mod:`data_arch.conf`)."""
    return conf.cache_settings()


class CacheAliasError(LookupError):
    """The cache alias is unknown or not a django-redis cache."""


def check_alias(alias: str) -> None:
    """Raise :class:`CacheAliasError` unless ``alias`` is a django-redis cache in CACHES."""
    caches = getattr(django_settings, "CACHES", {})
    if alias not in caches:
        raise CacheAliasError(
            f"cache alias {alias!r} is not in settings.CACHES "
            f"(aliases: {', '.join(sorted(caches))})"
        )
    backend = caches[alias].get("BACKEND", "")
    if not backend.startswith("django_redis."):
        raise CacheAliasError(
            f"cache alias {alias!r} uses {backend!r}; the cache helpers need django-redis "
            "(BACKEND 'django_redis.cache.RedisCache')"
        )


def _seed() -> str:
    return str(int(_time() * 1_000_000))


@dataclasses.dataclass(frozen=True, eq=False)
class Spec:
    """What a cached function or a get_or_load call asks for (compared by identity: specs are
    built once per call site and memoised)."""

    name: str
    timeout: float
    models: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    stale_ttl: float | None = None
    negative: tuple[type[BaseException], ...] = ()
    negative_timeout: float | None = None


class Call:
    """One resolved call: its spec and the digest of its arguments (memoised per key)."""

    __slots__ = ("digest", "spec")

    def __init__(self, spec: Spec, digest: str) -> None:
        self.spec = spec
        self.digest = digest


class _RedisDown(Exception):
    pass


_REDIS_ERRORS: tuple[type[BaseException], ...] = (OSError,)
try:  # redis is a django-redis dependency; kept soft so this module imports without it
    import redis.exceptions as _redis_exceptions

    _REDIS_ERRORS = (_redis_exceptions.RedisError, OSError)
except ImportError:  # pragma: no cover
    pass


def _is_cluster(client: Any) -> bool:
    try:
        from redis.cluster import RedisCluster
    except ImportError:  # pragma: no cover
        return False
    return isinstance(client, RedisCluster)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def _type_name(exc_type: type) -> str:
    return f"{exc_type.__module__}.{exc_type.__qualname__}"


class CacheAside:
    """Cache-aside on one Redis client; use :func:`engine` for a settings-configured one."""

    def __init__(self, alias: str, client: Any = None) -> None:
        self.alias = alias
        self.settings = cache_settings()
        self._given_client = client
        self._start()
        _living.add(self)

    def _start(self) -> None:
        """Per-process state (again after a fork: no thread survives one)."""
        settings = self.settings
        self._pid = _getpid()
        self._lock = threading.Lock()
        self._client = self._given_client
        self._cluster = _is_cluster(self._given_client) if self._given_client else False
        self._scripts: Scripts | None = None
        self.breaker = CircuitBreaker(
            self.alias, settings.retry_after, settings.latency_budget,
            on_open=self._redis_lost, on_close=self._redis_back,
        )
        self._directory = spool_directory(settings.spool_dir, self._location(), settings.prefix)
        self._pending = Pending(self._directory, settings.pending_max)
        # Held while queued invalidations are being delivered (by one thread at a time).
        self._flush_lock = threading.Lock()
        self._next_spool_check = 0.0
        self._key_prefix = "{" + safe_part(settings.prefix) + ":"
        self._l1 = (
            L1Cache(settings.l1_size, settings.l1_max_bytes, settings.l1_max_age)
            if settings.l1 else None
        )
        self._subscriber: Subscriber | None = None
        self._heartbeat: Heartbeat | None = None
        self._waiters = Waiters()
        self._keys: dict[tuple[str, Call], Keys] = {}
        self._primaries = replicas.primaries()
        self._beta = settings.xfetch_beta
        self.prefix = settings.prefix
        self.invalidate_channel = f"{settings.prefix}:invalidate"
        self.ready_channel = f"{settings.prefix}:ready"

    def _location(self) -> str:
        if self._given_client is not None:
            return repr(self._given_client)
        config = getattr(django_settings, "CACHES", {}).get(self.alias, {})
        return f"{config.get('LOCATION')}"

    # ----------------------------------------------------------------- plumbing

    def client(self) -> Any:
        client = self._client
        if client is None:
            from django_redis import get_redis_connection

            client = self._client = get_redis_connection(self.alias, write=True)
            self._cluster = _is_cluster(client)
        return client

    def scripts(self) -> Scripts:
        scripts = self._scripts
        if scripts is None:
            scripts = self._scripts = Scripts(self.client())
        return scripts

    def _fork_check(self) -> None:
        if self._pid != _getpid():
            self._start()

    def _call(self, name: str, doing: str, fn: Callable[..., Any], *args: Any,
              force: bool = False, **kwargs: Any) -> Any:
        """Run one Redis operation through the breaker; raise _RedisDown when it is bypassed
        or fails (counted; raised as is with FAIL_OPEN off)."""
        breaker = self.breaker
        ticket = breaker.force_probe() if force else breaker.begin()
        if not ticket:
            metrics.record("bypass", self.alias, name)
            raise _RedisDown
        try:
            result = fn(*args, **kwargs)
        except _REDIS_ERRORS as exc:
            metrics.record("error", self.alias, name)
            breaker.failed(ticket, f"{doing} for {name}: {exc}")
            if not self.settings.fail_open:
                raise
            raise _RedisDown from exc
        breaker.succeeded(ticket)
        if self._pending and not self._flushing:
            self._flush_pending()
        return result

    def _mget(self, keys: list[str]) -> list[Any]:
        client = self.client()
        if self._cluster:
            return client.mget_nonatomic(keys)
        return wire.mget(client, keys)

    def _redis_lost(self) -> None:
        if self._l1 is not None:
            self._l1.suspend()
        self._waiters.wake_all()

    def _redis_back(self) -> None:
        if self._l1 is not None:
            self._l1.resume()

    # ----------------------------------------------------------------- subscriber, L1

    def _ensure_subscriber(self) -> Subscriber:
        subscriber = self._subscriber
        if subscriber is not None and subscriber.is_alive():
            return subscriber
        with self._lock:
            if self._subscriber is None or not self._subscriber.is_alive():
                handlers: dict[str, Callable[[bytes], Any]] = {
                    self.ready_channel: lambda data: self._waiters.wake(_text(data)),
                }
                if self._l1 is not None:
                    handlers[self.invalidate_channel] = invalidation_handler(self._l1, self.alias)
                self._subscriber = Subscriber(
                    self.client, handlers, self.alias, self._subscribed, self._unsubscribed
                )
                self._subscriber.start()
            return self._subscriber

    def _subscribed(self) -> None:
        if self._l1 is not None:
            self._l1.set_connected(True)
        self._waiters.wake_all()  # messages may have been missed: everyone re-checks

    def _unsubscribed(self) -> None:
        if self._l1 is not None:
            self._l1.set_connected(False)
        self._waiters.wake_all()

    def l1(self) -> L1Cache | None:
        """The L1 when ``DATA_ARCH['CACHE']['L1']`` is on (its subscriber started)."""
        if self._l1 is not None:
            self._ensure_subscriber()
        return self._l1

    def wait_for_l1(self, timeout: float = 5.0) -> bool:
        """Block until the subscriber is connected (for startup code, tests and benchmarks)."""
        return self.wait_for_subscriber(timeout) and self._l1 is not None

    def wait_for_subscriber(self, timeout: float = 5.0) -> bool:
        return self._ensure_subscriber().subscribed.wait(timeout)

    def _heartbeat_thread(self) -> Heartbeat:
        heartbeat = self._heartbeat
        if heartbeat is not None and heartbeat.is_alive():
            return heartbeat
        with self._lock:
            if self._heartbeat is None or not self._heartbeat.is_alive():
                self._heartbeat = Heartbeat(
                    self.alias, self._extend, max(self.settings.lock_timeout / 3, 0.01)
                )
                self._heartbeat.start()
            return self._heartbeat

    def _extend(self, lease_key: str, token: str) -> bool:
        px = int(self.settings.lock_timeout * 1000)
        return bool(self.scripts().extend(keys=[lease_key], args=[token, px]))

    def close(self) -> None:
        for thread in (self._subscriber, self._heartbeat):
            if thread is not None:
                thread.stop()
                thread.join(2)
        self._subscriber = None
        self._heartbeat = None

    # ----------------------------------------------------------------- reads

    def keys_for(self, namespace: Namespace, call: Call) -> Keys:
        found = self._keys.get((namespace.slot, call))
        if found is None:
            spec = call.spec
            if len(self._keys) > 100_000:
                self._keys.clear()
            found = self._keys[(namespace.slot, call)] = namespace.keys(
                spec.name, call.digest, spec.models, spec.tags
            )
        return found

    def get_or_load(self, namespace: Namespace, call: Call, loader: Callable[[], Any]) -> Any:
        spec = call.spec
        keys = self._keys.get((namespace.slot, call)) or self.keys_for(namespace, call)
        l1 = self._l1
        early = False
        epoch = 0
        if l1 is not None:
            now = _time()
            envelope = l1.get(keys.value, keys.generations, now)
            if envelope is not None and (envelope.negative is None or self._usable(envelope, spec)):
                scale = envelope.delta * self._beta
                # XFetch applies to L1 hits too, or an L1 key would only ever expire.
                if scale <= 0 or envelope.expires - now > 40 * scale or not self._xfetch(
                    envelope, now
                ):
                    count("l1_hit", self.alias, spec.name)
                    if envelope.negative is None:
                        return envelope.value
                    return self._unwrap(envelope, spec)
                early = True
            if self._subscriber is None:
                self._ensure_subscriber()
            epoch = l1.epoch
        if _monotonic() >= self._next_spool_check:
            self._replay_spooled()
        queued = not self._settled()
        try:
            raw = self._call(spec.name, "reading", self._mget, [*keys.generations, keys.value])
            if queued:
                # Invalidations queued while Redis was unreachable went out after this read
                # (a Redis back from a snapshot still holds what they invalidate): read again
                # once they have all arrived, else do without Redis.
                if not self._settled():
                    raise _RedisDown
                raw = self._call(spec.name, "reading", self._mget, [*keys.generations, keys.value])
        except _RedisDown:
            return self._run_loader(spec, loader)[0]
        blob = raw[-1]
        if blob is not None:
            envelope = decode(blob, self.settings.serializer, self.alias)
            if (
                envelope is not None
                and self._current(envelope, raw)
                and (envelope.negative is None or self._usable(envelope, spec))
            ):
                now = _time()
                if now < envelope.expires:
                    if early or self._xfetch(envelope, now):
                        refreshed = self._try_refresh(keys, spec, loader, envelope)
                        if refreshed is not _MISSING:
                            count("early_refresh", self.alias, spec.name)
                            return refreshed
                    count("hit", self.alias, spec.name)
                    if l1 is not None:
                        l1.put(keys.value, envelope, keys.generations, epoch)
                    if envelope.negative is None:
                        return envelope.value
                    return self._unwrap(envelope, spec)
                stale_ttl = self.settings.stale_ttl if spec.stale_ttl is None else spec.stale_ttl
                if stale_ttl > 0 and envelope.negative is None:
                    refreshed = self._try_refresh(keys, spec, loader, envelope)
                    if refreshed is not _MISSING:
                        return refreshed
                    count("stale", self.alias, spec.name)
                    return envelope.value
        count("miss", self.alias, spec.name)
        return self._load_with_lease(keys, spec, loader)

    @staticmethod
    def _current(envelope: Envelope, raw: list[Any]) -> bool:
        """Whether the generations in the envelope are the counters just read with it."""
        generations = envelope.generations
        if len(generations) != len(raw) - 1:
            return False
        for recorded, counter in zip(generations, raw):
            if counter is None or recorded != int(counter):
                return False
        return True

    def _xfetch(self, envelope: Envelope, now: float, beta: float | None = None) -> bool:
        scale = envelope.delta * (self._beta if beta is None else beta)
        if scale <= 0 or envelope.expires - now > 40 * scale:  # P(-ln U > 40) = 4e-18
            return False
        return now - scale * math.log(1.0 - random.random()) >= envelope.expires

    @staticmethod
    def _usable(envelope: Envelope, spec: Spec) -> bool:
        """A remembered failure is only usable by a caller that asked for that exception."""
        if envelope.negative is None:
            return True
        return any(_type_name(t) == envelope.negative.get("type") for t in spec.negative)

    @staticmethod
    def _unwrap(envelope: Envelope, spec: Spec) -> Any:
        if envelope.negative is not None:
            for exc_type in spec.negative:
                if _type_name(exc_type) == envelope.negative.get("type"):
                    raise exc_type(*envelope.negative.get("args", []))
        return envelope.value

    # ----------------------------------------------------------------- loads

    def _value_px(self, spec: Spec, negative: bool = False) -> int:
        if negative:
            return max(int((spec.negative_timeout or 0) * 1000), 1)
        stale_ttl = self.settings.stale_ttl if spec.stale_ttl is None else spec.stale_ttl
        return max(int((spec.timeout + stale_ttl) * 1000), 1)

    def _record_ttl(self, px: int) -> int:
        """How long counters and versions must live so they outlive a value of ``px`` ms."""
        settings = self.settings
        return px + int((2 * settings.lock_timeout + settings.lock_wait) * 1000) + _MARGIN_MS

    def _default_record_ttl(self) -> int:
        settings = self.settings
        return self._record_ttl(int((settings.timeout + settings.stale_ttl) * 1000))

    def _generations(self, keys: Keys, spec: Spec) -> tuple[tuple[int, ...], dict[str, str]]:
        """The counters (seeded, made to outlive the value) and their bumps' WAL positions."""
        fields = [f"{suffix}@{alias}" for suffix in keys.suffixes for alias in self._primaries]
        out = self._call(
            spec.name, "reading generations", self.scripts().generations,
            keys=[*keys.generations, keys.positions],
            args=[_seed(), self._record_ttl(self._value_px(spec)), *fields],
        )
        n = len(keys.generations)
        positions: dict[str, str] = {}
        for field, lsn in zip(fields, out[n:]):
            if lsn:
                merge(positions, {field.rsplit("@", 1)[1]: _text(lsn)})
        return tuple(int(g) for g in out[:n]), positions

    def _lease(self, keys: Keys, token: str, name: str) -> tuple[bool, Any, int, str, dict]:
        """Take the lease if free: (acquired, envelope blob, lease ms left, version, positions)."""
        px = int(self.settings.lock_timeout * 1000)
        acquired, blob, left, record = self._call(
            name, "taking the loader lease", self.scripts().lease,
            keys=[keys.value, keys.lease, keys.version, keys.waiting], args=[token, px],
        )
        version, positions = "", {}
        for field, value in zip(record[::2], record[1::2]):
            field = _text(field)
            if field == "n":
                version = _text(value)
            elif field.startswith("@"):
                positions[field[1:]] = _text(value)
        return bool(int(acquired)), blob or None, int(left), version, positions

    def _valid(self, envelope: Envelope | None, generations: tuple[int, ...], spec: Spec) -> bool:
        return (
            envelope is not None
            and envelope.generations == generations
            and self._usable(envelope, spec)
            and _time() < envelope.expires
        )

    def _try_refresh(self, keys: Keys, spec: Spec, loader: Callable[[], Any],
                     seen: Envelope) -> Any:
        """Refresh now if no one else is; ``_MISSING`` when another caller holds the lease."""
        token = os.urandom(12).hex()
        try:
            generations, positions = self._generations(keys, spec)
            acquired, blob, _, version, key_positions = self._lease(keys, token, spec.name)
        except _RedisDown:
            return _MISSING
        if not acquired:
            return _MISSING
        current = decode(blob, self.settings.serializer, self.alias)
        if (
            current is not None
            and current.expires > seen.expires
            and current.generations == generations
            and self._usable(current, spec)
        ):
            # Someone refreshed between our read and our lease: use theirs.
            self._release(keys, token, spec.name)
            return self._unwrap(current, spec)
        try:
            return self._load_and_store(
                keys, token, spec, loader, generations, version, merge(positions, key_positions)
            )
        except Exception:
            logger.warning(
                "refreshing %s on %r failed; serving the cached value",
                spec.name, self.alias, exc_info=True,
            )
            metrics.record("refresh_error", self.alias, spec.name)
            return _MISSING

    def _load_with_lease(self, keys: Keys, spec: Spec, loader: Callable[[], Any]) -> Any:
        try:
            generations, positions = self._generations(keys, spec)
        except _RedisDown:
            return self._run_loader(spec, loader)[0]
        token = os.urandom(12).hex()
        deadline = _monotonic() + self.settings.lock_wait
        subscriber = self._subscriber
        # Listening before the first check (when the subscription is up) means a value
        # published right after it still wakes us: no wake-up is ever lost.
        event = (
            self._waiters.register(keys.value)
            if subscriber is not None and subscriber.subscribed.is_set() else None
        )
        waited = False
        pause = 0.002
        try:
            while True:
                if event is not None:
                    event.clear()
                try:
                    acquired, blob, left, version, key_positions = self._lease(
                        keys, token, spec.name
                    )
                except _RedisDown:
                    return self._run_loader(spec, loader)[0]
                envelope = decode(blob, self.settings.serializer, self.alias)
                if self._valid(envelope, generations, spec):
                    if acquired:
                        self._release(keys, token, spec.name)
                    return self._unwrap(envelope, spec)
                positions = merge(positions, key_positions)
                if acquired:
                    return self._load_and_store(
                        keys, token, spec, loader, generations, version, positions
                    )
                now = _monotonic()
                if now >= deadline:
                    logger.warning(
                        "gave up waiting %.1fs for the loader of %s on %r; loading here",
                        self.settings.lock_wait, spec.name, self.alias,
                    )
                    metrics.record("lock_timeout", self.alias, spec.name)
                    return self._load_and_store(
                        keys, "", spec, loader, generations, version, positions
                    )
                if not waited:
                    metrics.record("lock_wait", self.alias, spec.name)
                    waited = True
                if event is None:
                    subscriber = self._ensure_subscriber()
                    event = self._waiters.register(keys.value)
                    continue  # check once more now that we listen: no wake-up can be lost
                # Woken by the value's publication; else re-check when the lease would lapse.
                wait = min(deadline - now, max(left, 5) / 1000 + 0.002)
                if subscriber is not None and subscriber.subscribed.is_set():
                    event.wait(wait)
                else:
                    time.sleep(min(wait, pause))
                    pause = min(pause * 2, 0.05)
        finally:
            if event is not None:
                self._waiters.unregister(keys.value, event)

    def _run_loader(self, spec: Spec, loader: Callable[[], Any]) -> tuple[Any, float]:
        started = time.perf_counter()
        try:
            return loader(), time.perf_counter() - started
        finally:
            metrics.record("load", self.alias, spec.name, time.perf_counter() - started)

    def _load_and_store(
        self, keys: Keys, token: str, spec: Spec, loader: Callable[[], Any],
        generations: tuple[int, ...], version: str, positions: dict[str, str],
    ) -> Any:
        heartbeat = self._heartbeat_thread() if token else None
        if heartbeat is not None:
            heartbeat.hold(keys.lease, token)
        try:
            return self._load_and_store_held(
                keys, token, spec, loader, generations, version, positions
            )
        finally:
            if heartbeat is not None:
                heartbeat.release(keys.lease, token)

    def _load_and_store_held(
        self, keys: Keys, token: str, spec: Spec, loader: Callable[[], Any],
        generations: tuple[int, ...], version: str, positions: dict[str, str],
    ) -> Any:
        negative: dict[str, Any] | None = None
        try:
            with replicas.reading_after(positions):
                value, delta = self._run_loader(spec, loader)
        except spec.negative as exc:  # type: ignore[misc]
            if not spec.negative_timeout:
                self._release(keys, token, spec.name)
                raise
            value, delta, caught = None, 0.0, exc
            negative = {"type": _type_name(type(exc)), "args": [str(a) for a in exc.args]}
        except BaseException:
            self._release(keys, token, spec.name)
            raise
        timeout = spec.negative_timeout if negative is not None else spec.timeout
        envelope = Envelope(value, generations, _time() + timeout, delta, negative)
        try:
            blob = encode(envelope, self.settings.serializer, self.settings.compress_min_bytes)
        except BaseException:
            self._release(keys, token, spec.name)
            raise
        envelope = dataclasses.replace(envelope, size=len(blob))
        l1 = self._l1
        epoch = l1.epoch if l1 is not None else 0
        checked = () if self._cluster else keys.generations
        try:
            stored = self._call(
                spec.name, "storing", self.scripts().store,
                keys=[keys.value, keys.lease, keys.version, keys.waiting, *checked],
                args=[
                    blob, self._value_px(spec, negative is not None), token, version,
                    self.ready_channel, *(generations if checked else ()),
                ],
            )
            if not stored:
                metrics.record("store_skipped", self.alias, spec.name)
            elif l1 is not None and negative is None:
                l1.put(keys.value, envelope, keys.generations, epoch)
        except _RedisDown:
            pass
        if negative is not None:
            raise caught
        return value

    def _release(self, keys: Keys, token: str, name: str) -> None:
        if not token:
            return
        try:
            self._call(
                name, "releasing the loader lease", self.scripts().release,
                keys=[keys.lease, keys.waiting], args=[token, self.ready_channel, keys.value],
            )
        except _RedisDown:
            pass

    @contextlib.contextmanager
    def lease(self, name: str, seconds: float) -> Iterator[bool]:
        """Hold a named lease for the block; yields False when another holder has it.

        For jobs that must not overlap (a warming run). The lease expires after ``seconds``
        even if the holder dies. With Redis unavailable it yields True: nothing to guard then.
        """
        key = "{" + safe_part(self.settings.prefix) + ":jobs}:lease:" + safe_part(name)
        token = os.urandom(12).hex()
        try:
            acquired = bool(
                self._call(
                    name, "taking a job lease", self.client().set,
                    key, token, nx=True, px=int(seconds * 1000),
                )
            )
        except _RedisDown:
            yield True
            return
        try:
            yield acquired
        finally:
            if acquired:
                try:
                    self._call(
                        name, "releasing a job lease", self.scripts().release,
                        keys=[key, key + ":w"], args=[token, self.ready_channel, key],
                    )
                except _RedisDown:
                    pass

    # ----------------------------------------------------------------- invalidation

    def bump(self, generation_keys: Sequence[str], positions: dict[str, str] | None = None,
             *, force: bool = False) -> None:
        """Increment generation counters, recording the WAL positions of the writes behind
        them, and tell every L1. Queued (and spooled) when Redis cannot be reached."""
        self._fork_check()
        keys = list(dict.fromkeys(generation_keys))
        if not keys:
            return
        positions = positions or {}
        if self._l1 is not None:
            self._l1.invalidate(keys)
        groups: dict[str, list[str]] = {}
        for key in keys:
            groups.setdefault(key.split("}", 1)[0], []).append(key)
        remaining = list(groups.values())
        try:
            while remaining:
                self._bump_namespace(remaining[0], positions, force)
                remaining.pop(0)
        except _RedisDown:
            self._pending.add(GENERATION, [k for group in remaining for k in group], positions)

    def _bump_namespace(self, keys: list[str], positions: dict[str, str], force: bool) -> None:
        pairs: list[str] = []
        for key in keys:
            suffix = key.split("}:g:", 1)[1]
            for alias, lsn in positions.items():
                pairs += [f"{suffix}@{alias}", lsn]
        message = json.dumps({"k": keys, "t": _time()})
        self._call(
            "invalidate", "invalidating", self.scripts().bump,
            keys=[*keys, positions_of_generation(keys[0])],
            args=[_seed(), self._default_record_ttl(), self.invalidate_channel, message, *pairs],
            force=force,
        )
        for key in keys:
            kind = key.split("}:g:", 1)[1].split(":", 1)[0]
            metrics.record("invalidation", self.alias, _KINDS.get(kind, kind))

    def invalidate_values(self, value_keys: Sequence[str], positions: dict[str, str] | None = None,
                          *, force: bool = False) -> None:
        """Drop single cached values everywhere (L1s included), beating any load in flight:
        its result is refused. Queued (and spooled) when Redis cannot be reached."""
        self._fork_check()
        keys = list(dict.fromkeys(value_keys))
        positions = positions or {}
        if self._l1 is not None:
            self._l1.invalidate(keys)
        for index, key in enumerate(keys):
            try:
                self._invalidate_one(key, positions, force)
            except _RedisDown:
                self._pending.add(VALUE, keys[index:], positions)
                return

    def delete(self, keys: Sequence[str]) -> None:
        """Drop single cached values (an alias of :meth:`invalidate_values`)."""
        self.invalidate_values(keys)

    # ----------------------------------------------------------------- queued invalidations

    def _deliver(self, items: dict[str, tuple[str, dict[str, str]]], force: bool = False) -> bool:
        """Send queued items; True when all arrived. What did not is queued again."""
        by_positions: dict[tuple[str, tuple], list[str]] = {}
        for key, (kind, positions) in items.items():
            by_positions.setdefault((kind, tuple(sorted(positions.items()))), []).append(key)
        left = dict(items)
        try:
            for (kind, positions), keys in by_positions.items():
                if kind == GENERATION:
                    groups: dict[str, list[str]] = {}
                    for key in keys:
                        groups.setdefault(key.split("}", 1)[0], []).append(key)
                    for group in groups.values():
                        self._bump_namespace(group, dict(positions), force)
                        for key in group:
                            left.pop(key, None)
                else:
                    for key in keys:
                        self._invalidate_one(key, dict(positions), force)
                        left.pop(key, None)
        except _RedisDown:
            self._pending.restore(left)
            return False
        return True

    def _invalidate_one(self, key: str, positions: dict[str, str], force: bool) -> None:
        pairs: list[str] = []
        for alias, lsn in positions.items():
            pairs += [f"@{alias}", lsn]
        self._call(
            "invalidate", "invalidating a value", self.scripts().invalidate,
            keys=value_record_keys(key),
            args=[_seed(), max(self._default_record_ttl(), 3_600_000), self.ready_channel,
                  self.invalidate_channel, json.dumps({"k": [key], "t": _time()}), *pairs],
            force=force,
        )
        metrics.record("invalidation", self.alias, "key")

    @property
    def _flushing(self) -> bool:
        return self._flush_lock.locked()

    def _settled(self) -> bool:
        """Nothing queued for Redis and no delivery under way."""
        return not self._pending and not self._flush_lock.locked()

    def _flush_pending(self, force: bool = False) -> bool:
        if not self._flush_lock.acquire(blocking=False):
            return False
        try:
            items = self._pending.drain()
            if not items:
                return True
            logger.info(
                "replaying %d cache invalidation(s) queued while Redis was unreachable",
                len(items),
            )
            if self._deliver(items, force):
                self._pending.delivered()
                return True
            return False
        finally:
            self._flush_lock.release()

    def _replay_spooled(self) -> None:
        """Replay what other processes (a writer that exited, a killed worker) spooled."""
        self._next_spool_check = _monotonic() + _SPOOL_EVERY
        if not self.breaker.closed:
            return
        for path, items in claim_spooled(self._directory, self._pending._file, self._key_prefix):
            if items:
                logger.info(
                    "replaying %d cache invalidation(s) spooled by another process (%s)",
                    len(items), path.name,
                )
                if not self._deliver(items):
                    for key, (kind, positions) in items.items():
                        self._pending.add(kind, [key], positions)
            with contextlib.suppress(OSError):
                path.unlink()

    def pending(self) -> int:
        """How many invalidations wait for Redis in this process."""
        return len(self._pending)

    def _flush_at_exit(self) -> None:
        if self._pid != _getpid() or not self._pending:
            return
        deadline = _monotonic() + self.settings.exit_flush
        while True:
            if self._flush_pending(force=True):
                return
            if _monotonic() >= deadline:
                logger.warning(
                    "exiting with %d cache invalidation(s) Redis did not take; they stay in "
                    "%s for the next process to replay", len(self._pending), self._directory,
                )
                return
            time.sleep(0.1)


_KINDS = {"all": "tenant", "m": "model", "t": "tag"}

_engines: dict[str, CacheAside] = {}
_engines_lock = threading.Lock()
#: Every engine alive in this process: at exit each replays what it queued.
_living: weakref.WeakSet[CacheAside] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for item in list(_living):
        item._flush_at_exit()


def _after_fork() -> None:
    # A forked child (prefork Celery, gunicorn): no thread survived the fork, a lock held by
    # another parent thread at fork time would never be released, and the parent's queue is
    # the parent's to deliver.
    for item in list(_living):
        item._start()


os.register_at_fork(after_in_child=_after_fork)


def engine(alias: str | None = None) -> CacheAside:
    """The engine of ``alias`` (default: ``DATA_ARCH['CACHE']['ALIAS']``)."""
    found = _engines.get(alias) if alias is not None else _engines.get("")
    if found is not None:
        return found
    name = alias or cache_settings().alias
    with _engines_lock:
        found = _engines.get(name)
        if found is None:
            check_alias(name)
            found = _engines[name] = CacheAside(name)
        if alias is None:
            _engines[""] = found
    return found


def reset_engines() -> None:
    """Forget every engine (stops their threads); settings changes take effect after this."""
    with _engines_lock:
        for item in set(_engines.values()):
            item._flush_pending()
            item.close()
        _engines.clear()
