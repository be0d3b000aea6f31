"""In-process cache counters, with a hook for exporters (e.g. Prometheus).

Counters are keyed by ``(event, alias, name)`` where ``name`` is the cached function's name --
a bounded label; tenants are deliberately not a label. ``add_listener`` receives every event,
so an exporter can mirror them into its own metric types without this module importing one.

Each thread counts into its own dictionary (no lock on the hit path; exact under threads);
a thread's counts are folded into the process totals when it ends, and :func:`snapshot` adds
up the living ones.
"""

from __future__ import annotations

import threading
import weakref
from collections import defaultdict
from collections.abc import Callable
from typing import Any

__all__ = ["add_listener", "count", "record", "remove_listener", "reset", "snapshot", "total"]

EVENTS = (
    "hit",
    "l1_hit",
    "miss",
    "stale",
    "early_refresh",
    "load",
    "lock_wait",
    "lock_timeout",
    "store_skipped",
    "refresh_error",
    "bypass",
    "error",
    "invalidation",
    "invalidation_lag",
)

Key = tuple[str, str, str]

_lock = threading.RLock()  # re-entrant: a thread's counts may be folded in while it holds it
_retired: dict[Key, float] = defaultdict(float)  # counts of threads that have ended
_sums: dict[Key, float] = defaultdict(float)
_maxima: dict[Key, float] = defaultdict(float)
_listeners: list[Callable[[str, str, str, float], Any]] = []
_local = threading.local()


class _ThreadCounts:
    __slots__ = ("__weakref__", "counts")

    def __init__(self) -> None:
        self.counts: dict[Key, int] = {}

    def __del__(self) -> None:  # the thread ended: its local storage went with it
        lock, retired = _lock, _retired
        if lock is None or retired is None:  # interpreter shutdown
            return
        with lock:
            for key, value in self.counts.items():
                retired[key] += value


_living: weakref.WeakSet[_ThreadCounts] = weakref.WeakSet()


def _thread_counts() -> dict[Key, int]:
    holder = _ThreadCounts()
    with _lock:
        _living.add(holder)
    _local.holder = holder
    _local.counts = holder.counts
    return holder.counts


def count(event: str, alias: str, name: str) -> None:
    """Count ``event`` (the hit path's counter: no lock, no value)."""
    try:
        counts = _local.counts
    except AttributeError:
        counts = _thread_counts()
    key = (event, alias, name)
    counts[key] = counts.get(key, 0) + 1
    if _listeners:
        _notify(event, alias, name, 1.0)


def record(event: str, alias: str, name: str, value: float | None = None) -> None:
    """Count ``event``; ``value`` (seconds, for load and lag) is summed and its maximum kept."""
    if value is None:
        count(event, alias, name)
        return
    try:
        counts = _local.counts
    except AttributeError:
        counts = _thread_counts()
    key = (event, alias, name)
    counts[key] = counts.get(key, 0) + 1
    with _lock:
        _sums[key] += value
        if value > _maxima[key]:
            _maxima[key] = value
    if _listeners:
        _notify(event, alias, name, value)


def _notify(event: str, alias: str, name: str, value: float) -> None:
    for listener in list(_listeners):
        try:
            listener(event, alias, name, value)
        except Exception:
            pass


def _totals() -> dict[Key, float]:
    with _lock:
        totals = defaultdict(float, _retired)
        holders = list(_living)
    for holder in holders:
        for key, value in list(holder.counts.items()):
            totals[key] += value
    return totals


def snapshot() -> dict[str, dict[str, float]]:
    """``{"hit": {"default:shop.dashboard": 3, ...}, "load_seconds": {...}, ...}``."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for (event, alias, name), number in _totals().items():
        if number:
            out[event][f"{alias}:{name}"] = number
    with _lock:
        for (event, alias, name), total_seconds in _sums.items():
            out[f"{event}_seconds"][f"{alias}:{name}"] = total_seconds
            out[f"{event}_seconds_max"][f"{alias}:{name}"] = _maxima[(event, alias, name)]
    return dict(out)


def total(event: str) -> float:
    return sum(number for (name, _, _), number in _totals().items() if name == event)


def reset() -> None:
    with _lock:
        _retired.clear()
        _sums.clear()
        _maxima.clear()
        holders = list(_living)
    for holder in holders:
        holder.counts.clear()


def add_listener(listener: Callable[[str, str, str, float], Any]) -> None:
    """Call ``listener(event, alias, name, value)`` on every recorded event."""
    _listeners.append(listener)


def remove_listener(listener: Callable[[str, str, str, float], Any]) -> None:
    if listener in _listeners:
        _listeners.remove(listener)
