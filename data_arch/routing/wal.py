"""WAL positions: what a context wrote (on the primary) and what each replica has replayed.

* :func:`capture_pending` reads the primary's insert position for writes noted but not yet
  read, lazily -- only when a read or a token needs it;
* :func:`token` is what travels to the next request or task (``{primary: 'X/Y'}``);
* :func:`note_replayed` / :func:`known_replayed`: the process-wide memory of each replica's
  replayed position, refreshed by health probes and by every position read, so a read with a
  token goes straight to a replica known to be caught up.
"""

from __future__ import annotations

import threading

from django.db import connections

from data_arch.routing import sql
from data_arch.routing.lsn import format_lsn, parse_lsn
from data_arch.routing.state import RoutingState

__all__ = ["capture_pending", "forget", "known_replayed", "note_replayed", "token"]

_lock = threading.Lock()
# replica alias -> highest WAL position it is known to have replayed (this process).
_replayed: dict[str, int] = {}


def note_replayed(alias: str, lsn: int | None) -> None:
    """Remember that ``alias`` has replayed ``lsn`` (positions only move forward)."""
    if lsn is None:
        return
    with _lock:
        if lsn > _replayed.get(alias, -1):
            _replayed[alias] = lsn


def known_replayed(alias: str) -> int:
    """The highest position ``alias`` is known to have replayed; -1 when unknown."""
    return _replayed.get(alias, -1)


def forget(alias: str | None = None) -> None:
    """Forget replayed positions (a replica that was rebuilt or replaced; tests)."""
    with _lock:
        if alias is None:
            _replayed.clear()
        else:
            _replayed.pop(alias, None)


def capture_pending(state: RoutingState, only: str | None = None) -> None:
    """Read the primary's WAL insert position for writes noted but not yet captured.

    Inside a transaction on the primary the position read covers every write committed before
    it (autocommit writes earlier in the context included), but not the transaction's own
    writes, whose commit comes later: the alias then stays pending, to be read again.
    """
    for alias in list(state.pending):
        if only is not None and alias != only:
            continue
        connection = connections[alias]
        in_transaction = connection.in_atomic_block
        connection.ensure_connection()
        try:
            with connection.connection.cursor() as cursor:
                cursor.execute(sql.WAL_INSERT_LSN)
                (lsn,) = cursor.fetchone()
        except Exception:  # noqa: BLE001 -- the driver's own error class
            if in_transaction:
                continue  # an aborted transaction: nothing to read until it ends
            raise
        state.require(alias, parse_lsn(lsn))
        if not in_transaction:
            state.pending.discard(alias)


def token(state: RoutingState) -> dict[str, str]:
    """The positions to carry to the next request or task (``{primary: 'X/Y'}``)."""
    capture_pending(state)
    return {alias: format_lsn(lsn) for alias, lsn in state.required.items()}
