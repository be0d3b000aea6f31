"""Celery task that runs a backfill, once or per tenant (Celery is imported only here).

Add ``app.autodiscover_tasks(["data_arch.backfills"])`` to the project's Celery app. A run stops
when it is paused or cancelled; send the task again after ``resume``. Two workers given the same
backfill never apply a batch twice: each batch locks the cursor row and checks its position.

The task is ``acks_late`` with ``reject_on_worker_lost``: a worker killed mid-run leaves the
message to be delivered again, and the redelivered run continues from the cursor (the batch in
flight rolled back with the dead connection). It is retried with backoff when the database is
unreachable; a batch that raises is not retried (the run stops at it, ``BackfillFailed``).
"""

from __future__ import annotations

from typing import Any

from django.db import InterfaceError, OperationalError

from data_arch.extras import require

shared_task = require("celery", "data_arch.backfills.tasks").shared_task


@shared_task(
    name="data_arch.backfills.run", ignore_result=False, acks_late=True,
    reject_on_worker_lost=True, autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=1, retry_backoff_max=60, retry_jitter=True, max_retries=8,
)
def run_backfill(
    name: str, tenant: str | None = None, all_tenants: bool = False, restart: bool = False
) -> list[dict[str, Any]]:
    """Run the backfill ``name`` for one tenant schema, every tenant, or (neither) shared data."""
    from data_arch.backfills.runner import run
    from data_arch.tenancy import iter_tenants, resolve_tenant, tenant_context

    if tenant and all_tenants:
        raise ValueError("pass tenant= or all_tenants=True, not both")
    if not (tenant or all_tenants):
        return [p.as_dict() for p in run(name, restart=restart)]
    tenants = list(iter_tenants()) if all_tenants else [resolve_tenant(tenant)]
    results = []
    for item in tenants:
        with tenant_context(item):
            results.extend(p.as_dict() for p in run(name, restart=restart))
    return results
