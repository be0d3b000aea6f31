"""Celery task that runs cache warmers per tenant (Celery is imported only here).

Add ``app.autodiscover_tasks(["data_arch.caching"])`` to the project's Celery app, then schedule
``data_arch.caching.warm_caches`` in beat, e.g. ``{"task": "data_arch.caching.warm_caches",
"schedule": 300, "kwargs": {"all_tenants": True}}``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from celery import shared_task

from data_arch.caching.warmers import run_warmers, select
from data_arch.tenancy import iter_tenants, resolve_tenant, tenant_context


def warm(
    tenant: str | None = None, all_tenants: bool = False, warmers: list[str] | None = None
) -> list[dict[str, Any]]:
    """Run warmers for one tenant schema, every tenant, or (neither) the shared namespace."""
    select(warmers)  # unknown names fail before any work
    if tenant and all_tenants:
        raise ValueError("pass tenant= or all_tenants=True, not both")
    if all_tenants:
        tenants = list(iter_tenants())
    elif tenant:
        tenants = [resolve_tenant(tenant)]
    else:
        return [dataclasses.asdict(r) for r in run_warmers(warmers)]
    results = []
    for item in tenants:
        with tenant_context(item):
            results.extend(dataclasses.asdict(r) for r in run_warmers(warmers))
    return results


@shared_task(name="data_arch.caching.warm_caches", acks_late=True, ignore_result=False)
def warm_caches(
    tenant: str | None = None, all_tenants: bool = False, warmers: list[str] | None = None
) -> list[dict[str, Any]]:
    return warm(tenant=tenant, all_tenants=all_tenants, warmers=warmers)
