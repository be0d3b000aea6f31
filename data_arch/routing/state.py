"""Per-context routing state: pinning to the primary and the WAL positions to read after.

Everything lives in contextvars and is restored by token, so nested blocks, threads, coroutines
and ``sync_to_async`` each see their own value. A *routing context* (one request, one Celery
task, one ``routing_context()`` block) holds a :class:`RoutingState`: the replica it reads
from (one per primary/replica set, so reads are monotonic) and, per primary, the WAL position
of its last write. Code outside any routing context gets one created on its first write.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

from data_arch.routing.lsn import parse_lsn

__all__ = ["RoutingState", "current_state", "migrating", "routing_context", "use_primary"]

F = TypeVar("F", bound=Callable[..., Any])

_pinned: ContextVar[bool] = ContextVar("data_arch_use_primary", default=False)
_state: ContextVar[RoutingState | None] = ContextVar("data_arch_routing_state", default=None)
_migrating: ContextVar[bool] = ContextVar("data_arch_migrating", default=False)


@dataclasses.dataclass
class RoutingState:
    #: primary alias -> WAL position (int) this context must see; from tokens or captured writes.
    required: dict[str, int] = dataclasses.field(default_factory=dict)
    #: primary aliases written since their position was last captured (read lazily).
    pending: set[str] = dataclasses.field(default_factory=set)
    #: primary alias -> the replica alias (or the primary) this context reads from.
    chosen: dict[str, str] = dataclasses.field(default_factory=dict)
    #: replica alias -> highest WAL position it is known to have replayed.
    confirmed: dict[str, int] = dataclasses.field(default_factory=dict)
    #: whether this context wrote anything itself (the middleware then refreshes the cookie).
    wrote: bool = False
    #: a request/task/``routing_context()`` (sticks to one server) rather than the implicit one.
    scoped: bool = False
    #: primaries whose replicas were behind this (implicit) context's write at the last read:
    #: later reads check the known replayed positions without waiting again.
    fell_back: set[str] = dataclasses.field(default_factory=set)

    def note_write(self, primary: str) -> None:
        self.pending.add(primary)
        self.wrote = True

    def require(self, primary: str, lsn: int) -> None:
        if lsn > self.required.get(primary, -1):
            self.required[primary] = lsn


def current_state(create: bool = False) -> RoutingState | None:
    state = _state.get()
    if state is None and create:
        state = RoutingState()
        _state.set(state)
    return state


def token_from(data: Any) -> dict[str, int]:
    """Validate a decoded token; raises ValueError on anything malformed."""
    if not isinstance(data, dict):
        raise ValueError(f"WAL token must be a dict, got {type(data).__name__}")
    return {str(alias): parse_lsn(lsn) for alias, lsn in data.items()}


@contextlib.contextmanager
def routing_context(token: dict[str, int] | None = None) -> Iterator[RoutingState]:
    """A fresh routing context (a request, a task), optionally starting from a WAL token."""
    state = RoutingState(scoped=True)
    for alias, lsn in (token or {}).items():
        state.require(alias, lsn)
    reset = _state.set(state)
    # A migration that failed inside this context must not pin reads beyond it.
    reset_migrating = _migrating.set(False)
    try:
        yield state
    finally:
        _migrating.reset(reset_migrating)
        _state.reset(reset)


class use_primary(contextlib.ContextDecorator):
    """Send every read in the block (or decorated function, sync or async) to the primary."""

    def __init__(self) -> None:
        self._tokens: list[Any] = []

    def __enter__(self) -> use_primary:
        self._tokens.append(_pinned.set(True))
        return self

    def __exit__(self, *exc: object) -> None:
        _pinned.reset(self._tokens.pop())

    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_inner(*args: Any, **kwargs: Any) -> Any:
                token = _pinned.set(True)
                try:
                    return await func(*args, **kwargs)
                finally:
                    _pinned.reset(token)

            return async_inner  # type: ignore[return-value]

        @functools.wraps(func)
        def inner(*args: Any, **kwargs: Any) -> Any:
            token = _pinned.set(True)
            try:
                return func(*args, **kwargs)
            finally:
                _pinned.reset(token)

        return inner  # type: ignore[return-value]


def pinned() -> bool:
    return _pinned.get()



def migrating() -> bool:
    """Whether a migration is running in this context (its reads go to the primary)."""
    return _migrating.get()


def set_migrating(value: bool) -> None:
    _migrating.set(value)
