"""The optional in-process L1: decoded values in front of Redis, coherent across processes.

Every process subscribes to one Redis channel. A generation bump (an invalidation) or a single
key deletion publishes the keys it changed; subscribers drop them from their L1. An L1 entry is
only trusted while:

* the subscriber is connected -- on any disconnect the whole L1 is cleared, because messages
  sent meanwhile are lost, and it stays off until the subscription is back;
* every generation it was computed under is still the one this process last saw;
* it is younger than ``L1_MAX_AGE``, which bounds staleness should a message ever be lost.

A read that raced an invalidation is not put into L1: ``epoch`` increases on every message and a
fill only lands if the epoch it started under is still current. The publish carries the sender's
clock, so each subscriber measures and records the invalidation lag.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from typing import Any

from data_arch.caching import metrics

logger = logging.getLogger("data_arch.caching")


class L1Cache:
    def __init__(self, size: int, max_age: float) -> None:
        self.size = size
        self.max_age = max_age
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self._generations: dict[str, int] = {}
        self.epoch = 0
        self.connected = False

    def get(self, key: str, generation_keys: list[str]) -> Any | None:
        if not self.connected:
            return None
        with self._lock:
            item = self._entries.get(key)
            if item is None:
                return None
            envelope, stored_at = item
            if time.monotonic() - stored_at > self.max_age or time.time() >= envelope.expires:
                del self._entries[key]
                return None
            current = [self._generations.get(k) for k in generation_keys]
            if current != list(envelope.generations):
                return None
            self._entries.move_to_end(key)
            return envelope

    def put(self, key: str, envelope: Any, generation_keys: list[str], epoch: int) -> None:
        with self._lock:
            if not self.connected or epoch != self.epoch:
                return
            for gen_key, value in zip(generation_keys, envelope.generations, strict=True):
                self._generations[gen_key] = value
            self._entries[key] = (envelope, time.monotonic())
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
            if len(self._generations) > 4 * self.size:
                self._generations.clear()
                self._entries.clear()

    def invalidate(self, keys: list[str]) -> None:
        with self._lock:
            self.epoch += 1
            for key in keys:
                self._generations.pop(key, None)
                self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self.epoch += 1
            self._entries.clear()
            self._generations.clear()

    def __len__(self) -> int:
        return len(self._entries)


class Subscriber(threading.Thread):
    """Listens on the invalidation channel and keeps one :class:`L1Cache` coherent."""

    def __init__(self, client_factory: Any, channel: str, l1: L1Cache, alias: str) -> None:
        super().__init__(name=f"data_arch-l1-{alias}", daemon=True)
        self.client_factory = client_factory
        self.channel = channel
        self.l1 = l1
        self.alias = alias
        self.stopping = threading.Event()
        self.subscribed = threading.Event()

    def run(self) -> None:
        backoff = 0.05
        while not self.stopping.is_set():
            pubsub = None
            try:
                pubsub = self.client_factory().pubsub(ignore_subscribe_messages=False)
                pubsub.subscribe(self.channel)
                while not self.stopping.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self.l1.clear()
                        self.l1.connected = True
                        self.subscribed.set()
                        backoff = 0.05
                    elif message["type"] == "message":
                        self._handle(message["data"])
            except Exception as exc:
                if self.l1.connected:
                    logger.warning(
                        "L1 invalidation subscriber for %r lost Redis: %s", self.alias, exc
                    )
                    metrics.record("error", self.alias, "l1_subscriber")
            finally:
                self.l1.connected = False
                self.subscribed.clear()
                self.l1.clear()
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass
            self.stopping.wait(backoff)
            backoff = min(backoff * 2, 2.0)

    def _handle(self, data: bytes) -> None:
        try:
            payload = json.loads(data)
            keys = [str(key) for key in payload["k"]]
            sent = float(payload["t"])
        except (ValueError, KeyError, TypeError):
            self.l1.clear()
            return
        self.l1.invalidate(keys)
        metrics.record("invalidation_lag", self.alias, "l1", max(0.0, time.time() - sent))

    def stop(self) -> None:
        self.stopping.set()
