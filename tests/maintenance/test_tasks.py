"""Scheduled maintenance through a real Celery worker and a real Redis broker."""

from __future__ import annotations

import os
import signal
import time

import pytest
from django.db import connections
from django_redis import get_redis_connection

from data_arch.celery import beat_schedule
from data_arch.maintenance import locks
from data_arch.models import MaintenanceRun
from data_arch.testing.pytest_plugin import start_celery_worker, stop_celery_worker
from data_arch.tasks import maintain_partitions, refresh_replica_health, warm_caches
from tests.maintenance.warmers import KEY

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "replica"])

WAIT = 60


@pytest.fixture
def probe(redis_cache):
    """Turns the test warmer on; its Redis keys are cleaned before and after."""
    redis = get_redis_connection("default")
    for suffix in ("started", "finished", "pid", "sleep", "broken"):
        redis.delete(f"{KEY}:{suffix}")
    redis.set(f"{KEY}:enabled", 1)
    yield redis
    redis.delete(f"{KEY}:enabled")


@pytest.fixture(scope="module")
def prefork_worker(request, django_db_setup, django_db_blocker):
    """A worker with a pool of 8 child processes (the solo worker runs one task at a time)."""
    process = start_celery_worker(
        request.config, "--pool=prefork", "--concurrency=8", "-Q", "celery,maintenance_tests",
        name="prefork",
    )
    yield process
    stop_celery_worker(process)


def _row_tenants(count: int, prefix: str):
    from example_project.customers.models import Client

    clients = []
    for number in range(count):
        client = Client(schema_name=f"{prefix}_{number:03d}", name=f"{prefix} {number}")
        client.auto_create_schema = False
        clients.append(client)
    Client.objects.bulk_create(clients)
    return [c.schema_name for c in clients]


def test_every_beat_entry_names_a_task_the_worker_has(celery_worker):
    from example_project.celery import app

    registered = app.control.inspect(timeout=10).registered() or {}
    names = {name for tasks in registered.values() for name in tasks}
    entries = beat_schedule()
    assert {"data_arch.maintain_partitions", "data_arch.warm_caches",
            "data_arch.refresh_replica_health"} <= set(entries)
    assert {entry["task"] for entry in entries.values()} <= names, names
    assert app.conf.beat_schedule.keys() >= entries.keys()  # the example merges it


def test_partition_maintenance_runs_and_is_recorded(celery_worker):
    result = maintain_partitions.delay().get(timeout=WAIT)
    assert result["ok"], result
    run = MaintenanceRun.objects.filter(job="partitions", tenant="").latest("started_at")
    assert run.outcome == "ok" and run.finished_at is not None
    assert run.counts["failures"] == 0 and "created" in run.counts


def test_a_second_run_while_one_holds_the_lease_is_skipped_at_once(celery_worker):
    with locks.lease("partitions:", 30) as held:
        assert held
        started = time.monotonic()
        result = maintain_partitions.delay().get(timeout=WAIT)
        waited = time.monotonic() - started
    assert result == {"ok": True, "job": "partitions", "tenant": "", "skipped": "held"}
    assert waited < 10
    assert maintain_partitions.delay().get(timeout=WAIT).get("skipped") is None  # free again


def test_a_task_sent_in_a_tenant_context_runs_in_that_tenant(
    celery_worker, probe, tenant_schemas
):
    from data_arch.tenancy import tenant_context
    from example_project.customers.models import Client

    for schema in tenant_schemas:
        with tenant_context(Client.objects.get(schema_name=schema)):
            warmed = warm_caches.delay(warmers=["probe_warmer"])
            maintained = maintain_partitions.delay()
        assert warmed.get(timeout=WAIT)["tenant"] == schema
        summary = maintained.get(timeout=WAIT)
        assert summary["ok"] and summary["tenant"] == schema, summary
        assert all(action.startswith(f"{schema}.") for action in summary["actions"]), summary
        assert {run.tenant for run in MaintenanceRun.objects.filter(
            task_id__in=[warmed.id, maintained.id])} == {schema}
    # The warmer ran in each tenant's context, in the worker.
    started = [entry.decode().split(":", 1)[1] for entry in probe.lrange(f"{KEY}:started", 0, -1)]
    assert started == list(tenant_schemas)


def test_bad_input_is_a_failure_result_naming_it(celery_worker):
    unknown = maintain_partitions.delay(tenant="no_such_tenant").get(timeout=WAIT)
    assert unknown["ok"] is False and "no_such_tenant" in unknown["error"]
    model = maintain_partitions.delay(models=["shop.Nope"]).get(timeout=WAIT)
    assert model["ok"] is False and "shop.Nope" in model["error"]
    warmer = warm_caches.delay(warmers=["no_such_warmer"]).get(timeout=WAIT)
    assert warmer["ok"] is False and "no_such_warmer" in warmer["error"]
    assert not MaintenanceRun.objects.filter(outcome="failed").exists()


def test_replica_health_refresh_reports_each_replica(celery_worker):
    result = refresh_replica_health.delay().get(timeout=WAIT)
    assert result["ok"] and set(result["replicas"]) == {"replica"}
    assert MaintenanceRun.objects.filter(job="replica_health", outcome="ok").exists()


@pytest.mark.slow
def test_a_worker_killed_mid_run_leaves_the_task_to_be_delivered_again(prefork_worker, probe):
    probe.set(f"{KEY}:sleep", 3)
    # Its own queue: only the prefork worker runs it, so the pid killed is a pool child's.
    result = warm_caches.apply_async(kwargs={"warmers": ["probe_warmer"]}, queue="maintenance_tests")
    deadline = time.monotonic() + WAIT
    while probe.llen(f"{KEY}:started") < 1:
        assert time.monotonic() < deadline, "the warmer never started"
        time.sleep(0.05)
    os.kill(int(probe.get(f"{KEY}:pid")), signal.SIGKILL)  # the pool child running it
    probe.set(f"{KEY}:sleep", 0)
    summary = result.get(timeout=WAIT)
    assert summary["ok"] and summary["warmers"][0]["error"] is None, summary
    assert probe.llen(f"{KEY}:started") == 2  # delivered again after the kill
    assert probe.llen(f"{KEY}:finished") == 1  # and finished once
    runs = MaintenanceRun.objects.filter(job="warm_caches", task_id=result.id)
    assert sorted(runs.values_list("outcome", flat=True)) == ["ok", "running"]


def _drop_month_partitions(table: str) -> int:
    """Leave ``table`` with its default partition only: its months are pending again."""
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s "
            "AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'", [table]
        )
        names = [name for (name,) in cursor.fetchall()]
        for name in names:
            cursor.execute(f'DROP TABLE "{name}"')
    return len(names)


@pytest.mark.slow
def test_a_worker_killed_mid_maintenance_leaves_it_to_be_finished_once(prefork_worker):
    from django.db import transaction

    from data_arch.partitioning import plan

    maintain_partitions.apply_async(queue="maintenance_tests").get(timeout=WAIT)  # all in place
    _drop_month_partitions("audit_auditentry")
    pending = [a for t in plan().tables for a in t.actions]
    assert pending and {a.kind for a in pending} == {"create"}
    with transaction.atomic(using="default"):
        with connections["default"].cursor() as cursor:
            # Planning reads the table; attaching a partition waits for this lock (lock_timeout,
            # then retries).
            cursor.execute("LOCK TABLE audit_auditentry IN SHARE UPDATE EXCLUSIVE MODE")
        result = maintain_partitions.apply_async(queue="maintenance_tests")
        runs = MaintenanceRun.objects.filter(job="partitions", task_id=result.id)
        deadline = time.monotonic() + WAIT
        while not runs.exists():
            assert time.monotonic() < deadline, "the maintenance never started"
            time.sleep(0.05)
        # The pool child running it, from its run record (host:pid), killed mid-run.
        os.kill(int(runs.get().runner.rsplit(":", 1)[1]), signal.SIGKILL)
        time.sleep(0.5)
    summary = result.get(timeout=WAIT)
    assert summary["ok"] and summary["counts"]["failures"] == 0, summary
    assert sorted(runs.values_list("outcome", flat=True)) == ["ok", "running"]
    # The redelivered run did every pending step, once; nothing is left to do.
    assert summary["counts"]["created"] == len(pending), (summary, pending)
    assert not plan().pending


@pytest.mark.slow
def test_all_tenants_fan_out_under_a_cap_and_one_broken_tenant_stops_no_other(
    prefork_worker, probe
):
    from example_project.customers.models import Client

    keys = _row_tenants(200, "capped")  # tiny tenants: rows of the tenant table, no schema
    try:
        probe.set(f"{KEY}:sleep", 0.05)
        probe.set(f"{KEY}:broken", keys[7])
        started = time.monotonic()
        fanned = warm_caches.delay(all_tenants=True, warmers=["probe_warmer"]).get(timeout=WAIT)
        enqueued = time.monotonic() - started
        assert fanned["fanned_out"] >= 200
        deadline = time.monotonic() + 600
        runs = MaintenanceRun.objects.filter(job="warm_caches", tenant__in=keys)
        while runs.exclude(outcome="running").count() < len(keys):
            assert time.monotonic() < deadline, runs.exclude(outcome="running").count()
            time.sleep(0.5)
        total = time.monotonic() - started
        spans = sorted(runs.values_list("started_at", "finished_at"))
        events = sorted([(s, 1) for s, _ in spans] + [(f, -1) for _, f in spans])
        in_flight = peak = 0
        for _, step in events:
            in_flight += step
            peak = max(peak, in_flight)
        busy = sum((f - s).total_seconds() for s, f in spans)
        print(f"fan-out: {len(keys)} tenants enqueued in {enqueued:.2f} s, all maintained in "
              f"{total:.1f} s ({busy:.1f} s of tenant work), at most {peak} in flight (cap 4)")
        assert peak <= 4
        assert peak >= 2, "never more than one at a time: the cap was not exercised"
        failed = list(runs.filter(outcome="failed").values_list("tenant", "error"))
        assert failed == [(keys[7], f"RuntimeError: probe_warmer: RuntimeError: warmer broken for "
                                    f"{keys[7]}")]
        assert runs.filter(outcome="ok").count() == len(keys) - 1
        assert runs.count() == len(keys)  # each tenant once
        assert probe.llen(f"{KEY}:finished") == len(keys) - 1
    finally:
        Client.objects.filter(schema_name__in=keys).delete()


@pytest.mark.slow
def test_the_database_away_for_seconds_is_retried_until_it_is_back(
    celery_worker, data_arch_services
):
    primary = data_arch_services.primary
    if primary is None:
        pytest.skip("needs a primary the harness started")
    connections.close_all()
    primary.stop("fast")
    try:
        result = maintain_partitions.delay()
        time.sleep(3)
    finally:
        primary.start()
    summary = result.get(timeout=WAIT)
    assert summary["ok"] and "skipped" not in summary, summary
    assert MaintenanceRun.objects.filter(job="partitions", task_id=result.id, outcome="ok").exists()


def test_the_partitions_command_records_its_runs_too():
    from django.core.management import call_command

    call_command("partitions", "apply", "--yes", verbosity=0)
    run = MaintenanceRun.objects.filter(job="partitions").latest("started_at")
    assert run.outcome == "ok" and run.runner and not run.task_id
    assert {"created", "drained", "retained", "failures"} <= set(run.counts)


def test_the_hourly_sweep_reports_a_tenant_schema_missing_a_tenant_table():
    # The library call the all-tenants partition task runs (called directly: a fan-out here
    # would keep maintaining tenant schemas while the next test module runs).
    from data_arch.maintenance.jobs import check_tenant_schemas
    from example_project.customers.models import Client

    client = Client(schema_name="half_made", name="Half made")
    client.auto_create_schema = False
    client.save()
    with connections["default"].cursor() as cursor:
        cursor.execute("CREATE SCHEMA half_made")  # no tables: every query would hit public
    try:
        with pytest.raises(RuntimeError, match="half_made lacks"):
            check_tenant_schemas()
        run = MaintenanceRun.objects.filter(job="tenant_schemas").latest("started_at")
        assert run.outcome == "failed" and "half_made" in run.error
    finally:
        with connections["default"].cursor() as cursor:
            cursor.execute("DROP SCHEMA half_made CASCADE")
        client.delete()


@pytest.mark.slow
def test_redis_hung_for_seconds_is_retried_until_it_is_back(celery_worker, data_arch_services):
    redis = data_arch_services.redis
    if redis is None or redis.process is None:
        pytest.skip("needs a Redis the harness started")
    # Held by the worker until it is due (an ETA task), it starts while Redis -- the leases'
    # store, the broker and the result backend -- hangs (SIGSTOP): the lease times out, the
    # task is retried, and the retry runs once Redis answers again.
    result = maintain_partitions.apply_async(countdown=2)
    time.sleep(1)
    os.kill(redis.process.pid, signal.SIGSTOP)
    try:
        time.sleep(4)
    finally:
        os.kill(redis.process.pid, signal.SIGCONT)
    summary = result.get(timeout=WAIT)
    assert summary["ok"] and "skipped" not in summary, summary
    runs = MaintenanceRun.objects.filter(job="partitions", task_id=result.id)
    assert list(runs.values_list("outcome", flat=True)) == ["ok"]
    assert result.backend.client.get(f"celery-task-meta-{result.id}")  # stored, not lost


@pytest.mark.slow
def test_a_lease_held_by_a_process_killed_with_sigkill_lapses_and_the_job_runs(
    request, celery_worker, redis_cache
):
    import subprocess
    import sys

    from data_arch.testing.pytest_plugin import celery_environ

    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import django, time; django.setup()\n"
         "from data_arch.maintenance import locks\n"
         "with locks.lease('partitions:', 5) as held:\n"
         "    print(held, flush=True); time.sleep(600)\n"],
        env=celery_environ(request.config), cwd=str(request.config.rootpath),
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "True"
        assert maintain_partitions.delay().get(timeout=WAIT)["skipped"] == "held"
        holder.kill()  # dies holding it: nobody renews it now
        holder.wait(10)
        key = "data_arch:maintenance:lease:partitions:"
        assert 0 < get_redis_connection("default").pttl(key) <= 5000
        deadline = time.monotonic() + WAIT
        while (summary := maintain_partitions.delay().get(timeout=WAIT)).get("skipped"):
            assert time.monotonic() < deadline, summary
            time.sleep(0.5)
        assert summary["ok"], summary
    finally:
        holder.kill()
        holder.wait(10)
