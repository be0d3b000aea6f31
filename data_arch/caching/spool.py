"""Invalidations Redis did not take: kept in memory, and on disk so they outlive the process.

While Redis is unreachable a process queues its bumps (generation counters, single values)
with the WAL positions they carry. Each one is also appended to a per-process spool file in
``CACHE.SPOOL_DIR`` (default: a per-user directory under the system's temp dir, one
sub-directory per Redis location and prefix), so a writer that exits or is killed while Redis is
away does not take its invalidations with it:

* the process replays its queue as soon as a Redis call succeeds again, and at exit keeps
  trying for ``CACHE.EXIT_FLUSH`` seconds;
* every process using the same spool directory picks up spool files at most a second old
  before its next Redis read, and replays them (a file is claimed by renaming it, so an
  owner that is still alive simply starts a new one).

The queue is bounded: past ``CACHE.PENDING_MAX`` entries it is collapsed into one bump of
each affected namespace -- more values are recomputed, none is left stale. Replaying twice
only costs extra misses; replaying never is what this module prevents.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from data_arch.caching.keys import namespace_of_generation, namespace_of_value
from data_arch.caching.replicas import merge

__all__ = ["Pending", "spool_directory"]

logger = logging.getLogger("data_arch.caching")

GENERATION, VALUE = "g", "v"


def spool_directory(configured: str | None, location: str, prefix: str) -> Path:
    """Where queued invalidations for this Redis and prefix are spooled."""
    base = Path(configured) if configured else Path(tempfile.gettempdir()) / (
        f"data_arch-cache-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    )
    digest = hashlib.sha256(f"{location}\0{prefix}".encode()).hexdigest()[:16]
    return base / digest


class Pending:
    """One process's queued invalidations: ``{key: (kind, positions)}``."""

    def __init__(self, directory: Path | None, limit: int) -> None:
        self.directory = directory
        self.limit = limit
        self._lock = threading.Lock()
        self._items: dict[str, tuple[str, dict[str, str]]] = {}
        self._file = (
            directory / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl" if directory else None
        )
        self.collapsed = 0

    def __bool__(self) -> bool:
        return bool(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, kind: str, keys: list[str], positions: dict[str, str]) -> None:
        lines = []
        with self._lock:
            for key in keys:
                _, seen = self._items.get(key, (kind, {}))
                merged = dict(seen)
                merge(merged, positions)
                self._items[key] = (kind, merged)
                lines.append({"k": key, "t": kind, "p": positions})
            if len(self._items) > self.limit:
                self._collapse()
                lines = None  # the file was rewritten with the collapsed queue
        if lines:
            self._append(lines)

    def _collapse(self) -> None:
        """Replace the queue by one tenant-wide bump per namespace (caller holds the lock)."""
        collapsed: dict[str, tuple[str, dict[str, str]]] = {}
        for key, (kind, positions) in self._items.items():
            whole = namespace_of_generation(key) if kind == GENERATION else namespace_of_value(key)
            _, seen = collapsed.get(whole, (GENERATION, {}))
            merged = dict(seen)
            merge(merged, positions)
            collapsed[whole] = (GENERATION, merged)
        self.collapsed += len(self._items) - len(collapsed)
        logger.warning(
            "%d cache invalidations queued while Redis is unreachable: collapsed into %d "
            "whole-namespace invalidation(s)", len(self._items), len(collapsed),
        )
        self._items = collapsed
        self._rewrite()

    def drain(self) -> dict[str, tuple[str, dict[str, str]]]:
        with self._lock:
            items, self._items = self._items, {}
        return items

    def restore(self, items: dict[str, tuple[str, dict[str, str]]]) -> None:
        """Put back what a replay could not deliver (the file still has it)."""
        with self._lock:
            for key, (kind, positions) in items.items():
                _, seen = self._items.get(key, (kind, {}))
                merged = dict(seen)
                merge(merged, positions)
                self._items[key] = (kind, merged)

    def delivered(self) -> None:
        """Everything queued reached Redis: the spool file is no longer needed."""
        with self._lock:
            if self._items or self._file is None:
                return
            with contextlib.suppress(OSError):
                self._file.unlink()

    # ----------------------------------------------------------------- files

    def _ensure_directory(self) -> bool:
        if self.directory is None:
            return False
        try:
            self.directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.directory.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            logger.warning("cannot create the cache spool directory %s: %s", self.directory, exc)
            return False
        return private(self.directory)

    def _append(self, lines: list[dict[str, Any]]) -> None:
        if self._file is None or not self._ensure_directory():
            return
        data = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
        try:
            descriptor = os.open(self._file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(descriptor, data.encode())
            finally:
                os.close(descriptor)
        except OSError as exc:
            logger.warning("cannot spool cache invalidations to %s: %s", self._file, exc)

    def _rewrite(self) -> None:
        if self._file is None or not self._ensure_directory():
            return
        temporary = self._file.with_suffix(".tmp")
        try:
            with open(temporary, "w") as handle:
                for key, (kind, positions) in self._items.items():
                    handle.write(json.dumps({"k": key, "t": kind, "p": positions}) + "\n")
            os.replace(temporary, self._file)
        except OSError as exc:
            logger.warning("cannot spool cache invalidations to %s: %s", self._file, exc)


def _ours(key: str, kind: str, key_prefix: str) -> bool:
    if not key.startswith(key_prefix):
        return False
    if kind == GENERATION:
        return "}:g:" in key
    return kind == VALUE and key.endswith("}:v")


_warned: set[Path] = set()


def private(directory: Path) -> bool:
    """Whether ``directory`` and its parent belong to this user and nobody else may write to
    them (a spool planted by someone else would make this process bump what they chose)."""
    if not hasattr(os, "getuid"):
        return True
    try:
        for path in (directory.parent, directory):
            info = path.stat()
            if info.st_uid != os.getuid() or info.st_mode & 0o022:
                if directory not in _warned:
                    _warned.add(directory)
                    logger.warning(
                        "ignoring the cache spool %s: %s must belong to this user and be "
                        "writable by it alone", directory, path,
                    )
                return False
    except OSError:
        return False
    return True


def claim_spooled(
    directory: Path | None, own: Path | None, key_prefix: str
) -> list[tuple[Path, dict]]:
    """Claim every spool file in ``directory`` (others' and a dead predecessor's, not the live
    ``own`` one) and return its merged entries; delete each claimed path after replaying.
    Entries that are not this prefix's counters or values are ignored."""
    if directory is None or not directory.is_dir() or not private(directory):
        return []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    claimed = []
    for entry in entries:
        path = Path(entry.path)
        if own is not None and path == own:
            continue
        if path.suffix == ".tmp":
            continue
        if ".claimed-" in path.name:
            # Claimed by a process that died before replaying: take it over after a while.
            try:
                if time.time() - entry.stat().st_mtime < 30:
                    continue
            except OSError:
                continue
        target = path.with_name(f"{path.name.split('.claimed-')[0]}.claimed-{os.getpid()}")
        try:
            os.rename(path, target)
            os.utime(target)
        except OSError:
            continue  # someone else claimed it first
        items: dict[str, tuple[str, dict[str, str]]] = {}
        try:
            for line in target.read_text().splitlines():
                try:
                    data = json.loads(line)
                    key, kind, positions = str(data["k"]), str(data["t"]), dict(data["p"])
                except (ValueError, KeyError, TypeError):
                    continue
                if not _ours(key, kind, key_prefix):
                    continue
                _, seen = items.get(key, (kind, {}))
                merged = dict(seen)
                merge(merged, {str(a): str(p) for a, p in positions.items()})
                items[key] = (kind, merged)
        except OSError:
            continue
        claimed.append((target, items))
    return claimed
