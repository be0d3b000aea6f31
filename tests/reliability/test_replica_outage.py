"""Scenario 1: the replica's host hangs, then its server stops, under thousands of requests.

The whole process group of the replica's postmaster (every backend, the WAL receiver) is frozen
with SIGSTOP -- what a hung host looks like: connections are accepted by the kernel and never
answered -- then thawed, then the server is stopped (``pg_ctl stop``) and started again. The
example project's customer view is read throughout through gunicorn, its middleware and the
router. Invariants: no request fails, every answer is right, and reads go back to the replica
once it is up again.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
from collections import Counter

import pytest

from tests.reliability.conftest import LIVE, Load, database_settings, latency_line, tenant_hosts

pytestmark = [pytest.mark.slow, LIVE]

ROUTER = {"PROBE_TIMEOUT": 2, "HEALTH_TTL": 2.5, "HEALTH_BACKOFF_MAX": 2.5}


def _process_group(server) -> int:
    pid = int((server.datadir / "postmaster.pid").read_text().split()[0])
    group = os.getpgid(pid)
    # pg_ctl starts the postmaster in a session of its own: its group is the server, not us.
    assert group == pid and group != os.getpgrp(), (pid, group)
    return group


@pytest.fixture
def replica_server(streaming_replica):
    server = streaming_replica.replica
    if server is None:
        pytest.skip("the replica was not started by the harness (REPLICA_URL given)")
    yield server
    with contextlib.suppress(Exception):
        os.killpg(_process_group(server), signal.SIGCONT)
    if not server.running:
        server.start()


@pytest.fixture
def customers(live_db, tenant_schemas, wait_for_replica):
    from django_tenants.utils import schema_context

    from example_project.shop.models import Customer

    with schema_context("tenant_a"):
        Customer.objects.all().delete()
        rows = Customer.objects.bulk_create(
            Customer(name=f"customer {n}", email=f"c{n}@example.com") for n in range(50)
        )
    hosts = tenant_hosts(["tenant_a"])
    wait_for_replica()
    yield hosts["tenant_a"], {row.pk: row.name for row in rows}
    with schema_context("tenant_a"):
        Customer.objects.all().delete()


def test_a_hung_then_stopped_replica_fails_no_request(replica_server, customers, example_server):
    host, names = customers
    server = example_server(database_settings(), {"ROUTER": ROUTER}, threads=8)
    ids = list(names)

    def read(worker: int, i: int):
        pk = random.choice(ids)
        result = server.request("GET", f"/api/customers/{pk}", host)
        if result.status == 200 and result.body.get("name") != names[pk]:
            result.error = f"wrong answer for {pk}: {result.body}"
        return result

    group = _process_group(replica_server)
    with Load(read, workers=6) as load:
        load.run_phase("healthy", min_seconds=2, min_requests=400)
        os.killpg(group, signal.SIGSTOP)
        try:
            load.run_phase("frozen", min_seconds=8, min_requests=800)
        finally:
            os.killpg(group, signal.SIGCONT)
        load.run_phase("thawed", min_seconds=4, min_requests=400)
        replica_server.stop("fast")
        load.run_phase("stopped", min_seconds=5, min_requests=800)
        replica_server.start()
        back = lambda: any(  # noqa: E731
            p == "restarted" and r.body.get("db") == "replica" for p, r in load.results[-200:]
        )
        load.run_phase("restarted", min_seconds=3, min_requests=400, max_seconds=60, until=back)
        load.run_phase("after", min_seconds=2, min_requests=400)

    by_phase: dict[str, list] = {}
    for phase, result in load.results:
        by_phase.setdefault(phase, []).append(result)
    failed = [r for _, r in load.results if r.status != 200 or r.error]
    print(f"\nscenario 1, replica hung then stopped: {len(load.results)} requests, "
          f"{len(failed)} failed")
    for phase, results in by_phase.items():
        served = Counter(r.body.get("db") for r in results)
        print(f"  {phase:9} {latency_line(results)}; served by {dict(served)}")
    assert not failed, failed[:5]
    assert len(load.results) >= 3000
    healthy = Counter(r.body.get("db") for r in by_phase["healthy"])
    assert healthy["replica"] > 0, healthy
    after = Counter(r.body.get("db") for r in by_phase["after"])
    assert after["replica"] > 0, f"reads did not return to the replica: {after}"
