"""Loader leases that last as long as the load, and waiters woken when the value lands.

* :class:`Heartbeat` -- one daemon thread per process and cache alias extends every lease
  this process holds, every ``LOCK_TIMEOUT / 3``, while its loader runs. A loader slower than
  ``LOCK_TIMEOUT`` keeps its lease; a crashed process stops extending, so others wait at most
  ``LOCK_TIMEOUT`` for it.
* :class:`Waiters` -- a caller that finds the lease taken waits on an event. The store (or
  the release of a failed load, or an invalidation) publishes the value's key on
  ``<prefix>:ready`` when someone is waiting, and the process's subscriber thread sets the
  events of that key: waiters wake when the value is there, with no polling. If the
  subscription is not up, or the lease runs out first, they re-check then; after
  ``LOCK_WAIT`` seconds they load by themselves.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["Heartbeat", "Waiters"]

logger = logging.getLogger("data_arch.caching")


class Heartbeat(threading.Thread):
    def __init__(self, alias: str, extend: Callable[[str, str], bool], interval: float) -> None:
        super().__init__(name=f"data_arch-lease-heartbeat-{alias}", daemon=True)
        self.extend = extend
        self.interval = interval
        self._held: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.stopping = False
        self.beats = 0

    def hold(self, key: str, token: str) -> None:
        with self._lock:
            self._held[(key, token)] = self._held.get((key, token), 0) + 1

    def release(self, key: str, token: str) -> None:
        with self._lock:
            count = self._held.pop((key, token), 0) - 1
            if count > 0:
                self._held[(key, token)] = count

    def stop(self) -> None:
        self.stopping = True
        self._wake.set()

    def run(self) -> None:
        while not self.stopping:
            self._wake.wait(self.interval)
            if self.stopping:
                return
            with self._lock:
                held = list(self._held)
            for key, token in held:
                try:
                    if not self.extend(key, token):
                        # Invalidated or expired: the store will be refused; stop extending.
                        self.release(key, token)
                    else:
                        self.beats += 1
                except Exception as exc:  # Redis away: the breaker and the store deal with it
                    logger.debug("could not extend the loader lease %s: %s", key, exc)


class Waiters:
    """Events of callers waiting for a value, by value key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, set[threading.Event]] = {}

    def register(self, key: str) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._events.setdefault(key, set()).add(event)
        return event

    def unregister(self, key: str, event: threading.Event) -> None:
        with self._lock:
            events = self._events.get(key)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._events[key]

    def wake(self, key: str) -> None:
        with self._lock:
            events = list(self._events.get(key, ()))
        for event in events:
            event.set()

    def wake_all(self) -> None:
        with self._lock:
            events = [event for events in self._events.values() for event in events]
        for event in events:
            event.set()

    def __len__(self) -> int:
        return sum(len(events) for events in self._events.values())
