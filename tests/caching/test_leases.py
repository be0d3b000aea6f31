"""Leases under real races: a single-key invalidation beats a load already in flight, a
loader slower than LOCK_TIMEOUT keeps its lease (one run for every caller, across processes),
and waiters are woken by the value's publication instead of polling Redis."""

import multiprocessing
import signal
import threading
import time

import pytest

from data_arch.caching import cached, engine, get_or_load, metrics, reset_engines

FORK = multiprocessing.get_context("fork")


def _source():
    from django_redis import get_redis_connection

    return get_redis_connection("default").get("test:source").decode()


def test_invalidate_during_a_blocked_load_is_never_undone(redis_client):
    redis_client.set("test:source", "old")
    loading, release = threading.Event(), threading.Event()

    @cached(60)
    def profile():
        value = _source()
        loading.set()
        release.wait(10)  # the load read "old" and is still running
        return value

    first = {}
    loader = threading.Thread(target=lambda: first.setdefault("v", profile()))
    loader.start()
    assert loading.wait(10)
    redis_client.set("test:source", "new")
    profile.invalidate()  # autocommit: applied before it returns
    release.set()
    loader.join(10)
    assert first["v"] == "old"  # that caller asked before the invalidation
    assert metrics.total("store_skipped") == 1, "the in-flight load's result was refused"
    assert profile() == "new"
    assert profile() == "new"


def _slow_callers(threads, barrier, results):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    reset_engines()
    from django_redis import get_redis_connection

    def loader():
        get_redis_connection("default").incr("test:loads")
        time.sleep(1.5)  # 3 x LOCK_TIMEOUT
        return "slow value"

    out = []

    def call():
        barrier.wait()
        out.append(get_or_load("slow", loader, 60))

    workers = [threading.Thread(target=call) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put(out)


@pytest.mark.slow
def test_a_loader_three_times_slower_than_the_lease_runs_once_for_8_callers(
    cache_settings, loads
):
    cache_settings(LOCK_TIMEOUT=0.5)
    barrier, results = FORK.Barrier(8), FORK.Queue()
    children = [FORK.Process(target=_slow_callers, args=(4, barrier, results)) for _ in range(2)]
    for child in children:
        child.start()
    values = [value for _ in children for value in results.get(timeout=60)]
    for child in children:
        child.join(30)
    assert values == ["slow value"] * 8
    assert loads.count == 1


def test_the_heartbeat_keeps_the_lease_while_the_loader_runs(cache_settings, redis_client):
    cache_settings(LOCK_TIMEOUT=0.3)
    seen = []

    def loader():
        for _ in range(4):  # 0.8 s: the lease would have lapsed twice without a heartbeat
            time.sleep(0.2)
            seen.append([redis_client.pttl(k) for k in redis_client.keys("*:beat:*}:l")])
        return 1

    assert get_or_load("beat", loader, 60) == 1
    assert all(len(ttls) == 1 and ttls[0] > 0 for ttls in seen), seen
    assert redis_client.keys("*:beat:*}:l") == []  # released after the store


def _round_trips(client):
    """Commands clients sent (scripts count once, whatever they run inside)."""
    stats = client.info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "mget"))


def test_waiters_are_woken_by_the_store_without_polling(redis_client):
    engine().wait_for_subscriber()
    started, stored = threading.Event(), {}

    def loader():
        started.set()
        time.sleep(1.0)
        stored["at"] = time.perf_counter()
        return "ready"

    woke = []

    def wait():
        assert get_or_load("awaited", loader, 60) == "ready"
        woke.append(time.perf_counter())

    holder = threading.Thread(target=wait)
    holder.start()
    assert started.wait(10)
    before = _round_trips(redis_client)
    waiters = [threading.Thread(target=wait) for _ in range(7)]
    for waiter in waiters:
        waiter.start()
    for thread in (holder, *waiters):
        thread.join(10)
    commands = _round_trips(redis_client) - before
    assert len(woke) == 8
    lag_ms = sorted((t - stored["at"]) * 1000 for t in woke)
    print(f"7 waiters: {commands} Redis round trips; woken {lag_ms[0]:.1f}-{lag_ms[-1]:.1f} ms "
          "after the loader returned")
    # Each waiter: a read, the counters, a lease check, one after the wake (+ the holder's
    # store and an odd spurious wake-up): polling every 2-50 ms for a second would be ~200.
    assert commands <= 7 * 5 + 3, commands
    assert metrics.total("lock_wait") == 7


def test_a_waiter_loads_by_itself_after_lock_wait(cache_settings, caplog):
    cache_settings(LOCK_WAIT=0.3)
    started, release = threading.Event(), threading.Event()

    def stuck():
        started.set()
        release.wait(10)
        return "from the holder"

    holder = threading.Thread(target=lambda: get_or_load("stuck", stuck, 60))
    holder.start()
    assert started.wait(10)
    try:
        began = time.monotonic()
        assert get_or_load("stuck", lambda: "loaded myself", 60) == "loaded myself"
        assert 0.3 <= time.monotonic() - began < 5
        assert metrics.total("lock_timeout") == 1
        assert "gave up waiting" in caplog.text
    finally:
        release.set()
        holder.join(10)
