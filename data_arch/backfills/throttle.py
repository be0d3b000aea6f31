"""How fast a backfill may go: replica lag, lock waits, statement time and autovacuum.

Every replica of the table's router set is probed (``routing.health.probe``: bytes of WAL it
has not replayed, and for how long) whenever the lag could be near the cap: between probes the
lag is bounded by the primary's WAL position minus what the replicas had replayed at the last
one (replay only moves forward), and at least once a second. A batch starts only when, on every replica,
the lag plus the WAL the batch is expected to write stays under ``MAX_LAG_BYTES`` (and the lag
under ``MAX_LAG_SECONDS``); otherwise the batch is made smaller or the run waits for replay. The
expected WAL is learnt from the batches so far (bytes of WAL per row), so the cap holds even
when a replica's replay is stalled: the backfill stops adding WAL before the cap, not after.

The batch size also follows the batch's own time (towards ``TARGET_BATCH_MS``), halves on a lock
or statement timeout, and the run pauses while autovacuum works on the table.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["LagSample", "Throttle"]

logger = logging.getLogger("data_arch.backfills")

#: Longest single sleep while waiting for replay, in seconds.
POLL = 0.05


@dataclasses.dataclass(frozen=True)
class LagSample:
    lag_bytes: int
    lag_seconds: float
    #: The lowest WAL position the replicas had replayed (None without a measurement).
    replayed: int | None = None
    #: Replicas whose lag could not be measured (unreachable, probe timed out): they hold the
    #: backfill until they can be, since their lag might be past the cap.
    unknown: tuple[str, ...] = ()


def replicas_of(primary: str) -> tuple[str, ...]:
    """The replica aliases of ``primary``'s router set (none when the router is not set up)."""
    from data_arch import conf
    from data_arch.routing.sets import set_for_alias

    try:
        rset = set_for_alias(primary)
    except conf.SettingError:
        return ()
    return tuple(rset.replicas) if rset is not None and rset.primary == primary else ()


#: Bytes of WAL per row assumed before the first batch has measured it (pessimistic).
PRIOR_WAL_PER_ROW = 1024.0
#: A probe is trusted this long for the lag in seconds; the byte bound needs no expiry.
PROBE_EVERY = 1.0


class Throttle:
    def __init__(
        self,
        primary: str,
        settings: Any,
        *,
        replicas: tuple[str, ...] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        cancelled: Callable[[], bool] = lambda: False,
        position: Callable[[], int] | None = None,
    ) -> None:
        self.primary = primary
        self.settings = settings
        self.replicas = replicas_of(primary) if replicas is None else replicas
        self.sleep = sleep
        self.cancelled = cancelled
        self.position = position
        self.size = settings.batch_size
        #: Bytes of WAL per row, learnt from the batches (None until the first one).
        self.wal_per_row: float | None = None
        self.throttled_seconds = 0.0
        self.max_lag_bytes = 0
        self.lock_timeouts = 0
        self.probes = 0
        self._last: LagSample | None = None
        self._probed_at = 0.0

    # ------------------------------------------------------------------ replica lag

    def lag(self) -> LagSample:
        """Probe every replica now; the worst lag."""
        from data_arch.routing.health import probe

        worst_bytes, worst_seconds, replayed, unknown = 0, 0.0, None, []
        for alias in self.replicas:
            health = probe(alias, self.primary)
            if health.lag_bytes is None:
                logger.info("backfill waits: lag of replica %r unknown (%s)", alias, health.reason)
                unknown.append(alias)
                continue
            worst_bytes = max(worst_bytes, health.lag_bytes)
            worst_seconds = max(worst_seconds, health.lag_seconds or 0.0)
            if health.replay_lsn is not None:
                replayed = health.replay_lsn if replayed is None else min(replayed,
                                                                          health.replay_lsn)
        self.probes += 1
        self.max_lag_bytes = max(self.max_lag_bytes, worst_bytes)
        self._last = LagSample(worst_bytes, worst_seconds, replayed, tuple(unknown))
        self._probed_at = time.monotonic()
        return self._last

    def _bound(self) -> LagSample | None:
        """An upper bound of the lag now without probing: replay only moves forward, so the lag
        is at most the primary's position now minus what the replicas had replayed at the last
        probe. None when a probe is due."""
        last = self._last
        if (last is None or last.replayed is None or self.position is None
                or time.monotonic() - self._probed_at > PROBE_EVERY):
            return None
        bound = max(self.position() - last.replayed, 0)
        if bound + self.expected(self.size) > self.settings.max_lag_bytes * 0.5:
            return None  # close to the cap: measure instead of assuming the worst
        return LagSample(bound, last.lag_seconds, last.replayed, last.unknown)

    def expected(self, rows: int) -> float:
        return rows * (self.wal_per_row if self.wal_per_row is not None else PRIOR_WAL_PER_ROW)

    def rows_allowed(self, sample: LagSample) -> int:
        """How many rows the next batch may have for the replicas to stay under the cap."""
        if sample.unknown or sample.lag_seconds > self.settings.max_lag_seconds:
            return 0
        # Batches aim under 90% of the cap, and each takes at most half the room left: headroom
        # for other writers' WAL and for full-page images after a checkpoint, which make a
        # row's WAL jump.
        room = self.settings.max_lag_bytes * 0.9 - sample.lag_bytes
        if room <= 0:
            return 0
        return int(room * 0.5 / max(self.expected(1), 1.0))

    def next_size(self) -> int | None:
        """The next batch's size, after waiting as long as replicas need; None when cancelled."""
        floor = self.settings.min_batch_size
        while True:
            if not self.replicas:
                return self.size
            sample = self._bound() or self.lag()
            allowed = self.rows_allowed(sample)
            if allowed >= min(floor, self.size):
                return max(min(self.size, allowed), 1)
            if self.cancelled():
                return None
            started = time.monotonic()
            self.sleep(POLL)
            self.throttled_seconds += time.monotonic() - started

    # ------------------------------------------------------------------ feedback

    def batch_done(self, rows: int, seconds: float, wal_bytes: int) -> None:
        """Learn from a committed batch: WAL per row, and move the size towards the target time."""
        if rows > 0 and wal_bytes >= 0:
            # The most WAL a row has cost so far: the budget must hold for the worst batch.
            self.wal_per_row = max(self.wal_per_row or 0.0, wal_bytes / rows)
        target = self.settings.target_batch_ms / 1000
        if rows < self.size:
            return  # a batch cut short by the lag budget or the table's end says little
        if seconds > target * 1.5:
            self.size = max(self.settings.min_batch_size, int(self.size * 0.7))
        elif seconds < target * 0.7:
            self.size = min(self.settings.max_batch_size, int(self.size * 1.25) + 1)

    def timed_out(self) -> None:
        """A batch hit lock_timeout or statement_timeout: retry it with half the rows."""
        self.lock_timeouts += 1
        self.size = max(self.settings.min_batch_size, self.size // 2)

    def between_batches(self, vacuuming: bool) -> None:
        pause = self.settings.pause_seconds + (self.settings.vacuum_pause_seconds if vacuuming else 0)
        if pause > 0:
            self.sleep(pause)
            if vacuuming:
                self.throttled_seconds += pause
