"""Redis in its hard failure modes -- frozen (SIGSTOP: connections stay open, nothing answers)
and slow but answering: one probe per window pays the timeout, the outage is logged once,
and no invalidation is lost, not even one made by a process that exits before Redis is back."""

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from data_arch.caching import engine, get_or_load, invalidate_tag, metrics

ROOT = Path(__file__).resolve().parents[2]
SOCKET_TIMEOUT = 0.5  # the example project's CACHES OPTIONS

pytestmark = [pytest.mark.slow, pytest.mark.version_independent]  # Redis faults


@pytest.fixture
def frozen_redis(data_arch_services):
    """``freeze()``/``thaw()`` the harness's Redis with SIGSTOP/SIGCONT; always thawed."""
    server = data_arch_services.redis
    if server is None or server.process is None:
        pytest.skip("Redis was not started by the harness (REDIS_URL given)")
    pid = server.process.pid

    class Frozen:
        def freeze(self):
            os.kill(pid, signal.SIGSTOP)

        def thaw(self):
            os.kill(pid, signal.SIGCONT)

    frozen = Frozen()
    try:
        yield frozen
    finally:
        frozen.thaw()


def _writer(code: str) -> subprocess.Popen:
    """A separate process (``manage.py shell``) running ``code`` and exiting."""
    environ = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "manage.py", "shell", "-c", textwrap.dedent(code)], cwd=ROOT,
        env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


WRITER = """
    import logging, sys
    log = logging.getLogger("data_arch")
    log.setLevel(logging.INFO)
    log.addHandler(logging.StreamHandler(sys.stdout))
    from data_arch.caching import engine, invalidate_tag
    invalidate_tag("reports")  # Redis is frozen: queued, and spooled
    print("queued", engine().pending(), flush=True)
"""


def test_an_invalidation_outlives_a_writer_that_exits_while_redis_is_frozen(
    frozen_redis, cache_settings
):
    cache_settings(RETRY_AFTER=0.2)
    assert get_or_load("report", lambda: "old", 60, tags=["reports"]) == "old"
    frozen_redis.freeze()
    try:
        writer = _writer(WRITER)
        output, _ = writer.communicate(timeout=60)
        assert writer.returncode == 0, output
        assert "queued 1" in output, output
        assert "for the next process to replay" in output, output  # its exit flush gave up
    finally:
        frozen_redis.thaw()
    time.sleep(1.1)  # readers look for spooled invalidations at most once a second
    assert get_or_load("report", lambda: "new", 60, tags=["reports"]) == "new"
    assert not list(engine()._directory.glob("*")), "the spool was replayed and removed"


def test_a_writer_exiting_just_before_redis_is_back_delivers_its_invalidation_itself(
    frozen_redis, cache_settings
):
    assert get_or_load("report", lambda: "old", 60, tags=["reports"]) == "old"
    frozen_redis.freeze()
    try:
        writer = _writer(WRITER)
        deadline = time.monotonic() + 30
        while not (line := writer.stdout.readline()).startswith("queued"):
            assert time.monotonic() < deadline and line, "the writer did not queue"
        assert line.split() == ["queued", "1"]
    finally:
        frozen_redis.thaw()  # while the writer is in its exit flush
    output = writer.stdout.read()  # not communicate(): it would skip what readline() buffered
    assert writer.wait(60) == 0, output
    assert "replaying 1 cache invalidation" in output, output
    assert "for the next process to replay" not in output, output
    assert get_or_load("report", lambda: "new", 60, tags=["reports"]) == "new"


def test_a_frozen_redis_costs_one_socket_timeout_per_window_and_one_warning(
    frozen_redis, cache_settings, caplog
):
    retry_after = 0.5
    cache_settings(RETRY_AFTER=retry_after)
    get_or_load("hot", lambda: "cached", 60)
    calls: list[tuple[float, float]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            started = time.monotonic()
            assert get_or_load("hot", lambda: "loader", 60) in ("cached", "loader")
            with lock:
                calls.append((started, time.monotonic() - started))
            time.sleep(0.005)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    caplog.set_level(logging.DEBUG, logger="data_arch.caching")
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    frozen = time.monotonic()
    frozen_redis.freeze()
    time.sleep(3.0)
    frozen_redis.thaw()
    time.sleep(1.5)
    stop.set()
    for thread in threads:
        thread.join(10)
    slow = sorted(started for started, took in calls if took >= SOCKET_TIMEOUT * 0.8)
    in_flight = [s for s in slow if s < frozen + 0.05]  # already waiting when Redis froze
    later = [s for s in slow if s >= frozen + 0.05]
    windows = 3.0 / retry_after
    print(f"{len(calls)} calls; {len(in_flight)} caught in flight, then {len(later)} slow "
          f"probe(s) over {windows:.0f} windows")
    assert len(in_flight) <= 4
    assert len(later) <= windows + 1
    for first, second in zip(later, later[1:]):
        assert second - first >= retry_after * 0.9, "two callers paid the timeout in one window"
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    failed = [r for r in warnings if "failed" in r.getMessage()]
    back = [r for r in warnings if "answers again" in r.getMessage()]
    assert len(failed) == 1, [r.getMessage() for r in warnings]
    assert len(back) == 1
    assert get_or_load("hot", lambda: "loader", 60) == "cached"


def test_a_slow_but_answering_redis_is_bypassed_too(cache_settings, redis_client, caplog):
    cache_settings(RETRY_AFTER=0.5, LATENCY_BUDGET=0.1)
    get_or_load("slowly", lambda: "cached", 60)
    redis_client.execute_command("CLIENT", "PAUSE", "300", "ALL")  # answers after 300 ms
    assert get_or_load("slowly", lambda: "loader", 60) == "cached"  # slow, but an answer
    started = time.monotonic()
    assert get_or_load("slowly", lambda: "loader", 60) == "loader"  # bypassed
    assert time.monotonic() - started < 0.1
    assert metrics.total("bypass") == 1
    assert "budget" in caplog.text
    time.sleep(0.6)
    assert get_or_load("slowly", lambda: "loader", 60) == "cached"  # the probe found it fast


def test_an_overflowing_queue_becomes_a_whole_namespace_invalidation(
    frozen_redis, cache_settings, caplog
):
    cache_settings(PENDING_MAX=5, RETRY_AFTER=0.2, LATENCY_BUDGET=0.05)
    assert get_or_load("untagged", lambda: "old", 60) == "old"
    frozen_redis.freeze()
    try:
        for i in range(12):
            invalidate_tag(f"tag-{i}")
        assert engine().pending() <= 5
    finally:
        frozen_redis.thaw()
    assert "collapsed into 1 whole-namespace" in caplog.text
    time.sleep(0.3)

    def delivered():
        get_or_load("probe", lambda: 1, 60)
        return engine().pending() == 0

    deadline = time.monotonic() + 10
    while not delivered():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # Nothing named "untagged", but its whole namespace was invalidated: recomputed, not stale.
    assert get_or_load("untagged", lambda: "new", 60) == "new"


def test_a_frozen_redis_empties_an_idle_processs_l1(frozen_redis, cache_settings):
    """No call of this process has to fail: the subscriber's PINGs go unanswered."""
    cache_settings(L1=True)
    assert engine().wait_for_l1()
    get_or_load("idle", lambda: "v1", 60)
    l1 = engine().l1()
    assert len(l1) == 1 and l1.trusted
    frozen_redis.freeze()
    try:
        deadline = time.monotonic() + 10
        while l1.trusted:
            assert time.monotonic() < deadline, "the L1 kept trusting a frozen Redis"
            time.sleep(0.05)
        assert len(l1) == 0
    finally:
        frozen_redis.thaw()
    assert engine().wait_for_l1(10)
