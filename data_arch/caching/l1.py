"""The optional in-process L1 in front of Redis, and the subscriber that keeps it coherent.

Every process subscribes to ``<prefix>:invalidate`` (with the L1) and ``<prefix>:ready`` (for
callers waiting on another's load). A generation bump or a single-key invalidation publishes
the keys it changed; subscribers drop them from their L1. An L1 entry is only trusted while:

* the subscriber is connected and Redis answers its PINGs -- on any disconnect, or when a
  frozen Redis stops answering, the whole L1 is cleared, because messages sent meanwhile are
  lost, and it stays off until the subscription is back;
* this process's circuit breaker is closed (an outage suspends and clears the L1);
* every generation it was computed under is still the one this process last saw;
* it is younger than ``L1_MAX_AGE``, which bounds staleness should a message ever be lost.

The L1 holds at most ``L1_SIZE`` entries and ``L1_MAX_BYTES`` bytes (counted as the encoded
size; a single value larger than a quarter of that is never kept). A read that raced an
invalidation is not put into L1: ``epoch`` increases on every message and a fill only lands
if the epoch it started under is still current. The publish carries the sender's clock, so
each subscriber measures and records the invalidation lag.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from data_arch.caching import metrics

__all__ = ["L1Cache", "Subscriber"]

logger = logging.getLogger("data_arch.caching")

_monotonic = time.monotonic
_time = time.time


class L1Cache:
    def __init__(self, size: int, max_bytes: int, max_age: float) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self._generations: dict[str, int] = {}
        self.bytes = 0
        self.epoch = 0
        self.connected = False
        self.suspended = False
        self.trusted = False

    # ----------------------------------------------------------------- trust

    def set_connected(self, connected: bool) -> None:
        with self._lock:
            self.connected = connected
            self._clear()
            self.trusted = connected and not self.suspended

    def suspend(self) -> None:
        with self._lock:
            self.suspended = True
            self.trusted = False
            self._clear()

    def resume(self) -> None:
        with self._lock:
            self.suspended = False
            self._clear()
            self.trusted = self.connected

    # ----------------------------------------------------------------- entries

    def get(self, key: str, generation_keys: tuple[str, ...], now: float | None = None) -> Any:
        if not self.trusted:
            return None
        item = self._entries.get(key)
        if item is None:
            return None
        envelope, trusted_until = item
        if _monotonic() > trusted_until or (now or _time()) >= envelope.expires:
            with self._lock:
                if self._entries.get(key) is item:
                    del self._entries[key]
                    self.bytes -= envelope.size
            return None
        generations = self._generations
        for gen_key, generation in zip(generation_keys, envelope.generations):
            if generations.get(gen_key) != generation:
                return None
        try:
            self._entries.move_to_end(key)
        except KeyError:  # dropped by another thread meanwhile; the value is still good
            pass
        return envelope

    def put(self, key: str, envelope: Any, generation_keys: tuple[str, ...], epoch: int) -> None:
        if envelope.size * 4 > self.max_bytes:
            return
        with self._lock:
            if not self.trusted or epoch != self.epoch:
                return
            for gen_key, value in zip(generation_keys, envelope.generations, strict=True):
                self._generations[gen_key] = value
            previous = self._entries.pop(key, None)
            if previous is not None:
                self.bytes -= previous[0].size
            self._entries[key] = (envelope, _monotonic() + self.max_age)
            self.bytes += envelope.size
            while len(self._entries) > self.size or self.bytes > self.max_bytes:
                _, (dropped, _) = self._entries.popitem(last=False)
                self.bytes -= dropped.size
            if len(self._generations) > 4 * self.size:
                self._clear()

    def invalidate(self, keys: list[str]) -> None:
        with self._lock:
            self.epoch += 1
            for key in keys:
                self._generations.pop(key, None)
                dropped = self._entries.pop(key, None)
                if dropped is not None:
                    self.bytes -= dropped[0].size

    def clear(self) -> None:
        with self._lock:
            self._clear()

    def _clear(self) -> None:
        self.epoch += 1
        self._entries.clear()
        self._generations.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)


class Subscriber(threading.Thread):
    """One connection per process and cache alias listening on the engine's channels.

    ``handlers`` maps a channel to a function of the message data. PINGs every second detect a
    Redis that froze without closing the connection; ``on_up``/``on_down`` run when the
    subscription is confirmed and when it is lost.
    """

    PING_EVERY = 1.0

    def __init__(
        self,
        client_factory: Callable[[], Any],
        handlers: dict[str, Callable[[bytes], Any]],
        alias: str,
        on_up: Callable[[], Any],
        on_down: Callable[[], Any],
    ) -> None:
        super().__init__(name=f"data_arch-cache-subscriber-{alias}", daemon=True)
        self.client_factory = client_factory
        self.handlers = handlers
        self.alias = alias
        self.on_up = on_up
        self.on_down = on_down
        self.stopping = threading.Event()
        self.subscribed = threading.Event()

    def run(self) -> None:
        backoff = 0.05
        while not self.stopping.is_set():
            pubsub = None
            try:
                pubsub = self.client_factory().pubsub(ignore_subscribe_messages=False)
                pubsub.subscribe(*self.handlers)
                waiting_for = set(self.handlers)
                last_answer = _monotonic()
                next_ping = last_answer + self.PING_EVERY
                while not self.stopping.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    now = _monotonic()
                    if message is None:
                        if now >= next_ping and not waiting_for:
                            pubsub.ping()
                            next_ping = now + self.PING_EVERY
                        if now - last_answer > 3 * self.PING_EVERY:
                            raise TimeoutError("Redis stopped answering the subscriber's PING")
                        continue
                    last_answer = now
                    kind = message["type"]
                    if kind == "message":
                        channel = message["channel"]
                        if isinstance(channel, bytes):
                            channel = channel.decode()
                        handler = self.handlers.get(channel)
                        if handler is not None:
                            handler(message["data"])
                    elif kind == "subscribe":
                        channel = message["channel"]
                        if isinstance(channel, bytes):
                            channel = channel.decode()
                        waiting_for.discard(channel)
                        if not waiting_for:
                            self.subscribed.set()
                            self.on_up()
                            backoff = 0.05
            except Exception as exc:
                if self.subscribed.is_set():
                    # INFO: the circuit breaker is what warns, once per outage.
                    logger.info("cache subscriber for %r lost Redis: %s", self.alias, exc)
                    metrics.record("error", self.alias, "subscriber")
            finally:
                was_up = self.subscribed.is_set()
                self.subscribed.clear()
                if was_up:
                    self.on_down()
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass
            self.stopping.wait(backoff)
            backoff = min(backoff * 2, 2.0)

    def stop(self) -> None:
        self.stopping.set()


def invalidation_handler(l1: L1Cache, alias: str) -> Callable[[bytes], None]:
    """The handler of ``<prefix>:invalidate`` messages for ``l1``."""

    def handle(data: bytes) -> None:
        try:
            payload = json.loads(data)
            keys = [str(key) for key in payload["k"]]
            sent = float(payload["t"])
        except (ValueError, KeyError, TypeError):
            l1.clear()
            return
        l1.invalidate(keys)
        metrics.record("invalidation_lag", alias, "l1", max(0.0, time.time() - sent))

    return handle
