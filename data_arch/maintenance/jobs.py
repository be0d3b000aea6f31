"""The maintenance jobs as library calls: what the Celery tasks, the commands and the admin run.

Each runs for one tenant (or the shared data), records the run (:mod:`.records`), sends its
signals (:mod:`data_arch.signals`) and returns a JSON-able summary. :func:`for_each_tenant`
runs a job over many tenants in-process; one tenant's failure never stops the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from data_arch.maintenance.records import record_run

logger = logging.getLogger("data_arch.maintenance")

__all__ = [
    "JOBS",
    "MaintenanceInputError",
    "MaintenanceTransientError",
    "TenantOutcome",
    "apply_recorded",
    "check_tenant_schemas",
    "for_each_tenant",
    "maintain_partitions",
    "refresh_replica_health",
    "resolve_tenants",
    "tenant_key",
    "transient_errors",
    "warm_caches",
]


class MaintenanceInputError(ValueError):
    """A job was given a tenant, model or warmer that does not exist; nothing was done."""


class MaintenanceTransientError(RuntimeError):
    """A job failed because a database or Redis could not be reached (the cause is chained):
    the same run may succeed later, and the Celery tasks retry it with backoff."""


def transient_errors() -> tuple[type[BaseException], ...]:
    """The errors that mean "a database or Redis is away for now", not "the job is wrong"."""
    from django.db import InterfaceError, OperationalError

    errors: list[type[BaseException]] = [OperationalError, InterfaceError,
                                         MaintenanceTransientError]
    try:
        from redis import exceptions
    except ImportError:
        pass
    else:
        errors += [exceptions.ConnectionError, exceptions.TimeoutError]
    return tuple(errors)


@dataclasses.dataclass
class TenantOutcome:
    tenant: str
    ok: bool
    summary: dict[str, Any] | None = None
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- tenants


def tenant_key(tenant: Any) -> str:
    """How runs and results name ``tenant``: its ``TENANCY.LOOKUP_FIELD`` value."""
    from data_arch import conf

    if tenant is None:
        return ""
    value = getattr(tenant, conf.tenancy_settings().lookup_field, None)
    if value is None:
        value = getattr(tenant, "schema_name", None) or getattr(tenant, "pk", None)
    return str(value)


def resolve_tenants(tenant: str | None = None, all_tenants: bool = False) -> list[Any] | None:
    """The tenant model instances a job runs for, by ``TENANCY.LOOKUP_FIELD``; None for the
    shared data. MaintenanceInputError names an unknown or malformed tenant."""
    from data_arch.tenancy import InvalidTenantError, iter_tenants, resolve_tenant_by

    if tenant is not None and all_tenants:
        raise MaintenanceInputError("pass a tenant or all_tenants, not both")
    if tenant is not None:
        if not isinstance(tenant, str) or not tenant:
            raise MaintenanceInputError(f"tenant must be a non-empty string, got {tenant!r}")
        try:
            return [resolve_tenant_by(tenant)]
        except InvalidTenantError as exc:
            raise MaintenanceInputError(f"tenant {tenant!r}: {exc}") from None
    if all_tenants:
        return list(iter_tenants())
    return None


@contextlib.contextmanager
def _in_tenant(tenant: Any) -> Iterator[None]:
    if tenant is None:
        yield
        return
    from data_arch.tenancy import tenant_context

    with tenant_context(tenant):
        yield


def for_each_tenant(
    job: Callable[..., dict[str, Any]], tenants: Iterable[Any], **kwargs: Any
) -> list[TenantOutcome]:
    """Run ``job(tenant=..., **kwargs)`` for each tenant in turn; a failure is reported with
    its tenant and the next tenant runs."""
    outcomes = []
    for tenant in tenants:
        key = tenant_key(tenant)
        try:
            outcomes.append(TenantOutcome(key, True, job(tenant=tenant, **kwargs)))
        except Exception as exc:  # noqa: BLE001 -- reported per tenant; the others go on
            outcomes.append(TenantOutcome(key, False, error=f"{type(exc).__name__}: {exc}"))
    return outcomes


# --------------------------------------------------------------------------- jobs


def apply_recorded(
    the_plan: Any, key: str = "", task_id: str = "", on_progress: Any = None,
    raise_on_failure: bool = True,
) -> Any:
    """``partitioning.apply(the_plan)`` with a run record and the partition signals: what
    every entry point (task, command, admin) calls. Actions the plan could not include
    (``TablePlan.blocked``) count as failures."""
    from data_arch.partitioning import apply
    from data_arch.signals import partitions_created, partitions_drained, partitions_retained

    with record_run("partitions", key, task_id) as run:
        result = apply(the_plan, on_progress=on_progress)
        done = set(result.done)
        created, drained, retained, mode = [], [], [], ""
        for table in the_plan.tables:
            for action in table.actions:
                if f"{table.schema}.{table.table}: {action.kind} {action.partition}" not in done:
                    continue
                if action.kind == "create":
                    created.append(action.partition)
                    if action.default_rows:
                        drained.append(action.partition)
                else:
                    retained.append(action.partition)
                    mode = action.kind
        failures = [str(f) for f in result.failures] + [
            f"{t.schema}.{t.table}: {blocked}" for t in the_plan.tables for blocked in t.blocked
        ]
        run.counts = {
            "done": len(result.done), "unchanged": len(result.skipped),
            "created": len(created), "drained": len(drained), "retained": len(retained),
            "rows_moved": result.rows_moved, "failures": len(failures),
        }
        if failures:
            run.outcome, run.error = "failed", "; ".join(failures)[:10_000]
            if raise_on_failure:
                raise RuntimeError(run.error)
    tables = [f"{t.schema}.{t.table}" for t in the_plan.tables]
    if created:
        partitions_created.send(sender="data_arch", tenant=key, tables=tables, partitions=created)
    if drained:
        partitions_drained.send(sender="data_arch", tenant=key, partitions=drained)
    if retained:
        partitions_retained.send(sender="data_arch", tenant=key, partitions=retained, mode=mode)
    result.counts = run.counts  # type: ignore[attr-defined]
    return result


def maintain_partitions(
    tenant: Any = None, models: list[str] | None = None, using: str = "default",
    task_id: str = "",
) -> dict[str, Any]:
    """Create partitions ahead, drain default partitions and apply retention, as configured,
    in ``tenant``'s schema (or the current one). Raises MaintenanceInputError for an unknown
    model before anything changes."""
    from data_arch.partitioning import PartitionError, plan

    key = tenant_key(tenant)
    with _in_tenant(tenant):
        try:
            the_plan = plan(models_=models, using=using)
        except PartitionError as exc:
            raise MaintenanceInputError(str(exc)) from None
        result = apply_recorded(the_plan, key, task_id)
    return {"tenant": key, "counts": result.counts, "actions": sorted(result.done)}


def warm_caches(
    tenant: Any = None, warmers: list[str] | None = None, task_id: str = ""
) -> dict[str, Any]:
    """Run the registered cache warmers (all, or ``warmers``) in ``tenant``'s context."""
    from data_arch.caching.warmers import WarmerError, run_warmers, select
    from data_arch.signals import warmers_run

    try:
        select(warmers)
    except WarmerError as exc:
        raise MaintenanceInputError(str(exc)) from None
    key = tenant_key(tenant)
    with record_run("warm_caches", key, task_id) as run, _in_tenant(tenant):
        raised: list[Exception] = []
        results = [
            {"warmer": r.warmer, "seconds": round(r.seconds, 4), "error": r.error}
            for r in run_warmers(warmers, on_error=lambda _name, exc: raised.append(exc))
        ]
        failed = [r for r in results if r["error"]]
        run.counts = {"warmers": len(results), "failed": len(failed)}
        if failed:
            message = "; ".join(f"{r['warmer']}: {r['error']}" for r in failed)
            away = [exc for exc in raised if isinstance(exc, transient_errors())]
            if away:  # the cache or the database was away, not the warmer wrong: run it again
                raise MaintenanceTransientError(message) from away[0]
            raise RuntimeError(message)
    warmers_run.send(sender="data_arch", tenant=key, results=results)
    return {"tenant": key, "warmers": results}


def refresh_replica_health(task_id: str = "") -> dict[str, Any]:
    """Probe every replica of every router set now and keep the verdicts (in this process;
    each process keeps its own, refreshed lazily). Returns each replica's state."""
    from data_arch.routing import health
    from data_arch.routing.sets import router_sets

    with record_run("replica_health", "", task_id) as run:
        replicas = {}
        for rset in router_sets():
            for alias in rset.replicas:
                verdict = health.refresh(alias, rset.primary)
                replicas[alias] = {
                    "healthy": verdict.healthy, "reason": verdict.reason,
                    "lag_bytes": verdict.lag_bytes, "lag_seconds": verdict.lag_seconds,
                }
        run.counts = {
            "replicas": len(replicas),
            "unhealthy": sum(1 for r in replicas.values() if not r["healthy"]),
        }
    return {"replicas": replicas}


def check_tenant_schemas(using: str = "default", task_id: str = "") -> dict[str, Any]:
    """Every tenant schema has every TENANT_APPS table (``data_arch.E105``): a schema that
    lacks one reads and writes the public table instead. Recorded as job ``tenant_schemas``;
    failed when any is missing (and the ``maintenance_failed`` signal is sent)."""
    from django.db import connections

    from data_arch import schema_backend
    from data_arch.tenancy.status import missing_tenant_tables

    if not schema_backend.is_schema_connection(connections[using]):
        return {"missing": {}}
    missing: dict[str, list[str]] = {}
    with record_run("tenant_schemas", "", task_id) as run:
        for schema, table in missing_tenant_tables(using):
            missing.setdefault(schema, []).append(table)
        run.counts = {"schemas_missing_tables": len(missing)}
        if missing:
            raise RuntimeError("; ".join(f"{schema} lacks {', '.join(tables)}"
                                         for schema, tables in sorted(missing.items())))
    return {"missing": missing}


#: job name -> (library call, whether it runs per tenant)
JOBS: dict[str, tuple[Callable[..., dict[str, Any]], bool]] = {
    "partitions": (maintain_partitions, True),
    "warm_caches": (warm_caches, True),
    "replica_health": (refresh_replica_health, False),
}
