"""Router events for exporters (Prometheus: :mod:`data_arch.prometheus`), without importing one.

Labels are bounded: the database alias and a reason or outcome from a fixed list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["EVENTS", "REASONS", "add_listener", "record", "remove_listener"]

#: read: a router decision; probe: a health probe's outcome ("healthy"/"unhealthy");
#: retry: a read re-run elsewhere ("connection"/"conflict").
EVENTS = ("read", "probe", "retry")

#: Why a read went where it went.
REASONS = (
    "replica", "no_replicas", "pinned", "migrating", "primary_transaction", "replica_transaction",
    "sticky_primary", "own_write", "no_healthy_replica", "replicas_behind",
)

_listeners: list[Callable[[str, str, str], Any]] = []


def add_listener(listener: Callable[[str, str, str], Any]) -> None:
    if listener not in _listeners:
        _listeners.append(listener)


def remove_listener(listener: Callable[[str, str, str], Any]) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def record(event: str, alias: str, label: str) -> None:
    for listener in list(_listeners):
        try:
            listener(event, alias, label)
        except Exception:  # noqa: BLE001 -- an exporter's failure never fails a query
            pass
