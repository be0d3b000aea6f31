"""Scenario 3: Redis stops and comes back during cache-aside load on the example project.

The dashboard figures (``/api/stats``, cached with ``models=[Customer, Order]``) are read for
two tenants while orders are written through ``/api/orders``. Redis is stopped with a snapshot
of the cache on disk and restarted from it -- so what it holds when it comes back is exactly
what was cached before the outage, values the writes made during the outage have made stale.
Invariants: no request fails, every figure is at least as new as every write acknowledged
before the read began (compared with the database), hits resume, and the invalidations of the
outage take effect on the restarted Redis.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time

import pytest

from tests.reliability.conftest import LIVE, Load, database_settings, latency_line, tenant_hosts

pytestmark = [pytest.mark.slow, pytest.mark.version_independent, LIVE]

SCHEMAS = ("tenant_a", "tenant_b")
HIT = "data_arch_cache_events_total"


@pytest.fixture
def redis_server(data_arch_services):
    server = data_arch_services.redis
    if server is None or server.process is None:
        pytest.skip("Redis was not started by the harness (REDIS_URL given)")
    snapshot = server.workdir / "dump.rdb"
    yield server
    if not server.running:
        server.start()
    import redis

    redis.Redis.from_url(server.url()).flushall()
    snapshot.unlink(missing_ok=True)


@pytest.fixture
def shops(live_db, tenant_schemas):
    from django_tenants.utils import schema_context

    from example_project.shop.models import Customer, Order

    customers = {}
    for schema in SCHEMAS:
        with schema_context(schema):
            Order.objects.all().delete()
            Customer.objects.all().delete()
            customer = Customer.objects.create(name=f"{schema} buyer", email="b@example.com")
            Order.objects.bulk_create(Order(customer=customer, total_cents=100) for _ in range(5))
            customers[schema] = customer.pk
    yield tenant_hosts(SCHEMAS), customers
    for schema in SCHEMAS:
        with schema_context(schema):
            Order.objects.all().delete()
            Customer.objects.all().delete()


def _database_orders(schema: str) -> int:
    from django_tenants.utils import schema_context

    from example_project.shop.models import Order

    with schema_context(schema):
        return Order.objects.count()


def test_redis_stopped_and_restarted_from_a_stale_snapshot_serves_no_stale_figure(
    redis_server, shops, example_server
):
    hosts, customers = shops
    server = example_server(database_settings(), {"CACHE": {"RETRY_AFTER": 0.5}}, threads=8)
    lock = threading.Lock()
    acked = {schema: [] for schema in SCHEMAS}  # monotonic time each write was acknowledged
    started_writes = {schema: 0 for schema in SCHEMAS}
    writes = itertools.cycle(SCHEMAS)
    write_errors = []

    def step(worker: int, i: int):
        if worker == 0:  # the writer
            time.sleep(0.05)
            schema = next(writes)
            with lock:
                started_writes[schema] += 1
            result = server.request(
                "POST", "/api/orders", hosts[schema],
                {"customer": customers[schema], "total_cents": 250},
            )
            if result.status == 201:
                with lock:
                    acked[schema].append(time.monotonic())
            else:
                write_errors.append(result)
            result.schema, result.kind = schema, "write"
            return result
        schema = SCHEMAS[i % 2]
        with lock:
            floor = 5 + len(acked[schema])
        result = server.request("GET", "/api/stats", hosts[schema])
        with lock:
            ceiling = 5 + started_writes[schema]
        result.schema, result.kind = schema, "read"
        orders = result.body.get("orders")
        if result.status == 200 and not (floor <= orders <= ceiling):
            result.error = f"{schema}: {orders} orders, expected {floor}..{ceiling}"
        if result.status == 200 and result.body.get("revenue_cents") != 500 + 250 * (orders - 5):
            result.error = f"{schema}: revenue {result.body} does not match {orders} orders"
        return result

    with Load(step, workers=5) as load:
        load.run_phase("before", min_seconds=3, min_requests=300)
        hits_before = server.metric(hosts["tenant_a"], HIT, event="hit")
        redis_server_pid = redis_server.process.pid
        with contextlib.suppress(Exception):
            import redis

            redis.Redis.from_url(redis_server.url()).save()  # what it holds comes back
        redis_server.stop()
        load.run_phase("outage", min_seconds=5, min_requests=300)
        redis_server.start()
        assert redis_server.process.pid != redis_server_pid
        hits_restart = server.metric(hosts["tenant_a"], HIT, event="hit")
        load.run_phase("restarted", min_seconds=5, min_requests=300)
        hits_after = server.metric(hosts["tenant_a"], HIT, event="hit")

    results = [r for _, r in load.results]
    failed = [r for r in results if r.status not in (200, 201) or r.error]
    print(f"\nscenario 3, Redis stopped and restarted from its snapshot: {len(results)} "
          f"requests ({sum(r.kind == 'write' for r in results)} writes), {len(failed)} failed")
    for phase in ("before", "outage", "restarted"):
        reads = [r for p, r in load.results if p == phase and r.kind == "read"]
        print(f"  {phase:9} reads: {latency_line(reads)}")
    print(f"  cache hits: {hits_before:.0f} before the outage, {hits_restart - hits_before:.0f} "
          f"during it, {hits_after - hits_restart:.0f} after the restart")
    assert not failed, [(r.status, r.error, r.body) for r in failed[:5]]
    assert not write_errors
    assert hits_before > 0
    assert hits_after > hits_restart, "hits did not resume after Redis came back"
    outage_writes = [r for p, r in load.results if p == "outage" and r.kind == "write"]
    assert outage_writes, "no write during the outage"
    for schema in SCHEMAS:  # the figures served at the end are the database's
        final = server.request("GET", "/api/stats", hosts[schema]).body["orders"]
        assert final == _database_orders(schema) == 5 + len(acked[schema])


def test_the_first_read_after_redis_returns_sees_the_invalidations_of_the_outage(
    redis_server, settings
):
    """Redis comes back holding a value an invalidation of the outage made stale: the read that
    finds Redis again must not serve it before that invalidation has been delivered."""
    import redis

    from data_arch.caching import get_or_load, invalidate_tag, reset_engines

    settings.DATA_ARCH = {**settings.DATA_ARCH,
                          "CACHE": {**settings.DATA_ARCH["CACHE"], "RETRY_AFTER": 0.2}}
    reset_engines()
    try:
        redis.Redis.from_url(redis_server.url()).flushall()
        assert get_or_load(("report",), lambda: "before", 60, tags=["reports"]) == "before"
        redis.Redis.from_url(redis_server.url()).save()
        redis_server.stop()
        invalidate_tag("reports")  # Redis is down: queued in this process
        assert get_or_load(("report",), lambda: "during", 60, tags=["reports"]) == "during"
        redis_server.start()  # from the snapshot: "before" under the old generation
        time.sleep(0.3)  # past RETRY_AFTER: the next call probes Redis
        assert get_or_load(("report",), lambda: "after", 60, tags=["reports"]) == "after"
        assert get_or_load(("report",), lambda: "again", 60, tags=["reports"]) == "after"
    finally:
        reset_engines()
