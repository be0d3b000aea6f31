"""The dead man's switch (data_arch.W010) and the signals the maintenance calls send."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core import checks
from django.db import connections
from django.utils import timezone

from data_arch import maintenance, signals
from data_arch.conf import celery_settings
from data_arch.models import MaintenanceRun

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "replica"])


def _switch() -> dict[str, str]:
    return {
        message.msg.split("'")[1]: message.msg
        for message in checks.run_checks(databases=["default"], tags=[checks.Tags.database])
        if message.id == "data_arch.W010"
    }


def _succeeded(job: str, ago: float) -> None:
    finished = timezone.now() - dt.timedelta(seconds=ago)
    MaintenanceRun.objects.create(job=job, started_at=finished - dt.timedelta(seconds=1),
                                  finished_at=finished, outcome="ok")


def test_the_switch_names_each_scheduled_job_that_never_or_no_longer_succeeds():
    jobs = celery_settings().intervals()
    assert set(_switch()) == set(jobs)
    assert all("has never succeeded" in message for message in _switch().values())
    for job, interval in jobs.items():
        _succeeded(job, ago=interval / 2)  # recent enough (STALE_AFTER: twice the interval)
    assert _switch() == {}
    # A failed or still-running run is no success; an old success is stale.
    MaintenanceRun.objects.filter(job="partitions").delete()
    MaintenanceRun.objects.create(job="partitions", started_at=timezone.now(), outcome="failed",
                                  finished_at=timezone.now(), error="boom")
    MaintenanceRun.objects.create(job="partitions", started_at=timezone.now())
    _succeeded("partitions", ago=3 * jobs["partitions"])
    assert set(_switch()) == {"partitions"}
    assert "last succeeded at" in _switch()["partitions"]


@pytest.fixture
def received():
    """Every data_arch maintenance signal sent during the test, as (signal name, kwargs)."""
    got: list[tuple[str, dict]] = []
    names = ("partitions_created", "partitions_retained", "partitions_drained", "warmers_run",
             "maintenance_failed")
    handlers = {}
    for name in names:
        def handler(sender, _name=name, **kwargs):
            kwargs.pop("signal", None)
            got.append((_name, kwargs))
        handlers[name] = handler
        getattr(signals, name).connect(handler, weak=False)
    yield got
    for name, handler in handlers.items():
        getattr(signals, name).disconnect(handler)


def _partitions(table: str) -> list[str]:
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s "
            "AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT' ORDER BY 1", [table]
        )
        return [name for (name,) in cursor.fetchall()]


def test_partition_maintenance_signals_created_drained_and_retained(received):
    from example_project.audit.models import AuditEntry

    maintenance.maintain_partitions()
    with connections["default"].cursor() as cursor:
        for name in _partitions("audit_auditentry"):
            cursor.execute(f'DROP TABLE "{name}"')
        # An expired month (retain=12, archived) and a row waiting in the default partition.
        cursor.execute('CREATE TABLE "audit_auditentry_p2020_01" PARTITION OF audit_auditentry '
                       "FOR VALUES FROM ('2020-01-01') TO ('2020-02-01')")
    AuditEntry.objects.create(at=timezone.now(), action="waiting")
    received.clear()
    maintenance.maintain_partitions()
    by_name = {name: kwargs for name, kwargs in received}
    assert set(by_name) == {"partitions_created", "partitions_drained", "partitions_retained"}
    current = f"audit_auditentry_p{timezone.now():%Y_%m}"
    assert current in by_name["partitions_created"]["partitions"]
    assert by_name["partitions_created"]["tenant"] == ""
    assert by_name["partitions_drained"]["partitions"] == [current]
    assert by_name["partitions_retained"] == {
        "tenant": "", "partitions": ["audit_auditentry_p2020_01"], "mode": "archive"}
    received.clear()
    maintenance.maintain_partitions()  # nothing left to do: nothing signalled
    assert received == []


def test_warming_signals_its_results_and_a_failure_signals_with_its_tenant(
    received, tenant_schemas
):
    from example_project.customers.models import Client

    tenant = Client.objects.get(schema_name=tenant_schemas[0])
    maintenance.warm_caches(tenant=tenant, warmers=["shop.dashboard"])
    [(name, kwargs)] = received
    assert name == "warmers_run" and kwargs["tenant"] == tenant_schemas[0]
    assert [(r["warmer"], r["error"]) for r in kwargs["results"]] == [("shop.dashboard", None)]
    received.clear()
    broken = Client(schema_name="no_tables_here", name="No tables")
    broken.auto_create_schema = False
    broken.save()
    with pytest.raises(RuntimeError, match="shop.dashboard"):
        maintenance.warm_caches(tenant=broken, warmers=["shop.dashboard"])
    [(name, kwargs)] = received
    assert name == "maintenance_failed"
    assert kwargs["job"] == "warm_caches" and kwargs["tenant"] == "no_tables_here"
    assert "shop.dashboard" in kwargs["error"]
