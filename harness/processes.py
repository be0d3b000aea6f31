"""Child processes of the demo and the test runs, stopped with everything they started.

Each child runs in a process group of its own, so stopping it reaches its children too (the
Celery worker's pool processes, a server a test run started) and a Ctrl-C in the terminal does
not hit them before the parent has decided what to do. :func:`signals_raise` turns SIGTERM and
SIGHUP into :class:`Terminated` (SIGINT already raises ``KeyboardInterrupt``), so the parent's
``finally`` blocks run on every one of the three signals instead of the process just dying.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["Children", "STOP_SIGNALS", "Terminated", "group_alive", "signals_deferred", "signals_raise"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived; handled like Ctrl-C, so cleanup code runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise(signum: int, frame: object) -> None:
    raise Terminated(signum)


def signals_raise() -> None:
    """Make SIGTERM and SIGHUP raise :class:`Terminated` and SIGINT ``KeyboardInterrupt``."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise)
    signal.signal(signal.SIGINT, signal.default_int_handler)


@contextlib.contextmanager
def signals_deferred() -> Iterator[list[int]]:
    """Hold off the stop signals while cleaning up (a second Ctrl-C must not cut it short).

    A Python-level handler, not ``SIG_IGN``: an ignored signal would stay ignored in every
    program started meanwhile (``pg_ctl stop`` and the like).
    """
    received: list[int] = []
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def group_alive(pgid: int) -> bool:
    """Whether any process that has not exited is still in process group ``pgid``.

    Exited members wait as zombies until their parent (or init, for orphans) reaps them,
    which some init processes do only every second or two; on Linux they do not count.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, _ppid, pgrp = text[text.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X"):
            return True
    return False


class Children:
    """Processes started in groups of their own; :meth:`stop` ends every group.

    ``stop`` sends SIGTERM to each whole group, waits up to ``timeout`` seconds for every
    member to exit, then sends SIGKILL to what is left.
    """

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[Any]] = []

    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        process = subprocess.Popen(cmd, start_new_session=True, **kwargs)
        self.processes.append(process)
        return process

    def run(self, cmd: Sequence[str], *, check: bool = True, **kwargs: Any) -> int:
        """Like ``subprocess.run(cmd, check=check)``, in a group that :meth:`stop` reaches."""
        process = self.popen(cmd, **kwargs)
        returncode = process.wait()
        if group_alive(process.pid):  # it left something behind in its group
            self._stop([process], timeout=5)
        self.processes.remove(process)
        if check and returncode != 0:
            raise subprocess.CalledProcessError(returncode, list(cmd))
        return returncode

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def stop(self, timeout: float = 15) -> None:
        with signals_deferred():
            self._stop(self.processes, timeout)
        self.processes = []

    @staticmethod
    def _stop(processes: list[subprocess.Popen[Any]], timeout: float) -> None:
        for process in processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        pending = list(processes)
        while pending and time.monotonic() < deadline:
            for process in list(pending):
                process.poll()  # reap the leader, or its zombie keeps the group alive
                if process.returncode is not None and not group_alive(process.pid):
                    pending.remove(process)
            time.sleep(0.05)
        for process in pending:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
