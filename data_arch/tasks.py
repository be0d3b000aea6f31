"""data_arch's Celery tasks: thin shells over :mod:`data_arch.maintenance.jobs`.

Add ``app.autodiscover_tasks(["data_arch"])`` to the project's Celery app (the example does) and
merge :func:`data_arch.celery.beat_schedule` into ``CELERY_BEAT_SCHEDULE``.

Every task is

* single-flight per job and tenant: a Redis lease renewed while it runs, lapsing within
  ``CELERY.LEASE_SECONDS`` if the worker dies; a second run meanwhile returns
  ``{"skipped": "held"}`` at once;
* capped: at most ``CELERY.TENANT_CONCURRENCY`` tenants of one job run at once across every
  worker (a Redis semaphore); a task that finds no free slot is retried shortly;
* ``acks_late`` with ``reject_on_worker_lost``: a worker killed mid-run leaves the message to
  be delivered again, and the jobs are idempotent, so the redelivered run finishes the work;
* retried with exponential backoff on transient database and Redis errors, a cache warmer
  that failed on one included (the Redis of the cache and the leases may be another than the
  broker's, and be away while the worker keeps running);
* once per interval when scheduled: beat's entries pass ``scheduled=True``, and such a run is
  skipped (``{"skipped": "recent"}``) when a run of the same job and tenant started within
  half the job's interval, so two beats, or a beat that fires an entry twice, do the work once;
* tenant-aware: ``all_tenants=True`` fans out one task per tenant, in batches of
  ``CELERY.TENANT_BATCH`` with up to ``CELERY.TENANT_JITTER`` seconds of random delay each;
  with neither ``tenant`` nor ``all_tenants`` a task sent inside a tenant context runs for
  that tenant, else for the shared data.

Each returns a JSON-able summary; bad input (an unknown tenant, model or warmer) returns
``{"ok": False, "error": ...}`` naming it, with nothing changed.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from data_arch.extras import require
from data_arch.maintenance.jobs import transient_errors

celery = require("celery", "data_arch.tasks")
require("redis.exceptions", "data_arch.tasks")

logger = logging.getLogger("data_arch.maintenance")

__all__ = ["maintain_partitions", "refresh_replica_health", "warm_caches"]

#: A database or Redis away for now (a warmer that failed on one included): retried.
TRANSIENT = transient_errors()

OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": TRANSIENT,
    "retry_backoff": 1,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 8,
}

#: How often a task that found every tenant slot taken is retried, at most.
SLOT_RETRIES = 10_000


def _settings() -> Any:
    from data_arch import conf

    return conf.celery_settings()


def _send_options() -> dict[str, Any]:
    queue = _settings().queue
    return {"queue": queue} if queue else {}


def _recent(task: Any, name: str, key: str, job: str, config: Any) -> Any:
    """When a scheduled run of ``name`` for ``key`` should be skipped: the start time of a run
    that started within half of ``job``'s interval (a second beat, or a beat that fired the
    entry twice), else None. The caller holds the job's lease, so two runs cannot both miss
    each other's record."""
    from data_arch.maintenance.records import started_within

    interval = config.intervals().get(job)
    if interval is None:
        return None
    return started_within(name, key, interval / 2, getattr(task.request, "id", None) or "")


def _skipped_recent(job: str, key: str, started: Any) -> dict[str, Any]:
    logger.info("maintenance %s%s ran at %s; this scheduled run is skipped", job,
                f" [{key}]" if key else "", started)
    return {"ok": True, "job": job, "tenant": key, "skipped": "recent",
            "last_started": started.isoformat()}


def _fan_out(
    task: Any, job: str, call: Any, tenants: list[Any], config: Any, extra: dict[str, Any],
    scheduled: bool,
) -> dict[str, Any]:
    """Enqueue one task per tenant, in batches with jitter; recorded as job ``<job>.fan_out``
    and single-flight like the jobs themselves."""
    from data_arch.maintenance import locks
    from data_arch.maintenance.jobs import tenant_key
    from data_arch.maintenance.records import record_run

    name, task_id = f"{job}.fan_out", getattr(task.request, "id", None) or ""
    with locks.lease(name, config.lease_seconds, task_id or None) as held:
        if not held:
            return {"ok": True, "job": job, "tenant": "", "skipped": "held"}
        if scheduled and (started := _recent(task, name, "", job, config)) is not None:
            return _skipped_recent(job, "", started)
        with record_run(name, "", task_id) as run:
            summary: dict[str, Any] = {}
            if job == "partitions":
                # Row-level tenants share the public tables: maintained once, by the shared run.
                tenants = [t for t in tenants if getattr(t, "schema_name", None)]
                summary["shared"] = _run_one(task, job, call, None, config, extra, scheduled)
                summary["tenant_schemas"] = _tenant_schemas(task)
            keys = [tenant_key(t) for t in tenants]
            flags = {"scheduled": True} if scheduled else {}
            for number, key in enumerate(keys):
                batch = number // config.tenant_batch
                countdown = batch * config.tenant_jitter + random.uniform(0, config.tenant_jitter)
                task.apply_async(kwargs={"tenant": key, **extra, **flags}, countdown=countdown,
                                 **_send_options())
            run.counts = {"tenants": len(keys)}
    return {"job": job, "fanned_out": len(keys), "tenants": keys, **summary}


def _run(
    task: Any, job: str, tenant: str | None, all_tenants: bool, scheduled: bool = False,
    **kwargs: Any,
) -> Any:
    from data_arch.maintenance import locks
    from data_arch.maintenance.jobs import JOBS, MaintenanceInputError, resolve_tenants
    from data_arch.tenancy import current_tenant

    config = _settings()
    call, per_tenant = JOBS[job]
    try:
        tenants = resolve_tenants(tenant, all_tenants) if per_tenant else None
    except MaintenanceInputError as exc:
        return {"ok": False, "job": job, "error": str(exc)}
    if all_tenants:
        return _fan_out(task, job, call, tenants or [], config, kwargs, scheduled)
    target = tenants[0] if tenants else None
    if target is None and per_tenant and current_tenant() is not None:
        target = current_tenant()
    if target is not None:
        owner = getattr(task.request, "id", None)
        with locks.semaphore_slot(
            job, config.tenant_concurrency, config.lease_seconds, owner
        ) as slot:
            if not slot:
                raise task.retry(countdown=random.uniform(0.2, 1.0), max_retries=SLOT_RETRIES)
            return _run_one(task, job, call, target, config, kwargs, scheduled)
    return _run_one(task, job, call, None, config, kwargs, scheduled)


def _tenant_schemas(task: Any) -> Any:
    """The schema sweep's check that no tenant schema lacks a tenant table (data_arch.E105)."""
    from data_arch.maintenance.jobs import check_tenant_schemas

    try:
        return check_tenant_schemas(task_id=getattr(task.request, "id", None) or "")
    except RuntimeError as exc:  # recorded and signalled; the fan-out goes on
        return {"ok": False, "error": str(exc)}


def _run_one(
    task: Any, job: str, call: Any, tenant: Any, config: Any, kwargs: dict, scheduled: bool
) -> Any:
    from data_arch.maintenance import locks
    from data_arch.maintenance.jobs import MaintenanceInputError, tenant_key

    key = tenant_key(tenant)
    task_id = getattr(task.request, "id", None) or ""
    with locks.lease(f"{job}:{key}", config.lease_seconds, task_id or None) as held:
        if not held:
            logger.info("maintenance %s%s is already running; skipped", job,
                        f" [{key}]" if key else "")
            return {"ok": True, "job": job, "tenant": key, "skipped": "held"}
        if scheduled and (started := _recent(task, job, key, job, config)) is not None:
            return _skipped_recent(job, key, started)
        arguments = dict(kwargs, task_id=task_id)
        if tenant is not None:
            arguments["tenant"] = tenant
        try:
            return {"ok": True, "job": job, **call(**arguments)}
        except MaintenanceInputError as exc:
            return {"ok": False, "job": job, "tenant": key, "error": str(exc)}


@celery.shared_task(name="data_arch.tasks.maintain_partitions", **OPTIONS)
def maintain_partitions(
    self: Any, tenant: str | None = None, all_tenants: bool = False,
    models: list[str] | None = None, scheduled: bool = False,
) -> Any:
    """Partition maintenance (create ahead, drain, retention) for a tenant, all, or shared."""
    return _run(self, "partitions", tenant, all_tenants, scheduled, models=models)


@celery.shared_task(name="data_arch.tasks.warm_caches", **OPTIONS)
def warm_caches(
    self: Any, tenant: str | None = None, all_tenants: bool = False,
    warmers: list[str] | None = None, scheduled: bool = False,
) -> Any:
    """Run the registered cache warmers for a tenant, all tenants, or the shared namespace."""
    return _run(self, "warm_caches", tenant, all_tenants, scheduled, warmers=warmers)


@celery.shared_task(name="data_arch.tasks.refresh_replica_health", **OPTIONS)
def refresh_replica_health(self: Any, scheduled: bool = False) -> Any:
    """Probe every replica now (the worker's own verdicts) and record their state."""
    return _run(self, "replica_health", None, False, scheduled)
