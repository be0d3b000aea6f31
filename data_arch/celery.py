"""The beat schedule of data_arch's maintenance, for a project's ``CELERY_BEAT_SCHEDULE``::

    from data_arch.celery import beat_schedule

    CELERY_BEAT_SCHEDULE = {**beat_schedule(), **your_entries}

Intervals come from ``DATA_ARCH["CELERY"]`` and entries go to ``CELERY.QUEUE`` when it is set.
Works with Celery's default scheduler and with django-celery-beat's ``DatabaseScheduler``
(which copies the entries into its tables). One entry per job fans out over every tenant, so
10,000 tenants are 10,000 short tasks in batches, not 10,000 beat rows. Two beats running by
mistake send each entry twice: the entries pass ``scheduled=True``, and a scheduled run that
finds a run of the same job and tenant started within half the interval (in the run records)
is skipped, so the work is done once per interval; the leases keep overlapping runs apart.
"""

from __future__ import annotations

from typing import Any

__all__ = ["beat_schedule"]


def beat_schedule() -> dict[str, dict[str, Any]]:
    """The entries, keyed ``data_arch.<job>``."""
    from data_arch import conf
    from data_arch.tenancy.registry import tenant_model_label

    config = conf.celery_settings()
    try:
        tenants = tenant_model_label() is not None
    except conf.SettingError:
        tenants = False
    # ``scheduled``: a run that finds one of the same job started within half the interval
    # (a second beat, a beat that fired twice) is skipped.
    per_tenant = {"all_tenants": True, "scheduled": True} if tenants else {"scheduled": True}
    entries: dict[str, dict[str, Any]] = {
        "data_arch.maintain_partitions": {
            "task": "data_arch.tasks.maintain_partitions",
            "schedule": config.partitions_interval,
            "kwargs": per_tenant,
        },
    }
    if config.warm_interval is not None:
        entries["data_arch.warm_caches"] = {
            "task": "data_arch.tasks.warm_caches",
            "schedule": config.warm_interval,
            "kwargs": per_tenant,
        }
    if config.health_interval is not None:
        entries["data_arch.refresh_replica_health"] = {
            "task": "data_arch.tasks.refresh_replica_health",
            "schedule": config.health_interval,
            "kwargs": {"scheduled": True},
        }
    for entry in entries.values():
        # A run that waited longer than its interval is superseded by the next one.
        entry["options"] = {"expires": entry["schedule"]}
        if config.queue:
            entry["options"]["queue"] = config.queue
    return entries
