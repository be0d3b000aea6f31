"""Prometheus alert rules for data_arch's metrics, with thresholds from the project's settings.

``manage.py data_arch_alerts > alerts.yml`` writes them for the project's own ``DATA_ARCH``;
``deploy/prometheus/alerts.yml`` is the example project's copy (a test keeps it current).
Each rule carries a one-line runbook in its annotations.
"""

from __future__ import annotations

import dataclasses
import json

__all__ = ["Rule", "render", "rules"]


@dataclasses.dataclass(frozen=True)
class Rule:
    alert: str
    expr: str
    duration: str
    severity: str
    summary: str
    runbook: str


def _seconds(value: float) -> str:
    return f"{int(value)}s"


def rules() -> list[Rule]:
    """The rules for the current settings."""
    from data_arch import conf

    router, partitions, celery = (
        conf.router_settings(), conf.partition_settings(), conf.celery_settings()
    )
    # Warn at half the router's own limit: past the limit the router already stops reading
    # there, so the alert must come before reads pile onto the primary.
    lag_warn = router.max_lag_seconds / 2
    stale = celery.stale_seconds(celery.partitions_interval)
    found = [
        Rule(
            "DataArchReplicaUnhealthy",
            "data_arch_replica_healthy == 0",
            "2m", "critical",
            "Replica {{ $labels.alias }} is skipped by the router",
            "The router reads the primary instead. Check the replica is up, is a standby and "
            "is receiving WAL (pg_stat_wal_receiver); the reason is in the data_arch.routing log.",
        ),
        Rule(
            "DataArchReplicaLagging",
            f"data_arch_replica_lag_seconds > {lag_warn:g}",
            "2m", "warning",
            "Replica {{ $labels.alias }} is more than half MAX_LAG_SECONDS behind",
            f"At ROUTER.MAX_LAG_SECONDS ({router.max_lag_seconds:g}s) the router stops reading "
            "there. Look for long queries or replay conflicts on the replica, and I/O on it.",
        ),
        Rule(
            "DataArchPartitionsRunningOut",
            f"data_arch_partition_months_ahead < {partitions.ahead}",
            "1h", "warning",
            "{{ $labels.table }} has partitions for fewer months ahead than PARTITIONS.AHEAD",
            f"PARTITIONS.AHEAD is {partitions.ahead}. Is scheduled maintenance running? Run "
            "`manage.py partitions apply --all-tenants` and look at its failures.",
        ),
        Rule(
            "DataArchCurrentMonthUncovered",
            "data_arch_partition_months_ahead < 0",
            "5m", "critical",
            "{{ $labels.table }}: the current month has no partition in some schema",
            "New rows go to the default partition. Run `manage.py partitions apply "
            "--all-tenants` now.",
        ),
        Rule(
            "DataArchRowsInDefaultPartition",
            "data_arch_default_partition_rows > 0",
            "30m", "warning",
            "Rows of {{ $labels.table }} sit in a default partition",
            "Rows outside every month partition: `manage.py partitions plan` shows the drain; "
            "apply it before the default grows (attaching a month scans it).",
        ),
        Rule(
            "DataArchPendingDetach",
            "data_arch_partition_pending_detaches > 0",
            "1h", "warning",
            "{{ $labels.table }} has a DETACH ... CONCURRENTLY left pending",
            "An interrupted retention: the next `partitions apply` finishes it with FINALIZE.",
        ),
        Rule(
            "DataArchMaintenanceStale",
            "time() - data_arch_maintenance_last_success_timestamp_seconds{job=\"partitions\"}"
            f" > {stale:g}",
            "5m", "critical",
            "Partition maintenance has not succeeded for longer than CELERY.STALE_AFTER",
            f"Expected every {celery.partitions_interval:g}s. Check Celery beat and the worker, "
            "and the failed runs in the admin (Maintenance runs).",
        ),
        Rule(
            "DataArchMaintenanceNeverRan",
            "absent(data_arch_maintenance_last_success_timestamp_seconds{job=\"partitions\"})",
            _seconds(stale), "critical",
            "No successful partition maintenance is recorded",
            "Merge data_arch.celery.beat_schedule() into CELERY_BEAT_SCHEDULE and run a beat.",
        ),
        Rule(
            "DataArchMaintenanceFailing",
            "data_arch_maintenance_failures_24h > 0",
            "5m", "warning",
            "Failed {{ $labels.job }} runs in the last 24 hours",
            "The runs' errors are in the admin (Maintenance runs), with their tenants.",
        ),
        Rule(
            "DataArchCacheErrors",
            "sum by (alias) (rate(data_arch_cache_events_total{event=\"error\"}[5m])) / "
            "clamp_min(sum by (alias) (rate(data_arch_cache_events_total{event=~\"hit|miss\"}"
            "[5m])), 0.001) > 0.01",
            "5m", "warning",
            "More than 1% of cache reads on {{ $labels.alias }} fail",
            "Reads fall back to the loaders (the database). Check Redis: reachable, memory, "
            "latency.",
        ),
    ]
    return found


def render(found: list[Rule] | None = None) -> str:
    """The rules as a Prometheus rules file (YAML)."""
    lines = ["# data_arch alert rules (manage.py data_arch_alerts).", "groups:",
             "  - name: data_arch", "    rules:"]
    for rule in found if found is not None else rules():
        lines += [
            f"      - alert: {rule.alert}",
            f"        expr: {json.dumps(rule.expr)}",
            f"        for: {rule.duration}",
            "        labels:",
            f"          severity: {rule.severity}",
            "        annotations:",
            f"          summary: {json.dumps(rule.summary)}",
            f"          runbook: {json.dumps(rule.runbook)}",
        ]
    return "\n".join(lines) + "\n"
