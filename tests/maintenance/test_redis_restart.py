"""A Redis stopped and started again (a real stop, the same port) under a real Celery worker."""

from __future__ import annotations

import json
import time

import pytest
import redis

from data_arch.models import MaintenanceRun
from data_arch.tasks import maintain_partitions, warm_caches
from data_arch.testing.pytest_plugin import start_celery_worker, stop_celery_worker
from tests.maintenance.warmers import KEY

pytestmark = [
    pytest.mark.version_independent,  # Redis restarts
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True, databases=["default", "replica"]),
]

WAIT = 180
CACHE_QUEUE = "redis_restart_cache_tests"


@pytest.fixture(scope="module")
def cache_redis(tmp_path_factory):
    """A Redis of its own for the cache and the leases (no persistence, like most caches)."""
    from harness.services import RedisServer, find_redis_server, free_port

    server = RedisServer(find_redis_server(), tmp_path_factory.mktemp("cache-redis"), free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cache_redis_worker(request, django_db_setup, cache_redis):
    """A worker whose broker and result backend are the session's Redis and whose cache and
    leases are ``cache_redis``; it alone consumes its queue."""
    process = start_celery_worker(
        request.config, "--pool=solo", "--concurrency=1", "-Q", CACHE_QUEUE, name="cache-redis",
        settings_module="tests.maintenance.cache_redis_settings",
        environ={"DATA_ARCH_TEST_CACHE_REDIS_URL": cache_redis.url()},
    )
    yield process
    stop_celery_worker(process)


def _wait_for(condition, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_the_cache_redis_stopped_mid_run_is_retried_with_backoff_until_it_is_back(
    cache_redis_worker, cache_redis
):
    probe = redis.Redis.from_url(cache_redis.url())
    probe.delete(*(f"{KEY}:{suffix}" for suffix in ("started", "finished", "pid", "broken")))
    probe.set(f"{KEY}:enabled", 1)
    probe.set(f"{KEY}:sleep", 2)
    warmed = warm_caches.apply_async(kwargs={"warmers": ["probe_warmer"]}, queue=CACHE_QUEUE)
    _wait_for(lambda: probe.llen(f"{KEY}:started") >= 1, "the warmer never started")
    probe.close()
    # A real stop: the warmer wakes up to a Redis that refuses connections, and a task sent
    # meanwhile finds no Redis to take its lease in.
    cache_redis.stop()
    stopped = time.monotonic()
    try:
        maintained = maintain_partitions.apply_async(queue=CACHE_QUEUE)
        time.sleep(5)
    finally:
        cache_redis.start()  # the same port, empty: its leases are gone
    back = time.monotonic()
    summary = warmed.get(timeout=WAIT)
    print(f"cache Redis away {back - stopped:.1f} s; the warming task succeeded "
          f"{time.monotonic() - back:.1f} s after it was back")
    assert summary["ok"] and summary["warmers"][0]["error"] is None, summary
    runs = MaintenanceRun.objects.filter(job="warm_caches", task_id=warmed.id).order_by("pk")
    # The run that lost Redis is recorded failed with the Redis error; the retry, ok. Retries
    # made while Redis was away stopped at the lease, before any record.
    outcomes = list(runs.values_list("outcome", "error"))
    assert [outcome for outcome, _ in outcomes] == ["failed", "ok"], outcomes
    assert "ConnectionError" in outcomes[0][1], outcomes
    summary = maintained.get(timeout=WAIT)
    assert summary["ok"] and "skipped" not in summary, summary
    assert list(MaintenanceRun.objects.filter(job="partitions", task_id=maintained.id)
                .values_list("outcome", flat=True)) == ["ok"]



BROKER_QUEUE = "redis_restart_broker_tests"


@pytest.fixture(scope="module")
def broker_redis(tmp_path_factory):
    """A Redis of its own for one worker's broker, result backend, cache and leases (the
    example project's layout: one Redis), with its append-only file on."""
    from harness.services import RedisServer, find_redis_server, free_port

    server = RedisServer(find_redis_server(), tmp_path_factory.mktemp("broker-redis"),
                         free_port(), appendonly=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def broker_redis_worker(request, django_db_setup, broker_redis):
    """A prefork worker (the pool a deployment runs) on ``broker_redis``."""
    process = start_celery_worker(
        request.config, "--pool=prefork", "--concurrency=2", "-Q", BROKER_QUEUE,
        name="broker-redis", environ={"REDIS_URL": broker_redis.url()},
    )
    yield process
    stop_celery_worker(process)


def _send(server, name: str, **kwargs) -> str:
    """Send task ``name`` through ``server``'s broker; its id."""
    from celery import Celery

    from example_project.settings import redis_db

    sender = Celery("redis-restart-tests", broker=redis_db(server.url(), 1),
                    set_as_current=False)
    try:
        return sender.send_task(name, kwargs=kwargs, queue=BROKER_QUEUE).id
    finally:
        sender.close()


def _result(server, task_id: str) -> dict:
    """The stored result of ``task_id`` (read from the result backend's key, so no client of
    the test outlives the restart), waited for."""
    backend = redis.Redis.from_url(server.url(2))
    try:
        key = f"celery-task-meta-{task_id}"
        _wait_for(lambda: backend.get(key) is not None, f"no result for {task_id}")
        return json.loads(backend.get(key))
    finally:
        backend.close()


def test_the_broker_redis_restarted_mid_task_leaves_the_worker_running_and_the_task_done_once(
    broker_redis_worker, broker_redis
):
    probe = redis.Redis.from_url(broker_redis.url())
    probe.set(f"{KEY}:enabled", 1)
    probe.set(f"{KEY}:sleep", 6)
    task_id = _send(broker_redis, "data_arch.tasks.warm_caches", warmers=["probe_warmer"])
    _wait_for(lambda: probe.llen(f"{KEY}:started") >= 1, "the warmer never started")
    probe.close()
    broker_redis.stop()  # broker, result backend and leases at once; the warmer sleeps on
    time.sleep(3)
    broker_redis.start()  # the same port; the append-only file brings its data back
    meta = _result(broker_redis, task_id)
    assert meta["status"] == "SUCCESS", meta
    assert meta["result"]["ok"] and meta["result"]["warmers"][0]["error"] is None, meta
    probe = redis.Redis.from_url(broker_redis.url())
    assert probe.llen(f"{KEY}:started") == 1 and probe.llen(f"{KEY}:finished") == 1
    assert list(MaintenanceRun.objects.filter(task_id=task_id)
                .values_list("outcome", flat=True)) == ["ok"]
    # Acknowledged (after its result is stored) on the new connection: nothing is left to be
    # delivered a second time.
    broker = redis.Redis.from_url(broker_redis.url(1))
    _wait_for(lambda: broker.hlen("unacked") == 0, "the task was never acknowledged", 60)
    assert broker_redis_worker.poll() is None, "the worker exited when its broker went away"
    # And the worker consumes again.
    probe.set(f"{KEY}:sleep", 0)
    again = _send(broker_redis, "data_arch.tasks.warm_caches", warmers=["probe_warmer"])
    assert _result(broker_redis, again)["status"] == "SUCCESS"
    assert probe.llen(f"{KEY}:finished") == 2
