"""Fills that cannot undo a write: loads read data at least as new as the last invalidation.

A bump that follows a committed write records the primary's WAL position read after the
commit (:func:`capture`), next to the generation counter it moves. A load for a value under
that counter runs in a routing context that requires this position (:func:`reading_after`),
so the router sends its reads to a replica only once that replica has replayed the write --
known to the process, or awaited for ``ROUTER.MAX_LSN_WAIT`` -- and to the primary otherwise.
The value stored is therefore never older than the write that invalidated its predecessor.

Everything here goes through the router's public seams (``routing.wal.capture_pending``,
``routing.routing_context``, ``routing.sets.router_sets``); without replicas it does nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from data_arch import conf

__all__ = ["capture", "merge", "primaries", "reading_after"]

logger = logging.getLogger("data_arch.caching")


def merge(into: dict[str, str], positions: dict[str, str]) -> dict[str, str]:
    """Keep the highest position per primary in ``into`` (bumps may arrive out of order)."""
    for alias, lsn in positions.items():
        if lsn > into.get(alias, ""):
            into[alias] = lsn
    return into


def primaries() -> tuple[str, ...]:
    """The primary aliases that have replicas: the only ones whose positions matter."""
    from data_arch.routing.sets import router_sets

    try:
        return tuple(rset.primary for rset in router_sets() if rset.replicas)
    except conf.SettingError:
        return ()


def capture(using: str) -> dict[str, str]:
    """``{primary: position}`` of ``using`` now; called after a commit, it covers the commit.

    Positions are 16 upper-case hex digits, so Redis compares them correctly as strings.
    """
    if using not in primaries():
        return {}
    from data_arch.routing.state import RoutingState
    from data_arch.routing.wal import capture_pending

    state = RoutingState(pending={using})
    try:
        capture_pending(state, only=using)
    except Exception as exc:  # the bump matters more than its position
        logger.warning("could not read the WAL position of %r for a cache bump: %s", using, exc)
        return {}
    lsn = state.required.get(using)
    return {} if lsn is None else {using: f"{lsn:016X}"}


@contextlib.contextmanager
def reading_after(positions: dict[str, str]) -> Iterator[None]:
    """Run the block's reads on a replica only once it has replayed ``positions``.

    The block gets its own routing context, starting from the caller's positions and replica
    choice; what it writes or learns is merged back into the caller's context.
    """
    if not positions:
        yield
        return
    from data_arch.routing.state import current_state, routing_context

    required = {alias: int(lsn, 16) for alias, lsn in positions.items()}
    outer = current_state()
    if outer is not None:
        for alias, lsn in outer.required.items():
            if lsn > required.get(alias, -1):
                required[alias] = lsn
    with routing_context(required) as inner:
        if outer is not None:
            inner.pending |= outer.pending
            inner.chosen.update(outer.chosen)
            inner.confirmed.update(outer.confirmed)
        try:
            yield
        finally:
            if outer is not None:
                outer.pending |= inner.pending
                outer.wrote = outer.wrote or inner.wrote
                for alias, lsn in inner.required.items():
                    outer.require(alias, lsn)
