"""A Redis stopped and started again (a real stop, the same port) under a real Celery worker."""

from __future__ import annotations

import time

import pytest
import redis

from data_arch.models import MaintenanceRun
from data_arch.tasks import maintain_partitions, warm_caches
from data_arch.testing.pytest_plugin import start_celery_worker, stop_celery_worker
from tests.maintenance.warmers import KEY

pytestmark = [
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
        time.sleep(10)
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
