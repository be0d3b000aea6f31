"""Scenario 2: the primary fails over (its replica is promoted) under write and read load.

The example project runs on a pair of its own, configured as the README's "HA failover" section
says: both servers in ``HOST``/``PORT``, ``target_session_attrs=read-write`` on the primary
alias and ``prefer-standby`` on the replica alias. The test database is copied onto the pair;
orders are written through ``/api/orders`` and read back through ``/api/orders/<id>`` while the
pair's primary is stopped and its replica promoted. Invariants: writes resume on the promoted
server within a bounded time, every write whose request succeeded is on it, and afterwards no
read is served by a server that is not a standby through the replica alias.
"""

from __future__ import annotations

import random
import subprocess
import threading
import time
from collections import Counter

import psycopg
import pytest

from tests.reliability.conftest import LIVE, Load, latency_line, tenant_hosts

pytestmark = [pytest.mark.slow, LIVE]

RESUME_WITHIN = 15.0  # seconds from the start of the failover to the first acknowledged write


@pytest.fixture
def pair_with_the_example(failover_pair, live_db, tenant_schemas, data_arch_services):
    """The pair's primary holds a copy of the test database (a customer in tenant_a)."""
    from django.db import connections
    from django_tenants.utils import schema_context

    from example_project.shop.models import Customer, Order

    with schema_context("tenant_a"):
        Order.objects.all().delete()
        Customer.objects.all().delete()
        customer = Customer.objects.create(name="failover buyer", email="f@example.com")
    host = tenant_hosts(["tenant_a"])["tenant_a"]
    binaries = data_arch_services.binaries
    source = connections["default"].settings_dict
    dump = subprocess.run(
        [binaries["pg_dump"], "-Fc", "--no-owner", "--no-privileges", "-h", source["HOST"],
         "-p", str(source["PORT"]), "-U", source["USER"], source["NAME"]],
        check=True, capture_output=True, timeout=120,
    ).stdout
    subprocess.run(
        [binaries["pg_restore"], "--no-owner", "--no-privileges", "-d",
         failover_pair.primary.url()], input=dump, check=True, capture_output=True, timeout=120,
    )
    yield failover_pair, host, customer.pk
    with schema_context("tenant_a"):
        Order.objects.all().delete()
        Customer.objects.all().delete()


def _settings(pair) -> dict:
    base = {
        "ENGINE": "django_tenants.postgresql_backend", "NAME": "data_arch", "USER": "postgres",
        "PASSWORD": "", "HOST": pair.hosts, "PORT": pair.ports, "CONN_MAX_AGE": 0,
    }
    return {
        "default": {**base, "OPTIONS": {"target_session_attrs": "read-write",
                                        "connect_timeout": 2}},
        "replica": {**base, "OPTIONS": {"target_session_attrs": "prefer-standby",
                                        "connect_timeout": 2}},
    }


def test_writes_resume_on_the_promoted_server_and_no_acknowledged_write_is_lost(
    pair_with_the_example, example_server
):
    pair, host, customer = pair_with_the_example
    old_port, new_port = pair.primary.port, pair.replica.port
    server = example_server(
        _settings(pair), {"ROUTER": {"PROBE_TIMEOUT": 2, "HEALTH_TTL": 2.5,
                                     "HEALTH_BACKOFF_MAX": 2.5}},
        threads=8, host=host,
    )
    lock = threading.Lock()
    acked: list[tuple[float, int]] = []  # (monotonic time, order id) of each 201

    def step(worker: int, i: int):
        if worker < 2:  # writers
            result = server.request("POST", "/api/orders", host,
                                    {"customer": customer, "total_cents": 100 + i})
            result.kind = "write"
            if result.status == 201:
                with lock:
                    acked.append((time.monotonic(), result.body["id"]))
            return result
        with lock:
            known = [pk for _, pk in acked[-200:]]
        result = server.request("GET", f"/api/orders/{random.choice(known)}" if known
                                else f"/api/customers/{customer}", host)
        result.kind = "read"
        return result

    with Load(step, workers=5) as load:
        load.run_phase("before", min_seconds=3, min_requests=200)
        started = time.monotonic()
        promoted: list[float] = []
        failover = threading.Thread(
            target=lambda: (pair.promote(), promoted.append(time.monotonic())))
        failover.start()
        load.run_phase("failover", min_seconds=0, max_seconds=RESUME_WITHIN + 15,
                       until=lambda: bool(promoted) and acked[-1][0] > promoted[0])
        failover.join(60)
        load.run_phase("after", min_seconds=5, min_requests=300)

    assert promoted, "the promotion did not finish"
    # Writes acknowledged after the promotion returned are the promoted server's; those between
    # the start of the failover and the old primary's shutdown are the old one's.
    resumed = [t for t, _ in acked if t > promoted[0]]
    assert resumed, "no write was acknowledged after the promotion"
    times = [t for t, _ in acked]
    gap = max(b - a for a, b in zip(times, times[1:]))
    with psycopg.connect(pair.primary.url(), autocommit=True) as conn:
        assert conn.execute("SELECT inet_server_port(), pg_is_in_recovery()").fetchone() == (
            new_port, False)
        present = {row[0] for row in conn.execute("SELECT id FROM tenant_a.shop_order")}
    lost = sorted({pk for _, pk in acked} - present)
    by_phase = {p: [r for q, r in load.results if q == p] for p in ("before", "failover", "after")}
    writes_failed = sum(r.kind == "write" and r.status != 201 for _, r in load.results)
    after_reads = [r for r in by_phase["after"] if r.kind == "read"]
    served_after = Counter(r.body.get("db") for r in after_reads)
    print(f"\nscenario 2, primary failover: promotion done {(promoted[0] - started) * 1000:.0f} ms "
          f"after the failover began, first write on the promoted server "
          f"{(resumed[0] - started) * 1000:.0f} ms after it began; longest time without an "
          f"acknowledged write {gap * 1000:.0f} ms; {len(acked)} writes acknowledged, "
          f"{len(lost)} lost, {writes_failed} failed during the switch")
    for phase, results in by_phase.items():
        print(f"  {phase:8} {latency_line(results)}; failed "
              f"{sum(r.status not in (200, 201) for r in results)}")
    print(f"  reads after the failover served by {dict(served_after)}")
    assert lost == [], f"acknowledged writes missing on the promoted server: {lost[:10]}"
    assert resumed[0] - started < RESUME_WITHIN
    assert not pair.former_primary.running
    assert all(r.status in (200, 201) for r in by_phase["after"]), "requests fail after failover"
    # The replica alias lands on the promoted server (no standby is left): the router must not
    # take it for a replica.
    assert served_after["replica"] == 0, served_after
    assert old_port != new_port


@pytest.fixture
def ha_aliases(failover_pair, settings, django_db_blocker):
    """``ha_primary`` (read-write) and ``ha_replica`` (prefer-standby) over the pair's two
    servers, routed by data_arch's router with a long ``HEALTH_TTL``."""
    from django.db import connections

    from data_arch.routing import reset_health

    aliases = _settings(failover_pair)
    configured = {"ha_primary": aliases["default"], "ha_replica": aliases["replica"]}
    for alias, values in configured.items():
        values = {**values, "ENGINE": "django.db.backends.postgresql"}
        connections.settings[alias] = connections.configure_settings(
            {"default": {}, alias: values})[alias]
    settings.DATA_ARCH = {**settings.DATA_ARCH, "ROUTER": {
        "PRIMARY": "ha_primary", "REPLICAS": ["ha_replica"], "HEALTH_TTL": 60,
        "PROBE_TIMEOUT": 2}}
    reset_health()
    with django_db_blocker.unblock():
        try:
            yield failover_pair
        finally:
            for alias in configured:
                connections[alias].close()
                del connections[alias]
                del connections.settings[alias]
            reset_health()


def test_a_replica_alias_that_reaches_the_promoted_server_is_not_read_from(ha_aliases):
    """After the promotion the replica alias's ``prefer-standby`` connects to the new primary:
    the router must see at connect time that it is no standby, even though the replica's last
    verdict (healthy, 60 s ago at most) is still trusted."""
    from django.contrib.auth.models import User
    from django.db import connections

    from data_arch.routing import ReplicaRouter, routing_context

    router = ReplicaRouter()
    with routing_context():
        assert router.db_for_read(User) == "ha_replica"
    connections["ha_replica"].close()
    ha_aliases.promote()
    with routing_context():
        assert router.db_for_read(User) == "ha_primary"
