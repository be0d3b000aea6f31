"""The router under the faults production has, caused for real on the streaming replica.

A frozen postmaster (``SIGSTOP``: a dead VM or dropped packets look like this, a refused port
does not), a frozen WAL receiver (a replica cut off from its primary), a backend killed under a
pooled connection, a restart, and a hot-standby conflict. Each test asserts the figure the
router promises for that fault.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from django.contrib.auth.models import User
from django.db import connections
from django.db.models import Count, Max
from django.test import override_settings

from data_arch.routing import health, reset_health, routing_context, use_primary
from tests.routing.conftest import ROUTED

pytestmark = [ROUTED, pytest.mark.slow]

PROBE_TIMEOUT = 2


def _router(**overrides) -> override_settings:
    return override_settings(DATA_ARCH={"ROUTER": {"REPLICAS": ["replica"], **overrides}})


def _postmaster_pid(server) -> int:
    return int((server.datadir / "postmaster.pid").read_text().split()[0])


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """The process stops running (it keeps its sockets: connects hang instead of failing)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _replica_sql(services, statement: str, params=None):
    with psycopg.connect(services.replica_url, autocommit=True, connect_timeout=5) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def _read_username(name: str = "replayed") -> tuple[str, str]:
    """One request's read: (the alias that served it, the user's first_name)."""
    with routing_context():
        user = User.objects.get(username=name)
    return user._state.db, user.first_name


@pytest.fixture
def replica_server(streaming_replica):
    if streaming_replica.replica is None:
        pytest.skip("needs a replica the harness started (it signals its processes)")
    return streaming_replica.replica


def test_a_frozen_replica_costs_at_most_one_probe_timeout_over_20_reads(
    user_on_replica, replica_server
):
    with _router(HEALTH_TTL=5, PROBE_TIMEOUT=PROBE_TIMEOUT):
        baseline = []
        for _ in range(20):
            started = time.monotonic()
            assert _read_username()[0] == "replica"
            baseline.append(time.monotonic() - started)
        connections["replica"].close()  # the next read must connect through the frozen host
        errors, elapsed, served = [], [], []
        with frozen(_postmaster_pid(replica_server)):
            for _ in range(20):
                started = time.monotonic()
                try:
                    served.append(_read_username()[0])
                except Exception as exc:  # any failed read is what this test forbids
                    errors.append(repr(exc))
                elapsed.append(time.monotonic() - started)
            connections["replica"].close()
    added = sum(elapsed) - sum(baseline)
    print(f"frozen replica: {added:.2f}s added over 20 reads (max {max(elapsed):.2f}s)")
    assert errors == []
    assert set(served) == {"default"}
    assert added <= 1.5 * PROBE_TIMEOUT, elapsed


def test_eight_threads_on_a_frozen_replica_run_at_most_one_probe_at_a_time(
    user_on_replica, replica_server
):
    in_flight, peak, probes, lock = [0], [0], [0], threading.Lock()
    measure = health._measure

    def counted(*args, **kwargs):
        with lock:
            in_flight[0] += 1
            probes[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        try:
            return measure(*args, **kwargs)
        finally:
            with lock:
                in_flight[0] -= 1

    errors, elapsed = [], []

    def reader() -> None:
        try:
            until = time.monotonic() + 3 * PROBE_TIMEOUT  # several backoff windows
            while time.monotonic() < until:
                started = time.monotonic()
                assert _read_username()[0] == "default"
                elapsed.append(time.monotonic() - started)
                time.sleep(0.01)
        except Exception as exc:  # noqa: BLE001 -- collected and asserted below
            errors.append(repr(exc))
        finally:
            connections.close_all()

    with _router(HEALTH_TTL=0.5, PROBE_TIMEOUT=PROBE_TIMEOUT):
        assert _read_username()[0] == "replica"
        connections["replica"].close()
        health._measure = counted
        try:
            with frozen(_postmaster_pid(replica_server)):
                threads = [threading.Thread(target=reader) for _ in range(8)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(60)
        finally:
            health._measure = measure
    slow = [t for t in elapsed if t > 0.5]
    print(f"8 threads: {probes[0]} probes, peak {peak[0]} in flight; {len(elapsed)} reads, "
          f"{len(slow)} slower than 0.5s, slowest {max(elapsed):.2f}s")
    assert errors == []
    assert probes[0] >= 1, "no probe ran: the test proved nothing"
    assert peak[0] == 1
    assert len(slow) <= 1, slow  # one request per outage pays the connect timeout
    assert max(elapsed) <= 1.5 * PROBE_TIMEOUT


def test_a_replica_whose_wal_receiver_froze_stops_serving_tokenless_reads(
    user_on_replica, replica_server, data_arch_services, wait_for_replica
):
    ttl = 0.5
    (receiver,) = _replica_sql(data_arch_services, "SELECT pid FROM pg_stat_wal_receiver")[0]
    stale_after: list[float] = []
    with _router(HEALTH_TTL=ttl, PROBE_TIMEOUT=PROBE_TIMEOUT):
        assert _read_username() == ("replica", "")
        with frozen(receiver):
            with routing_context():
                User.objects.filter(username="replayed").update(first_name="fresh")
            written = time.monotonic()
            bound = written + ttl + PROBE_TIMEOUT
            while time.monotonic() < bound + 1.0:
                alias, first_name = _read_username()
                if first_name != "fresh":
                    stale_after.append(time.monotonic() - written)
                time.sleep(0.01)
        wait_for_replica()
    print(f"cut-off replica: last stale read {max(stale_after, default=0):.2f}s after the write")
    assert stale_after, "the frozen receiver never made a read stale: the test proved nothing"
    assert max(stale_after) <= ttl + PROBE_TIMEOUT, stale_after[-5:]


@pytest.mark.parametrize("pool", [False, True], ids=["persistent", "pooled"])
def test_a_killed_replica_backend_under_a_read_gives_the_primarys_answer(
    pool, user_on_replica, data_arch_services, wait_for_replica
):
    from example_project.billing.models import Account
    from example_project.customers.models import Client

    from data_arch.tenancy import Tenant, tenant_context

    client = Client(schema_name="routing_faults", name="Routing faults")
    client.auto_create_schema = False
    client.save()
    replica = connections["replica"]
    options = replica.settings_dict.setdefault("OPTIONS", {})
    try:
        if pool:
            replica.close()
            options["pool"] = {"min_size": 1, "max_size": 2}
        tenant = Tenant(pk=client.pk)
        with tenant_context(tenant):
            Account.objects.bulk_create(
                [Account(name=f"a{i}", email=f"a{i}@example.com") for i in range(100)]
            )
        wait_for_replica()
        reads = {
            "count": lambda: Account.objects.count(),
            "exists": lambda: Account.objects.filter(name="nobody").exists(),
            "aggregate": lambda: Account.objects.aggregate(n=Count("id"), top=Max("name")),
            "values_list": lambda: sorted(Account.objects.values_list("name", flat=True)),
            "get": lambda: Account.objects.get(name="a42").email,
        }
        with _router(HEALTH_TTL=60), tenant_context(tenant):
            with routing_context(), use_primary():
                expected = {name: read() for name, read in reads.items()}
            assert expected["count"] == 100 and expected["exists"] is False
            for name, read in reads.items():
                reset_health()
                with routing_context():
                    assert Account.objects.all().db == "replica"
                    replica.ensure_connection()
                    pid = replica.connection.info.backend_pid
                    _replica_sql(data_arch_services, "SELECT pg_terminate_backend(%s)", [pid])
                    got = read()
                assert got == expected[name], name
    finally:
        with tenant_context(Tenant(pk=client.pk)):
            Account.objects.using("default").all()._raw_delete(using="default")
        client.delete()
        replica.close()
        if pool:
            replica.close_pool()
            options.pop("pool", None)
        reset_health()


def test_a_restarted_caught_up_replica_is_used_again_within_one_probe(
    user_on_replica, replica_server, wait_for_replica
):
    ttl = 0.5
    with _router(HEALTH_TTL=ttl, PROBE_TIMEOUT=PROBE_TIMEOUT):
        assert _read_username()[0] == "replica"
        replica_server.stop("fast")
        connections["replica"].close()
        try:
            assert _read_username()[0] == "default"
        finally:
            replica_server.start()
        wait_for_replica()
        time.sleep(1.0)  # the primary stays idle: nothing new to replay
        back = time.monotonic()
        served = None
        while time.monotonic() < back + ttl + PROBE_TIMEOUT + 1.0:
            served = _read_username()[0]
            if served == "replica":
                break
            time.sleep(0.02)
        verdict = health.health_of("replica", "default")
    print(f"restarted replica: back after {time.monotonic() - back:.2f}s ({verdict.reason!r})")
    assert served == "replica", verdict
    assert verdict.lag_seconds in (None, 0.0) or verdict.lag_seconds < 1.0, verdict


def test_a_hot_standby_conflict_is_answered_from_another_host(
    user_on_replica, data_arch_services, wait_for_replica, caplog
):
    _replica_sql(data_arch_services, "ALTER SYSTEM SET max_standby_streaming_delay = 0")
    _replica_sql(data_arch_services, "SELECT pg_reload_conf()")
    try:
        def lock_on_primary() -> None:
            time.sleep(0.3)
            with psycopg.connect(data_arch_services.database_url.rsplit("/", 1)[0] + "/"
                                 + connections["default"].settings_dict["NAME"],
                                 autocommit=False) as conn:
                conn.execute("LOCK TABLE auth_user IN ACCESS EXCLUSIVE MODE")
                conn.commit()

        with _router(HEALTH_TTL=60), caplog.at_level(logging.WARNING, "data_arch.routing"):
            with routing_context():
                assert User.objects.all().db == "replica"
                locker = threading.Thread(target=lock_on_primary)
                locker.start()
                rows = list(
                    User.objects.filter(username="replayed")
                    .extra(select={"slept": "(SELECT 1 FROM pg_sleep(1.5))"})
                    .values_list("username", "slept")
                )
                locker.join()
        assert rows == [("replayed", 1)]
        # The server's own words, passed on by the retry: the replica cancelled the read.
        assert "canceling statement due to conflict with recovery" in caplog.text, caplog.text
        assert health.health_of("replica", "default").healthy  # a conflict is not an outage
    finally:
        _replica_sql(data_arch_services, "ALTER SYSTEM RESET max_standby_streaming_delay")
        _replica_sql(data_arch_services, "SELECT pg_reload_conf()")
        wait_for_replica()
