"""Stampede protection across processes: one loader per key, leases that expire, XFetch, SWR."""

import multiprocessing
import os
import signal
import threading
import time

import pytest

from data_arch.caching import engine, get_or_load, metrics, reset_engines
from data_arch.caching.envelope import decode

FORK = multiprocessing.get_context("fork")


def _child_setup():
    # A forked child must never run the parent's clean-up handlers (they stop the services).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    reset_engines()


def _counted_loader(seconds, value):
    from django_redis import get_redis_connection

    def loader():
        get_redis_connection("default").incr("test:loads")
        time.sleep(seconds)
        return value

    return loader


def _cold_requests(threads, barrier, results):
    _child_setup()
    out = []
    lock = threading.Lock()

    def request():
        barrier.wait()
        try:
            value = get_or_load("cold-key", _counted_loader(0.3, {"answer": 42}), 60)
        except Exception as exc:
            value = f"error: {exc!r}"
        with lock:
            out.append(value)

    workers = [threading.Thread(target=request) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put((os.getpid(), out, metrics.total("lock_wait")))


def test_32_cold_requests_from_4_processes_run_the_loader_once(loads):
    processes, threads = 4, 8
    barrier = FORK.Barrier(processes * threads)
    results = FORK.Queue()
    children = [
        FORK.Process(target=_cold_requests, args=(threads, barrier, results))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    reports = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(30)
    values = [value for _, out, _ in reports for value in out]
    assert len(values) == 32
    assert values == [{"answer": 42}] * 32
    assert len({pid for pid, _, _ in reports}) == 4
    assert loads.count == 1
    # Everyone but the loader waited for it -- or, on a loaded machine, arrived after the value
    # was stored and read it: either way nobody ran the loader a second time.
    assert 1 <= sum(waits for _, _, waits in reports) <= 31


def _crash_while_loading():
    _child_setup()

    def loader():
        from django_redis import get_redis_connection

        get_redis_connection("default").incr("test:loads")
        os.kill(os.getpid(), signal.SIGKILL)  # dies holding the lease

    get_or_load("crashy", loader, 60)


def test_a_crashed_loader_holds_the_lease_only_until_it_expires(
    cache_settings, loads, redis_client
):
    cache_settings(LOCK_TIMEOUT=0.5)
    child = FORK.Process(target=_crash_while_loading)
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    assert loads.count == 1
    assert redis_client.keys("*:crashy:*}:l"), "the dead holder's lease is still there"
    assert get_or_load("crashy", _counted_loader(0, "recovered"), 60) == "recovered"
    assert loads.count == 2
    assert metrics.total("lock_wait") == 1


def test_lease_is_released_when_the_loader_raises(redis_client):
    with pytest.raises(ZeroDivisionError):
        get_or_load("fails", lambda: 1 / 0, 60)
    assert redis_client.keys("*}:l") == []
    assert get_or_load("fails", lambda: "ok", 60) == "ok"


@pytest.mark.slow
def test_xfetch_refreshes_a_hot_key_before_it_expires(cache_settings, loads):
    cache_settings(XFETCH_BETA=1.0)
    loader = _counted_loader(0.2, "hot")
    deadline = time.monotonic() + 2.5  # 2.5 TTLs of 1 s, read every 10 ms
    while time.monotonic() < deadline:
        assert get_or_load("hot", loader, 1) == "hot"
        time.sleep(0.01)
    assert metrics.total("miss") == 1, "a caller saw the key expire"
    assert metrics.total("early_refresh") >= 2
    assert loads.count == 1 + metrics.total("early_refresh")


def test_xfetch_uses_the_measured_load_time(redis_client):
    get_or_load("measured", lambda: time.sleep(0.05) or 1, 60)
    (key,) = redis_client.keys("*:measured:*}:v")
    envelope = decode(redis_client.get(key), "json")
    assert envelope.delta >= 0.05
    # 1 ms before expiry with a >= 50 ms load, each call refreshes early with P = exp(-0.001 /
    # delta) >= 0.98: counted over 200 calls, so the test does not fail 2% of the time.
    fired = sum(engine()._xfetch(envelope, envelope.expires - 0.001, beta=1.0) for _ in range(200))
    assert fired >= 170, fired
    assert not engine()._xfetch(envelope, envelope.expires - 60, beta=1.0)
    assert not engine()._xfetch(envelope, envelope.expires - 0.001, beta=0.0)


def test_stale_value_is_served_while_one_caller_refreshes(cache_settings):
    cache_settings(XFETCH_BETA=0.0)
    assert get_or_load("swr", lambda: "v1", 0.2, stale_ttl=30) == "v1"
    time.sleep(0.3)
    refreshing = threading.Event()
    release = threading.Event()

    def slow_refresh():
        refreshing.set()
        release.wait(10)
        return "v2"

    result = {}
    refresher = threading.Thread(
        target=lambda: result.setdefault("r", get_or_load("swr", slow_refresh, 0.2, stale_ttl=30))
    )
    refresher.start()
    assert refreshing.wait(10)
    # The lease holder is refreshing: everyone else gets the stale value at once.
    assert [get_or_load("swr", lambda: "never", 60, stale_ttl=30) for _ in range(5)] == ["v1"] * 5
    assert metrics.total("stale") == 5
    release.set()
    refresher.join(10)
    assert result["r"] == "v2"
    assert get_or_load("swr", lambda: "never", 0.2, stale_ttl=30) == "v2"


def test_without_stale_ttl_an_expired_value_is_a_miss():
    get_or_load("plain", lambda: "v1", 0.2)
    time.sleep(0.3)
    assert get_or_load("plain", lambda: "v2", 0.2) == "v2"
    assert metrics.total("stale") == 0


def test_a_failed_refresh_keeps_serving_the_stale_value(cache_settings, caplog):
    cache_settings(XFETCH_BETA=0.0)
    get_or_load("flaky", lambda: "v1", 0.2, stale_ttl=30)
    time.sleep(0.3)

    def broken():
        raise ConnectionError("upstream down")

    assert get_or_load("flaky", broken, 0.2, stale_ttl=30) == "v1"
    assert metrics.total("refresh_error") == 1
    assert "serving the cached value" in caplog.text


@pytest.mark.slow
def test_xfetch_also_refreshes_keys_served_from_l1(cache_settings, loads):
    cache_settings(XFETCH_BETA=1.0, L1=True)
    assert engine().wait_for_l1()
    loader = _counted_loader(0.2, "hot")
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert get_or_load("hot-l1", loader, 1) == "hot"
        time.sleep(0.005)
    assert metrics.total("l1_hit") > 0
    assert metrics.total("miss") == 1, "a key served from L1 expired instead of being refreshed"
    assert metrics.total("early_refresh") >= 1
