"""In-process cache counters, with a hook for exporters (e.g. Prometheus).

Counters are keyed by ``(event, alias, name)`` where ``name`` is the cached function's name --
a bounded label; tenants are deliberately not a label. ``add_listener`` receives every event,
so an exporter can mirror them into its own metric types without this module importing one.
"""

from __future__ import annotations

import threading
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

_lock = threading.Lock()
_counts: dict[tuple[str, str, str], float] = defaultdict(float)
_sums: dict[tuple[str, str, str], float] = defaultdict(float)
_maxima: dict[tuple[str, str, str], float] = defaultdict(float)
_listeners: list[Callable[[str, str, str, float], Any]] = []


def record(event: str, alias: str, name: str, value: float | None = None) -> None:
    """Count ``event``; ``value`` (seconds, for load and lag) is summed and its maximum kept."""
    key = (event, alias, name)
    with _lock:
        _counts[key] += 1
        if value is not None:
            _sums[key] += value
            if value > _maxima[key]:
                _maxima[key] = value
    for listener in list(_listeners):
        try:
            listener(event, alias, name, value if value is not None else 1.0)
        except Exception:
            pass


def count(event: str, alias: str, name: str) -> None:
    """``record`` without a value: the hit path's counter."""
    key = (event, alias, name)
    with _lock:
        _counts[key] += 1
    if _listeners:
        for listener in list(_listeners):
            try:
                listener(event, alias, name, 1.0)
            except Exception:
                pass


def snapshot() -> dict[str, dict[str, float]]:
    """``{"hit": {"default:shop.dashboard": 3, ...}, "load_seconds": {...}, ...}``."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    with _lock:
        for (event, alias, name), count in _counts.items():
            out[event][f"{alias}:{name}"] = count
        for (event, alias, name), total in _sums.items():
            out[f"{event}_seconds"][f"{alias}:{name}"] = total
            out[f"{event}_seconds_max"][f"{alias}:{name}"] = _maxima[(event, alias, name)]
    return dict(out)


def total(event: str) -> float:
    with _lock:
        return sum(count for (name, _, _), count in _counts.items() if name == event)


def reset() -> None:
    with _lock:
        _counts.clear()
        _sums.clear()
        _maxima.clear()


def add_listener(listener: Callable[[str, str, str, float], Any]) -> None:
    """Call ``listener(event, alias, name, value)`` on every recorded event."""
    _listeners.append(listener)


def remove_listener(listener: Callable[[str, str, str, float], Any]) -> None:
    if listener in _listeners:
        _listeners.remove(listener)
