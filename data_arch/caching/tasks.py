"""Celery task that runs cache warmers per tenant (Celery is imported only here).

Add ``app.autodiscover_tasks(["data_arch.caching"])`` to the project's Celery app, then schedule
``data_arch.caching.warm_caches`` in beat, e.g. ``{"task": "data_arch.caching.warm_caches",
"schedule": 300, "kwargs": {"all_tenants": True}}``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from data_arch.caching.warmers import warm_tenants
from data_arch.extras import require

shared_task = require("celery", "data_arch.caching.tasks").shared_task


@shared_task(name="data_arch.caching.warm_caches", ignore_result=False)
def warm_caches(
    tenant: str | None = None, all_tenants: bool = False, warmers: list[str] | None = None
) -> list[dict[str, Any]] | None:
    """Run warmers per tenant; None when a run for the same selection is still going."""
    results = warm_tenants(tenant=tenant, all_tenants=all_tenants, warmers=warmers)
    return None if results is None else [dataclasses.asdict(r) for r in results]
