"""/metrics after real activity: router, cache, partitions, replica lag and maintenance."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings
from prometheus_client.parser import text_string_to_metric_families

from data_arch.caching import get_or_load
from data_arch.routing import health, reset_health, routing_context

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "replica"])

NO_CACHE = {"METRICS": {"CACHE_SECONDS": 0}}


def _scrape() -> dict[tuple[str, tuple], float]:
    from django.conf import settings

    with override_settings(DATA_ARCH={**settings.DATA_ARCH, **NO_CACHE}):
        response = Client().get("/metrics")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(samples, metric, **labels) -> float | None:
    return samples.get((metric, tuple(sorted(labels.items()))))


def test_router_and_cache_activity_shows_up(streaming_replica, wait_for_replica, redis_cache):
    User.objects.create(username="counted")
    wait_for_replica()
    before = _scrape()
    for _ in range(3):
        with routing_context():
            User.objects.get(username="counted")
    get_or_load("metrics-key", lambda: 1, 60)
    get_or_load("metrics-key", lambda: 1, 60)
    after = _scrape()
    reads = "data_arch_router_reads_total"
    gained = (_value(after, reads, alias="replica", reason="replica") or 0) - (
        _value(before, reads, alias="replica", reason="replica") or 0)
    assert gained >= 3
    assert _value(after, "data_arch_cache_events_total",
                  alias="default", name="metrics-key", event="hit") == 1
    assert _value(after, "data_arch_replica_healthy", alias="replica") == 1


def test_rows_beyond_the_horizon_are_counted_in_the_default_partition():
    from data_arch.partitioning import apply, plan
    from example_project.audit.models import AuditEntry

    apply(plan(models_=["audit.AuditEntry"]))  # at least the current month and 2 ahead
    far = dt.datetime.now(dt.UTC) + dt.timedelta(days=3 * 365)
    AuditEntry.objects.bulk_create([AuditEntry(at=far, action="later") for _ in range(37)])
    samples = _scrape()
    assert _value(samples, "data_arch_default_partition_rows", table="audit_auditentry") == 37
    assert _value(samples, "data_arch_partition_months_ahead", table="audit_auditentry") >= 2
    assert _value(samples, "data_arch_partitions", table="audit_auditentry") >= 4


def test_replica_lag_in_bytes_while_replay_is_paused(replica_replay_paused):
    User.objects.bulk_create([User(username=f"unreplayed{i}", first_name="x" * 100) for i in range(50)])
    reset_health()
    verdict = health.refresh("replica", "default")
    samples = _scrape()
    assert verdict.lag_bytes and verdict.lag_bytes > 0
    assert _value(samples, "data_arch_replica_lag_bytes", alias="replica") > 0


def test_maintenance_runs_give_the_last_success():
    from data_arch.maintenance import maintain_partitions

    maintain_partitions()
    samples = _scrape()
    stamp = _value(samples, "data_arch_maintenance_last_success_timestamp_seconds",
                   job="partitions")
    assert stamp is not None
    assert abs(stamp - dt.datetime.now(dt.UTC).timestamp()) < 120
    assert _value(samples, "data_arch_maintenance_failures_24h", job="partitions") == 0
    assert _value(samples, "data_arch_maintenance_last_duration_seconds", job="partitions") >= 0


def test_index_drift_counts_partitions_missing_an_index():
    from django.db import connections

    from data_arch.partitioning import apply, plan

    apply(plan(models_=["audit.AuditEntry"]))
    assert _value(_scrape(), "data_arch_partition_index_drift", table="audit_auditentry") == 0
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = "
                       "'audit_auditentry'::regclass")
        (partitions,) = cursor.fetchone()
        # An index on the parent only: no partition has it yet (what an interrupted
        # AddPartitionedIndex leaves).
        cursor.execute("CREATE INDEX audit_drift_idx ON ONLY audit_auditentry (action)")
    try:
        assert _value(_scrape(), "data_arch_partition_index_drift",
                      table="audit_auditentry") == partitions
    finally:
        with connections["default"].cursor() as cursor:
            cursor.execute("DROP INDEX audit_drift_idx")
