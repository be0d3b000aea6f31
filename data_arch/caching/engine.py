"""The cache-aside engine: one per django-redis alias.

A read is one ``MGET`` of the namespace's generation counters and the value's envelope (all in
one hash slot). The envelope records the generations it was computed under, its soft expiry and
how long the loader took; it is served only while those generations are current.

A miss takes a per-key lease (``SET NX PX``) before loading, so one caller across all processes
runs the loader while the others wait for its result; the lease expires on its own, so a crashed
holder blocks nobody for longer than ``LOCK_TIMEOUT``. The result is stored by a script that
first checks the generations read before the load: a value computed while its namespace was
invalidated is dropped, not stored.

Before expiry, XFetch lets one caller refresh early with a probability that grows as expiry
approaches, scaled by the measured load time. Past expiry, with ``stale_ttl``, the old value is
served while the one lease holder refreshes. Redis errors never reach the caller (fail open):
the loader runs, the error is counted and logged, and Redis is skipped for ``RETRY_AFTER``
seconds before it is tried again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from data_arch import conf
from data_arch.caching import metrics
from data_arch.caching.keys import Namespace, safe_part
from data_arch.caching.l1 import L1Cache, Subscriber
from data_arch.caching.serializers import compress, decompress, get_serializer

__all__ = ["CacheAside", "CacheAliasError", "Envelope", "engine", "reset_engines"]

logger = logging.getLogger("data_arch.caching")

MAGIC = b"DA1\n"

# Seeds a missing generation counter with the clock (in microseconds) so that if Redis ever
# evicts a counter, its new value is still larger than any value it had before.
# KEYS: generation keys..., value key, lock key. ARGV: seed, token, px.
# Returns the generations, whether the lease was taken and the current value, so a caller
# waiting for another's load needs one round trip per poll, and one that takes a lease just
# after the previous holder stored the value sees that value instead of loading again.
_ACQUIRE = """
local n = #KEYS - 2
local out = {}
for i = 1, n do
    redis.call('SET', KEYS[i], ARGV[1], 'NX')
    out[i] = redis.call('GET', KEYS[i])
end
if redis.call('SET', KEYS[n + 2], ARGV[2], 'NX', 'PX', ARGV[3]) then
    out[n + 1] = 1
else
    out[n + 1] = 0
end
out[n + 2] = redis.call('GET', KEYS[n + 1])
return out
"""

# KEYS: generation keys..., value key, lock key. ARGV: blob, px, token, generations...
_STORE = """
local n = #KEYS - 2
local stored = 1
for i = 1, n do
    if redis.call('GET', KEYS[i]) ~= ARGV[3 + i] then
        stored = 0
        break
    end
end
if stored == 1 then
    redis.call('SET', KEYS[n + 1], ARGV[1], 'PX', ARGV[2])
end
if ARGV[3] ~= '' and redis.call('GET', KEYS[n + 2]) == ARGV[3] then
    redis.call('DEL', KEYS[n + 2])
end
return stored
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

_BUMP = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('INCR', KEYS[1])
"""


_settings: dict[str, conf.CacheSettings] = {}


def cache_settings() -> conf.CacheSettings:
    """``conf.cache_settings()``, re-read only when a setting changes (tests, override_settings)."""
    found = _settings.get("cache")
    if found is None:
        found = _settings["cache"] = conf.cache_settings()
    return found


@receiver(setting_changed)
def _settings_changed(setting: str, **kwargs: Any) -> None:
    if setting in ("DATA_ARCH", "CACHES"):
        _settings.clear()


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
    return str(int(time.time() * 1_000_000))


@dataclasses.dataclass(frozen=True)
class Envelope:
    value: Any
    generations: tuple[int, ...]
    expires: float  # soft expiry, epoch seconds
    delta: float  # seconds the loader took
    negative: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class Spec:
    """What a cached function or a get_or_load call asks for."""

    name: str
    timeout: float
    models: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    stale_ttl: float | None = None
    negative: tuple[type[BaseException], ...] = ()
    negative_timeout: float | None = None


class _RedisDown(Exception):
    pass


_REDIS_ERRORS: tuple[type[BaseException], ...] = (OSError,)
try:  # redis is a django-redis dependency; kept soft so this module imports without it
    import redis.exceptions as _redis_exceptions

    _REDIS_ERRORS = (_redis_exceptions.RedisError, OSError)
except ImportError:  # pragma: no cover
    pass


class CacheAside:
    """Cache-aside on one Redis client; use :func:`engine` for a settings-configured one."""

    def __init__(self, alias: str, client: Any = None) -> None:
        self.alias = alias
        self._client = client
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._open_until = 0.0
        self._pending: set[str] = set()
        self._l1: L1Cache | None = None
        self._subscriber: Subscriber | None = None
        self._scripts: dict[str, Any] = {}

    # ----------------------------------------------------------------- plumbing

    @property
    def settings(self) -> conf.CacheSettings:
        return cache_settings()

    def client(self) -> Any:
        if self._client is not None:
            return self._client
        from django_redis import get_redis_connection

        return get_redis_connection(self.alias, write=True)

    def _script(self, name: str, source: str) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.client().register_script(source)
        return script

    def channel(self) -> str:
        return f"{self.settings.prefix}:invalidate"

    def _fork_check(self) -> None:
        if self._pid != os.getpid():
            # A forked child (prefork Celery, gunicorn): no subscriber thread survived the fork,
            # and a lock held by another parent thread at fork time would never be released.
            self._pid = os.getpid()
            self._lock = threading.Lock()
            self._pending = set()
            self._l1 = None
            self._subscriber = None
            self._scripts = {}
            self._open_until = 0.0

    def l1(self) -> L1Cache | None:
        """The L1 when ``DATA_ARCH['CACHE']['L1']`` is on (started on first use)."""
        settings = self.settings
        if not settings.l1:
            return None
        with self._lock:
            if self._l1 is None or self._subscriber is None or not self._subscriber.is_alive():
                self._l1 = L1Cache(settings.l1_size, settings.l1_max_age)
                self._subscriber = Subscriber(self.client, self.channel(), self._l1, self.alias)
                self._subscriber.start()
            return self._l1

    def wait_for_l1(self, timeout: float = 5.0) -> bool:
        """Block until the L1 subscriber is connected (for startup code and tests)."""
        if self.l1() is None or self._subscriber is None:
            return False
        return self._subscriber.subscribed.wait(timeout)

    def close(self) -> None:
        if self._subscriber is not None:
            self._subscriber.stop()
            self._subscriber.join(2)
        self._subscriber = None
        self._l1 = None

    def _available(self) -> bool:
        return time.monotonic() >= self._open_until

    def _failed(self, exc: BaseException, name: str, doing: str) -> None:
        metrics.record("error", self.alias, name)
        settings = self.settings
        first = self._available()
        self._open_until = time.monotonic() + settings.retry_after
        if first:
            logger.warning(
                "Redis cache %r failed while %s for %s: %s; serving from the loader and "
                "retrying Redis in %.1fs",
                self.alias,
                doing,
                name,
                exc,
                settings.retry_after,
            )
        if not settings.fail_open:
            raise exc

    def _call(self, name: str, doing: str, fn: Callable[[], Any]) -> Any:
        """Run a Redis operation; on failure count it, open the breaker and raise _RedisDown."""
        try:
            result = fn()
        except _REDIS_ERRORS as exc:
            self._failed(exc, name, doing)
            raise _RedisDown from exc
        if self._pending:
            self._flush_pending()
        return result

    # ----------------------------------------------------------------- envelopes

    def encode(self, envelope: Envelope, name: str) -> bytes:
        settings = self.settings
        serializer = get_serializer(settings.serializer)
        payload = serializer.dumps(envelope.value)
        payload, compressed = compress(payload, settings.compress_min_bytes)
        header = {
            "g": list(envelope.generations),
            "x": envelope.expires,
            "d": round(envelope.delta, 6),
            "s": serializer.name,
            "c": compressed,
        }
        if envelope.negative is not None:
            header["n"] = envelope.negative
        return MAGIC + json.dumps(header, separators=(",", ":")).encode() + b"\n" + payload

    def decode(self, blob: bytes | None) -> Envelope | None:
        if not blob or not blob.startswith(MAGIC):
            return None
        try:
            header_end = blob.index(b"\n", len(MAGIC))
            header = json.loads(blob[len(MAGIC) : header_end])
            payload = blob[header_end + 1 :]
            if header.get("s") != self.settings.serializer:
                # Never unpickle what a JSON-configured process finds, nor the reverse.
                return None
            if header.get("c"):
                payload = decompress(payload)
            value = get_serializer(header["s"]).loads(payload)
            return Envelope(
                value=value,
                generations=tuple(int(g) for g in header["g"]),
                expires=float(header["x"]),
                delta=float(header["d"]),
                negative=header.get("n"),
            )
        except Exception:
            logger.warning("ignoring an unreadable cache entry on %r", self.alias)
            return None

    # ----------------------------------------------------------------- reads

    def generation_keys(self, namespace: Namespace, spec: Spec) -> list[str]:
        return (
            [namespace.tenant_generation()]
            + [namespace.model_generation(label) for label in spec.models]
            + [namespace.tag_generation(tag) for tag in spec.tags]
        )

    def get_or_load(
        self, namespace: Namespace, digest: str, spec: Spec, loader: Callable[[], Any]
    ) -> Any:
        self._fork_check()
        settings = self.settings
        if not self._available():
            metrics.record("bypass", self.alias, spec.name)
            return self._run_loader(spec, loader)[0]
        gen_keys = self.generation_keys(namespace, spec)
        value_key = namespace.value_key(spec.name, digest)
        lock_key = namespace.lock_key(spec.name, digest)

        l1 = self.l1()
        early = False
        if l1 is not None:
            envelope = l1.get(value_key, gen_keys)
            if envelope is not None and self._usable(envelope, spec):
                # XFetch applies to L1 hits too, or a key served from L1 would only ever expire.
                early = self._xfetch(envelope, time.time(), settings.xfetch_beta)
                if not early:
                    metrics.record("l1_hit", self.alias, spec.name)
                    return self._unwrap(envelope, spec)
        epoch = l1.epoch if l1 is not None else 0

        try:
            raw = self._call(
                spec.name, "reading", lambda: self.client().mget([*gen_keys, value_key])
            )
        except _RedisDown:
            return self._run_loader(spec, loader)[0]
        generations = raw[:-1]
        envelope = self.decode(raw[-1])
        if (
            envelope is not None
            and self._usable(envelope, spec)
            and None not in generations
            and (list(envelope.generations) == [int(g) for g in generations])
        ):
            now = time.time()
            if now < envelope.expires:
                if early or self._xfetch(envelope, now, settings.xfetch_beta):
                    refreshed = self._try_refresh(
                        envelope, gen_keys, value_key, lock_key, spec, loader
                    )
                    if refreshed is not _MISSING:
                        metrics.record("early_refresh", self.alias, spec.name)
                        return refreshed
                metrics.record("hit", self.alias, spec.name)
                if l1 is not None:
                    l1.put(value_key, envelope, gen_keys, epoch)
                return self._unwrap(envelope, spec)
            stale_ttl = settings.stale_ttl if spec.stale_ttl is None else spec.stale_ttl
            if stale_ttl > 0 and envelope.negative is None:
                refreshed = self._try_refresh(envelope, gen_keys, value_key, lock_key, spec, loader)
                if refreshed is not _MISSING:
                    return refreshed
                metrics.record("stale", self.alias, spec.name)
                return self._unwrap(envelope, spec)
        metrics.record("miss", self.alias, spec.name)
        return self._load_with_lease(gen_keys, value_key, lock_key, spec, loader)

    @staticmethod
    def _xfetch(envelope: Envelope, now: float, beta: float) -> bool:
        if beta <= 0 or envelope.delta <= 0:
            return False
        return now - envelope.delta * beta * math.log(1.0 - random.random()) >= envelope.expires

    @staticmethod
    def _usable(envelope: Envelope, spec: Spec) -> bool:
        """A remembered failure is only usable by a caller that asked for that exception."""
        if envelope.negative is None:
            return True
        return any(_type_name(t) == envelope.negative.get("type") for t in spec.negative)

    def _unwrap(self, envelope: Envelope, spec: Spec) -> Any:
        if envelope.negative is not None:
            for exc_type in spec.negative:
                if _type_name(exc_type) == envelope.negative.get("type"):
                    raise exc_type(*envelope.negative.get("args", []))
        return envelope.value

    # ----------------------------------------------------------------- loads

    def _acquire(
        self, gen_keys: list[str], value_key: str, lock_key: str, token: str, name: str
    ) -> tuple[list[int], bool, bytes | None]:
        px = str(int(self.settings.lock_timeout * 1000))
        result = self._call(
            name,
            "taking the loader lease",
            lambda: self._script("acquire", _ACQUIRE)(
                keys=[*gen_keys, value_key, lock_key], args=[_seed(), token, px]
            ),
        )
        n = len(gen_keys)
        blob = result[n + 1] if len(result) > n + 1 else None
        return [int(g) for g in result[:n]], bool(int(result[n])), blob or None

    def _try_refresh(self, seen: Envelope, gen_keys, value_key, lock_key, spec, loader) -> Any:
        """Refresh now if no one else is; ``_MISSING`` when another caller holds the lease."""
        token = uuid.uuid4().hex
        try:
            generations, acquired, blob = self._acquire(
                gen_keys, value_key, lock_key, token, spec.name
            )
        except _RedisDown:
            return _MISSING
        if not acquired:
            return _MISSING
        current = self.decode(blob)
        if (
            current is not None
            and current.expires > seen.expires
            and (list(current.generations) == generations and self._usable(current, spec))
        ):
            # Someone refreshed between our read and our lease: use theirs.
            self._release(lock_key, token, spec.name)
            return self._unwrap(current, spec)
        try:
            return self._load_and_store(
                gen_keys, value_key, lock_key, token, generations, spec, loader
            )
        except Exception:
            logger.warning(
                "refreshing %s on %r failed; serving the cached value",
                spec.name,
                self.alias,
                exc_info=True,
            )
            metrics.record("refresh_error", self.alias, spec.name)
            return _MISSING

    def _load_with_lease(self, gen_keys, value_key, lock_key, spec, loader) -> Any:
        settings = self.settings
        token = uuid.uuid4().hex
        deadline = time.monotonic() + settings.lock_timeout * 2
        pause = 0.002
        waited = False
        while True:
            try:
                generations, acquired, blob = self._acquire(
                    gen_keys, value_key, lock_key, token, spec.name
                )
            except _RedisDown:
                return self._run_loader(spec, loader)[0]
            envelope = self.decode(blob)
            if (
                envelope is not None
                and self._usable(envelope, spec)
                and list(envelope.generations) == generations
                and time.time() < envelope.expires
            ):
                if acquired:
                    self._release(lock_key, token, spec.name)
                return self._unwrap(envelope, spec)
            if acquired:
                return self._load_and_store(
                    gen_keys, value_key, lock_key, token, generations, spec, loader
                )
            if time.monotonic() > deadline:
                # The holder is neither finishing nor letting go: load without the lease.
                logger.warning("gave up waiting for the loader of %s on %r", spec.name, self.alias)
                return self._load_and_store(
                    gen_keys, value_key, lock_key, "", generations, spec, loader
                )
            if not waited:
                metrics.record("lock_wait", self.alias, spec.name)
                waited = True
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _run_loader(self, spec: Spec, loader: Callable[[], Any]) -> tuple[Any, float]:
        started = time.perf_counter()
        try:
            return loader(), time.perf_counter() - started
        finally:
            metrics.record("load", self.alias, spec.name, time.perf_counter() - started)

    def _load_and_store(
        self, gen_keys, value_key, lock_key, token, generations, spec, loader
    ) -> Any:
        negative: dict[str, Any] | None = None
        try:
            value, delta = self._run_loader(spec, loader)
        except spec.negative as exc:  # type: ignore[misc]
            if not spec.negative_timeout:
                self._release(lock_key, token, spec.name)
                raise
            value, delta, caught = None, 0.0, exc
            negative = {"type": _type_name(type(exc)), "args": [str(a) for a in exc.args]}
        except BaseException:
            self._release(lock_key, token, spec.name)
            raise
        timeout = spec.negative_timeout if negative is not None else spec.timeout
        stale_ttl = self.settings.stale_ttl if spec.stale_ttl is None else spec.stale_ttl
        envelope = Envelope(value, tuple(generations), time.time() + timeout, delta, negative)
        try:
            blob = self.encode(envelope, spec.name)
        except BaseException:
            self._release(lock_key, token, spec.name)
            raise
        px = int((timeout + (stale_ttl if negative is None else 0)) * 1000)
        l1 = self._l1 if self.settings.l1 else None
        epoch = l1.epoch if l1 is not None else 0
        try:
            stored = self._call(
                spec.name,
                "storing",
                lambda: self._script("store", _STORE)(
                    keys=[*gen_keys, value_key, lock_key],
                    args=[blob, max(px, 1), token, *generations],
                ),
            )
            if not stored:
                metrics.record("store_skipped", self.alias, spec.name)
            elif l1 is not None and negative is None:
                l1.put(value_key, envelope, gen_keys, epoch)
        except _RedisDown:
            pass
        if negative is not None:
            raise caught
        return value

    def _release(self, lock_key: str, token: str, name: str) -> None:
        if not token:
            return
        try:
            self._call(
                name,
                "releasing the loader lease",
                lambda: self._script("release", _RELEASE)(keys=[lock_key], args=[token]),
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
        token = uuid.uuid4().hex
        try:
            acquired = bool(
                self._call(
                    name,
                    "taking a job lease",
                    lambda: self.client().set(key, token, nx=True, px=int(seconds * 1000)),
                )
            )
        except _RedisDown:
            yield True
            return
        try:
            yield acquired
        finally:
            if acquired:
                self._release(key, token, name)

    # ----------------------------------------------------------------- invalidation

    def bump(self, generation_keys: Sequence[str]) -> None:
        """Increment generation counters (one INCR each) and tell every L1 about it."""
        self._fork_check()
        keys = list(dict.fromkeys(generation_keys))
        if not keys:
            return
        l1 = self._l1
        if l1 is not None:
            l1.invalidate(keys)
        if not self._available():
            self._queue(keys)
            return
        try:
            for key in keys:
                self._call(
                    "invalidate",
                    "invalidating",
                    lambda key=key: self._script("bump", _BUMP)(keys=[key], args=[_seed()]),
                )
                metrics.record("invalidation", self.alias, key.rsplit(":gen:", 1)[-1].split(":")[0])
            self._publish(keys)
        except _RedisDown:
            self._queue(keys)

    def delete(self, keys: Sequence[str]) -> None:
        """Drop single cached values (not a namespace) everywhere, L1s included."""
        self._fork_check()
        keys = list(keys)
        if self._l1 is not None:
            self._l1.invalidate(keys)
        try:
            self._call("delete", "deleting", lambda: [self.client().delete(key) for key in keys])
            self._publish(keys)
        except _RedisDown:
            pass

    def _publish(self, keys: list[str]) -> None:
        message = json.dumps({"k": keys, "t": time.time()})
        self._call(
            "invalidate",
            "publishing an invalidation",
            lambda: self.client().publish(self.channel(), message),
        )

    def _queue(self, keys: list[str]) -> None:
        # Kept and replayed when Redis answers again: an invalidation must not be lost to a blip.
        with self._lock:
            if len(self._pending) < 100_000:
                self._pending.update(keys)

    def _flush_pending(self) -> None:
        with self._lock:
            keys, self._pending = list(self._pending), set()
        if keys:
            logger.info(
                "replaying %d cache invalidation(s) queued while Redis was unavailable", len(keys)
            )
            self.bump(keys)


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def _type_name(exc_type: type) -> str:
    return f"{exc_type.__module__}.{exc_type.__qualname__}"


_engines: dict[str, CacheAside] = {}
_engines_lock = threading.Lock()


def engine(alias: str | None = None) -> CacheAside:
    """The engine of ``alias`` (default: ``DATA_ARCH['CACHE']['ALIAS']``)."""
    alias = alias or cache_settings().alias
    found = _engines.get(alias)
    if found is None:
        check_alias(alias)
        with _engines_lock:
            found = _engines.setdefault(alias, CacheAside(alias))
    return found


def reset_engines() -> None:
    """Forget every engine (stops L1 subscribers); settings changes take effect after this."""
    with _engines_lock:
        for item in _engines.values():
            item.close()
        _engines.clear()
