"""The L1 stays coherent across processes; Redis going away never reaches the caller."""

import multiprocessing
import signal
import time

import pytest

from data_arch.caching import cached, engine, get_or_load, invalidate_tag, metrics, reset_engines

FORK = multiprocessing.get_context("fork")


def _read_source():
    from django_redis import get_redis_connection

    return get_redis_connection("default").get("test:source").decode()


def _l1_process(conn):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    reset_engines()
    assert engine().wait_for_l1()
    while True:
        command = conn.recv()
        if command == "get":
            conn.send(get_or_load("profile", _read_source, 60, tags=["profiles"]))
        elif command == "stats":
            conn.send(metrics.snapshot())
        else:
            conn.send("bye")
            return


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def test_l1_is_coherent_across_two_processes(cache_settings, redis_client):
    cache_settings(L1=True, L1_MAX_AGE=60)
    redis_client.set("test:source", "v1")
    parent_end, child_end = FORK.Pipe()
    child = FORK.Process(target=_l1_process, args=(child_end,))
    child.start()
    try:

        def ask(command):
            parent_end.send(command)
            return parent_end.recv()

        assert ask("get") == "v1"
        assert ask("get") == "v1"
        assert ask("stats")["l1_hit"] == {"default:profile": 1}
        # Remove the Redis copy behind the L1's back: the child still answers from its L1.
        redis_client.set("test:source", "v2")
        for key in redis_client.keys("*:profile:*}:v"):
            redis_client.delete(key)
        assert ask("get") == "v1"
        # An invalidation in this process reaches the other process's L1.
        invalidate_tag("profiles")
        wait_until(lambda: ask("get") == "v2")
        lag = ask("stats")["invalidation_lag_seconds_max"]["default:l1"]
        assert 0 <= lag < 5
        print(f"L1 invalidation lag across processes: {lag * 1000:.2f} ms")
    finally:
        parent_end.send("stop")
        child.join(10)


def test_l1_serves_locally_and_invalidates_locally(cache_settings):
    cache_settings(L1=True)
    assert engine().wait_for_l1()
    values = iter(range(100))
    for _ in range(3):
        assert get_or_load("local", lambda: next(values), 60, tags=["x"]) == 0
    assert metrics.total("l1_hit") == 2
    invalidate_tag("x")
    assert get_or_load("local", lambda: next(values), 60, tags=["x"]) == 1


def test_l1_is_bounded(cache_settings):
    cache_settings(L1=True, L1_SIZE=10)
    assert engine().wait_for_l1()
    for i in range(50):
        get_or_load(("bounded", i), lambda i=i: i, 60)
        get_or_load(("bounded", i), lambda i=i: i, 60)
    assert len(engine().l1()) == 10


def test_l1_is_bounded_by_bytes_too(cache_settings):
    cache_settings(L1=True, L1_SIZE=1000, L1_MAX_BYTES=100_000)
    assert engine().wait_for_l1()
    for i in range(150):
        get_or_load(("big", i), lambda i=i: "x" * 10_000 + str(i), 60)
    l1 = engine().l1()
    assert 0 < len(l1) <= 10 and l1.bytes <= 100_000
    # A value over a quarter of the budget is never kept: it would evict everything else.
    get_or_load("huge", lambda: "y" * 40_000, 60)
    get_or_load("huge", lambda: "y" * 40_000, 60)
    assert metrics.total("l1_hit") == 0 and l1.bytes <= 100_000


def test_an_outage_suspends_and_empties_the_l1(cache_settings, redis_server):
    cache_settings(L1=True, RETRY_AFTER=0.2)
    assert engine().wait_for_l1()
    get_or_load("l1-outage", lambda: "v1", 60)
    assert len(engine().l1()) == 1
    redis_server.stop()
    try:
        assert get_or_load("other", lambda: "loaded", 60) == "loaded"  # opens the breaker
        assert len(engine().l1()) == 0 and not engine().l1().trusted
        assert get_or_load("l1-outage", lambda: "from loader", 60) == "from loader"
    finally:
        redis_server.start()


@pytest.fixture
def redis_server(data_arch_services):
    if data_arch_services.redis is None:
        pytest.skip("Redis was not started by the harness (REDIS_URL given)")
    server = data_arch_services.redis
    yield server
    if not server.running:
        server.start()


@cached(60, tags=["reports"])
def report(n):
    return {"n": n, "source": "loader"}


def test_redis_stopped_mid_test_zero_errors_correct_values(redis_server, cache_settings, caplog):
    cache_settings(RETRY_AFTER=0.2, L1=True)
    assert engine().wait_for_l1()
    assert get_or_load("k", lambda: "v1", 60) == "v1"
    assert report(1) == {"n": 1, "source": "loader"}
    redis_server.stop()
    try:
        values = [get_or_load("k2", lambda i=i: f"loaded {i}", 60) for i in range(20)]
        assert values == [f"loaded {i}" for i in range(20)]  # the loader ran, nothing raised
        assert report(2) == {"n": 2, "source": "loader"}
        invalidate_tag("reports")  # queued, not raised
        # Invalidations cannot arrive now: the L1 notices the lost subscription and empties.
        wait_until(lambda: not engine().l1().connected)
        assert len(engine().l1()) == 0
        assert get_or_load("k", lambda: "v1 from loader", 60) == "v1 from loader"
        assert metrics.total("error") >= 1
        assert metrics.total("bypass") >= 1
        assert any("serving from the loader" in r.getMessage() for r in caplog.records)
    finally:
        redis_server.start()

    def cache_works_again():
        get_or_load("after", lambda: "fresh", 60)
        return get_or_load("after", lambda: "other", 60) == "fresh"

    wait_until(cache_works_again)
    from django_redis import get_redis_connection

    assert get_redis_connection("default").keys("*:g:t:reports"), "queued invalidation replayed"
    assert engine().wait_for_l1()


def test_fail_open_can_be_turned_off(redis_server, cache_settings):
    import redis

    cache_settings(FAIL_OPEN=False)
    redis_server.stop()
    try:
        with pytest.raises(redis.exceptions.ConnectionError):
            get_or_load("k", lambda: 1, 60)
    finally:
        redis_server.start()


@pytest.mark.slow
def test_a_hanging_redis_fails_open_after_the_socket_timeout(cache_settings, redis_client):
    """CLIENT PAUSE makes Redis accept commands and not answer: a slow Redis, for real."""
    cache_settings(RETRY_AFTER=0.1)
    get_or_load("slow", lambda: "cached", 60)
    redis_client.execute_command("CLIENT", "PAUSE", "1500", "ALL")
    assert get_or_load("slow", lambda: "from loader", 60) == "from loader"
    assert metrics.total("error") == 1
    wait_until(lambda: get_or_load("slow", lambda: "from loader", 60) == "cached")
