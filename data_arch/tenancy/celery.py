"""Celery: the current tenant travels in each task message and is restored in the worker.

* ``before_task_publish`` adds a ``data_arch_tenant`` header (tenant id and schema) to every
  message published while a tenant is active -- in the web process, and in the worker, where a
  task's chain, group or chord steps are published from inside the task's restored context;
* ``task_prerun`` / ``task_postrun`` enter and leave that tenant's :func:`tenant_context` around
  the task (schema switched on every alias, RLS setting, scoped managers, log records);
* the header is checked against the tenant registry before it is used: a primary key and a
  schema name that belong to different tenants (or to none) are refused like a malformed header;
* a task decorated with :func:`requires_tenant` that arrives without a tenant fails with
  :class:`NoTenantError` (with a refused header: :class:`InvalidTenantError`) before its body
  runs: it never runs in the public schema or unscoped.

Celery is imported only by :func:`install`, which data_arch calls when Celery is installed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from data_arch.tenancy.context import (
    InvalidTenantError,
    NoTenantError,
    Tenant,
    current_tenant,
    tenant_context,
)

__all__ = ["HEADER", "install", "requires_tenant", "tenant_from_header", "tenant_header"]

HEADER = "data_arch_tenant"

F = TypeVar("F", bound=Callable[..., Any])

# task id -> the entered tenant_context, left again in task_postrun.
_active: dict[str, Any] = {}


def tenant_header(tenant: Tenant) -> dict[str, Any]:
    return {"pk": tenant.pk, "schema_name": tenant.schema_name}


def tenant_from_header(value: Any) -> Tenant | None:
    """The :class:`Tenant` a message header carries; InvalidTenantError when it is malformed."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"pk", "schema_name"}:
        raise InvalidTenantError(f"malformed {HEADER} task header: {value!r}")
    return Tenant(pk=value.get("pk"), schema_name=value.get("schema_name"))


def _on_publish(sender: Any = None, headers: dict | None = None, **kwargs: Any) -> None:
    tenant = current_tenant()
    if tenant is not None and headers is not None and HEADER not in headers:
        headers[HEADER] = tenant_header(tenant)


def _header_of(task: Any) -> Any:
    request = task.request
    value = getattr(request, HEADER, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(HEADER)
    return value


def _on_prerun(sender: Any = None, task_id: str | None = None, task: Any = None, **kwargs: Any):
    if task is None or task_id is None:
        return
    try:
        tenant = tenant_from_header(_header_of(task))
        if tenant is not None:
            from data_arch.tenancy.registry import verify_tenant

            verify_tenant(tenant)
    except InvalidTenantError as exc:
        # Recorded for requires_tenant(); a malformed tenant never becomes "no tenant".
        task.request.data_arch_tenant_error = str(exc)
        return
    if tenant is None:
        return
    context = tenant_context(tenant)
    context.__enter__()
    _active[task_id] = context


def _on_postrun(sender: Any = None, task_id: str | None = None, **kwargs: Any) -> None:
    context = _active.pop(task_id, None) if task_id is not None else None
    if context is not None:
        context.__exit__(None, None, None)


def _refused_header() -> str | None:
    from celery import current_task

    request = getattr(current_task, "request", None)
    return getattr(request, "data_arch_tenant_error", None)


def requires_tenant(func: F) -> F:
    """Mark a task body as tenant-only: without a tenant it raises NoTenantError at once.

        @shared_task
        @requires_tenant
        def send_invoice(invoice_id): ...
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_tenant() is None:
            refused = _refused_header()
            if refused is not None:
                raise InvalidTenantError(
                    f"task {func.__module__}.{func.__qualname__} was refused its tenant: "
                    f"{refused}; nothing was run"
                )
            raise NoTenantError(
                f"task {func.__module__}.{func.__qualname__} needs a tenant and its message "
                "carried none: send it from inside tenant_context(tenant); nothing was run"
            )
        return func(*args, **kwargs)

    wrapper.data_arch_requires_tenant = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def install() -> None:
    """Connect the Celery signals (idempotent). Called by data_arch when Celery is installed."""
    from celery import signals

    signals.before_task_publish.connect(_on_publish, weak=False, dispatch_uid=f"{HEADER}.publish")
    signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid=f"{HEADER}.prerun")
    signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid=f"{HEADER}.postrun")
