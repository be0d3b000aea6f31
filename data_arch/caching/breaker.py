"""A circuit breaker for one Redis: closed, open, half-open with exactly one probe.

* **Closed**: calls go to Redis. A failure -- an error, or an answer slower than the latency
  budget, or a call still unanswered after the budget while another one wants to start --
  opens the breaker. That is the one warning logged for the outage.
* **Open**: for ``retry_after`` seconds every call bypasses Redis (the loader runs).
* **Half-open**: the first call after the window is the probe; everyone else keeps bypassing
  until it returns. Success closes the breaker (logged once, with the outage's length); failure
  opens it for another window, silently. So a hanging Redis costs one ``SOCKET_TIMEOUT`` per
  window, not one per caller.

Calls already waiting on Redis when it froze cannot be helped; every call that starts after
the first one has been unanswered for longer than the budget bypasses.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["CircuitBreaker"]

logger = logging.getLogger("data_arch.caching")

CLOSED, OPEN, PROBING = "closed", "open", "probing"


class CircuitBreaker:
    def __init__(
        self,
        alias: str,
        retry_after: float,
        latency_budget: float,
        on_open: Callable[[], Any] | None = None,
        on_close: Callable[[], Any] | None = None,
    ) -> None:
        self.alias = alias
        self.retry_after = retry_after
        self.budget = latency_budget
        self.state = CLOSED
        self.on_open = on_open
        self.on_close = on_close
        self._lock = threading.Lock()
        self._open_until = 0.0
        self._opened_at = 0.0
        self._probe: int | None = None
        self._inflight: dict[int, float] = {}
        self._tickets = itertools.count(1)
        self.bypassed = 0

    def begin(self) -> int:
        """A ticket for one Redis call, or 0 when the call must bypass Redis now."""
        now = time.monotonic()
        if self.state is CLOSED:
            if self._inflight:
                oldest = min(self._inflight.values(), default=now)
                if now - oldest > self.budget:
                    self._trip(f"a call has had no answer for {now - oldest:.2f}s", now)
                    self.bypassed += 1
                    return 0
            ticket = next(self._tickets)
            self._inflight[ticket] = now
            return ticket
        with self._lock:
            if self.state is OPEN and now >= self._open_until:
                self.state = PROBING
                self._probe = ticket = next(self._tickets)
                self._inflight[ticket] = now
                return ticket
        self.bypassed += 1
        return 0

    def succeeded(self, ticket: int) -> None:
        started = self._inflight.pop(ticket, None)
        if started is None:
            return
        elapsed = time.monotonic() - started
        if elapsed > self.budget:
            self.failed(ticket, f"answered after {elapsed * 1000:.0f} ms (budget "
                                f"{self.budget * 1000:.0f} ms)", started=started)
            return
        if ticket == self._probe:
            with self._lock:
                self._probe = None
                self.state = CLOSED
            logger.warning(
                "Redis cache %r answers again after %.1fs; %d call(s) bypassed it meanwhile",
                self.alias, time.monotonic() - self._opened_at, self.bypassed,
            )
            self.bypassed = 0
            if self.on_close is not None:
                self.on_close()

    def failed(self, ticket: int, reason: Any, started: float | None = None) -> bool:
        """Record a failed call; True when it opened the breaker (the outage's first)."""
        self._inflight.pop(ticket, None)
        now = time.monotonic()
        with self._lock:
            if ticket and ticket == self._probe:
                self._probe = None
                self.state = OPEN
                self._open_until = now + self.retry_after
                logger.debug("Redis cache %r probe failed: %s", self.alias, reason)
                return False
        return self._trip(reason, now)

    def _trip(self, reason: Any, now: float) -> bool:
        with self._lock:
            if self.state is not CLOSED:
                return False
            self.state = OPEN
            self._opened_at = now
            self._open_until = now + self.retry_after
        logger.warning(
            "Redis cache %r failed: %s; serving from the loader and trying Redis again in "
            "%.1fs (one probe per window; logged once per outage)",
            self.alias, reason, self.retry_after,
        )
        if self.on_open is not None:
            self.on_open()
        return True

    def force_probe(self) -> int:
        """A ticket regardless of the state (flushing invalidations at exit)."""
        ticket = next(self._tickets)
        with self._lock:
            if self.state is not CLOSED:
                self.state = PROBING
                self._probe = ticket
        self._inflight[ticket] = time.monotonic()
        return ticket

    @property
    def closed(self) -> bool:
        return self.state is CLOSED
