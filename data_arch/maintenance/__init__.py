"""Scheduled maintenance: jobs as library calls, their run records, leases and the switch.

``data_arch.tasks`` runs these jobs from Celery, ``data_arch.celery.beat_schedule()`` schedules
them, and ``data_arch.W010`` (``manage.py check --database default``) reports a job without a
successful run for longer than ``CELERY.STALE_AFTER``.
"""

from data_arch.maintenance.jobs import (
    JOBS,
    MaintenanceInputError,
    MaintenanceTransientError,
    TenantOutcome,
    for_each_tenant,
    maintain_partitions,
    refresh_replica_health,
    resolve_tenants,
    warm_caches,
)
from data_arch.maintenance.records import Run, last_success, record_run

__all__ = [
    "JOBS",
    "MaintenanceInputError",
    "MaintenanceTransientError",
    "Run",
    "TenantOutcome",
    "for_each_tenant",
    "last_success",
    "maintain_partitions",
    "record_run",
    "refresh_replica_health",
    "resolve_tenants",
    "warm_caches",
]
