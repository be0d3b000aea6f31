"""data_arch's admin section: maintenance runs, backfills (progress, pause/resume/cancel),
partitioned tables (with plan and apply), replicas, cache namespaces and tenants.

The pages read the same library calls as the commands (``partitioning.status/plan/apply``,
``routing.health``, ``caching.invalidate_tenant``, ``maintenance.records``, ``backfills``);
nothing is computed twice. Viewing needs the page's ``view`` permission, acting its ``change``
permission.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from data_arch.models import (
    BackfillCursor,
    CacheNamespace,
    MaintenanceRun,
    PartitionedTable,
    ReplicaStatus,
    TenantHealth,
)


@admin.register(MaintenanceRun)
class MaintenanceRunAdmin(admin.ModelAdmin):
    list_display = ("job", "tenant", "outcome", "started_at", "finished_at", "seconds", "runner")
    list_filter = ("job", "outcome")
    search_fields = ("tenant", "error", "task_id")
    date_hierarchy = "started_at"
    readonly_fields = [f.name for f in MaintenanceRun._meta.fields]

    @admin.display(description="seconds")
    def seconds(self, run: MaintenanceRun) -> str:
        return "" if run.duration is None else f"{run.duration:.2f}"

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


@admin.register(BackfillCursor)
class BackfillAdmin(admin.ModelAdmin):
    """One row per backfill, tenant and partition: its progress as ``backfill status`` shows
    it, with the command's pause, resume and cancel as actions (``change`` permission)."""

    list_display = ("name", "tenant", "partition", "state", "percent", "rows_done",
                    "rows_estimated", "rate", "eta", "batches", "batch_size", "lock_timeouts",
                    "throttled", "max_lag", "updated_at")
    list_filter = ("state", "name")
    search_fields = ("name", "tenant", "partition", "error")
    readonly_fields = tuple(f.name for f in BackfillCursor._meta.fields)
    actions = ("pause", "resume", "cancel")

    @admin.display(description="done")
    def percent(self, row: BackfillCursor) -> str:
        from data_arch.backfills.runner import Progress

        value = Progress.of(row).percent
        return "-" if value is None else f"{value:.1f}%"

    @admin.display(description="rows/s")
    def rate(self, row: BackfillCursor) -> str:
        return "-" if row.rate is None else f"{row.rate:,.0f}"

    @admin.display(description="ETA")
    def eta(self, row: BackfillCursor) -> str:
        return _duration(row.eta_seconds)

    @admin.display(description="throttled")
    def throttled(self, row: BackfillCursor) -> str:
        return _duration(row.throttled_seconds)

    @admin.display(description="max replica lag")
    def max_lag(self, row: BackfillCursor) -> str:
        return f"{row.max_lag_bytes / 1024 / 1024:.1f} MiB"

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False  # deleting a cursor would start the backfill over: `backfill run --restart`

    def _act(self, request: Any, queryset: Any, call: Any, verb: str) -> None:
        from data_arch.backfills import BackfillError

        pairs = sorted(set(queryset.values_list("name", "tenant")))
        changed = 0
        for name, tenant in pairs:
            try:
                changed += call(name, tenant)
            except BackfillError as exc:  # e.g. a backfill no longer registered
                self.message_user(request, str(exc), messages.ERROR)
        self.message_user(request, f"{verb} {changed} cursor(s) of "
                          f"{', '.join(f'{n} @ {t}' if t else n for n, t in pairs)}.",
                          messages.SUCCESS if changed else messages.WARNING)

    @admin.action(description="Pause the selected backfills (a running batch finishes)",
                  permissions=["change"])
    def pause(self, request: Any, queryset: Any) -> None:
        from data_arch.backfills import runner

        self._act(request, queryset, runner.pause, "Paused")

    @admin.action(description="Resume the selected backfills", permissions=["change"])
    def resume(self, request: Any, queryset: Any) -> None:
        from data_arch.backfills import runner

        self._act(request, queryset, runner.resume, "Resumed")

    @admin.action(description="Cancel the selected backfills", permissions=["change"])
    def cancel(self, request: Any, queryset: Any) -> None:
        from data_arch.backfills import runner

        self._act(request, queryset, runner.cancel, "Cancelled")


class _PageAdmin(admin.ModelAdmin):
    """A model-less page: its changelist is the page; nothing to add or delete."""

    template: str = ""

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def _require(self, request: Any, action: str) -> None:
        codename = f"data_arch.{action}_{self.model._meta.model_name}"
        if not request.user.has_perm(codename):
            raise PermissionDenied(f"needs the permission {codename}")

    def _render(self, request: Any, context: dict[str, Any]) -> TemplateResponse:
        return TemplateResponse(request, self.template, {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": self.model._meta.verbose_name_plural.capitalize(),
            "can_change": self.has_change_permission(request),
            **context,
        })

    def _back(self, request: Any, query: str = "") -> HttpResponseRedirect:
        url = reverse(f"admin:data_arch_{self.model._meta.model_name}_changelist")
        return HttpResponseRedirect(url + (f"?{query}" if query else ""))


# --------------------------------------------------------------------------- partitions


@contextlib.contextmanager
def _in_schema(schema: str) -> Iterator[None]:
    """The tenant context of ``schema`` (nothing for the public schema)."""
    from data_arch.tenancy import InvalidTenantError, resolve_tenant, tenant_context
    from data_arch.tenancy.registry import public_schema_name

    if not schema or schema == public_schema_name():
        yield
        return
    try:
        tenant = resolve_tenant(schema)
    except InvalidTenantError as exc:
        raise ValueError(str(exc)) from None
    with tenant_context(tenant):
        yield


def plan_digest(the_plan: Any) -> str:
    """What identifies a plan: its tables' actions (not row counts, which move on their own)."""
    shape = [
        [t.schema, t.table, [[a.kind, a.partition, a.start.isoformat(), a.end.isoformat()]
                             for a in t.actions]]
        for t in the_plan.tables
    ]
    return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]


@admin.register(PartitionedTable)
class PartitionedTableAdmin(_PageAdmin):
    template = "admin/data_arch/partitions.html"

    def changelist_view(self, request: Any, extra_context: Any = None) -> Any:
        from data_arch.partitioning import PartitionError, apply, partitioned_models, plan, status
        from data_arch.tenancy.registry import public_schema_name

        self._require(request, "view")
        schema = request.POST.get("schema") or request.GET.get("schema") or public_schema_name()
        model = request.POST.get("model") or request.GET.get("model") or None
        labels = sorted(m._meta.label for m in partitioned_models())
        if model is not None and model not in labels:
            messages.error(request, f"{model} is not a partitioned model: nothing to plan.")
            return self._back(request, f"schema={schema}")
        chosen = [model] if model else None
        context: dict[str, Any] = {"schema": schema, "model": model or "", "models": labels}
        try:
            with _in_schema(schema):
                if request.method == "POST":
                    self._require(request, "change")
                    current = plan(models_=chosen)
                    if plan_digest(current) != request.POST.get("digest"):
                        messages.error(request, "The plan changed since it was shown (another "
                                       "run or a migration changed the catalog); nothing was "
                                       "applied. Review the new plan.")
                        return self._back(request, f"schema={schema}&plan=1"
                                          + (f"&model={model}" if model else ""))
                    result = apply(current)
                    level = messages.SUCCESS if result.ok else messages.ERROR
                    messages.add_message(
                        request, level,
                        f"Applied {len(result.done)} action(s) in {schema}"
                        + (f"; {len(result.failures)} failed: "
                           + "; ".join(str(f) for f in result.failures) if result.failures else "")
                    )
                    return self._back(request, f"schema={schema}")
                context["tables"] = status(models_=chosen)
                if request.GET.get("plan"):
                    the_plan = plan(models_=chosen)
                    context["plan"] = the_plan
                    context["digest"] = plan_digest(the_plan)
        except (PartitionError, ValueError) as exc:
            messages.error(request, str(exc))
            context.setdefault("tables", [])
        context["schemas"] = self._schemas()
        return self._render(request, context)

    def _schemas(self) -> list[str]:
        from data_arch.tenancy import iter_tenants
        from data_arch.tenancy.registry import public_schema_name

        schemas = [public_schema_name()]
        for tenant in iter_tenants():
            name = getattr(tenant, "schema_name", None)
            if name and name not in schemas:
                schemas.append(name)
            if len(schemas) > 500:
                break
        return schemas


# --------------------------------------------------------------------------- replicas


@admin.register(ReplicaStatus)
class ReplicaStatusAdmin(_PageAdmin):
    template = "admin/data_arch/replicas.html"

    def changelist_view(self, request: Any, extra_context: Any = None) -> Any:
        from data_arch.routing import health
        from data_arch.routing.sets import router_sets

        self._require(request, "view")
        if request.method == "POST":
            self._require(request, "change")
        rows = []
        for rset in router_sets():
            for alias in rset.replicas:
                if request.method == "POST":
                    verdict = health.refresh(alias, rset.primary)
                else:
                    verdict = health.health_of(alias, rset.primary)
                failures, since, until = health.schedule(alias)
                rows.append({"alias": alias, "primary": rset.primary, "verdict": verdict,
                             "failures": failures,
                             "since": None if since is None else round(since, 1),
                             "until": None if until is None else round(until, 1)})
        if request.method == "POST":
            messages.success(request, f"Probed {len(rows)} replica(s) now.")
            return self._back(request)
        return self._render(request, {"replicas": rows})


# --------------------------------------------------------------------------- cache


@admin.register(CacheNamespace)
class CacheNamespaceAdmin(_PageAdmin):
    template = "admin/data_arch/cache.html"

    def changelist_view(self, request: Any, extra_context: Any = None) -> Any:
        from data_arch.caching import invalidate_tenant
        from data_arch.maintenance.jobs import MaintenanceInputError, resolve_tenants

        self._require(request, "view")
        if request.method == "POST":
            self._require(request, "change")
            value = request.POST.get("tenant", "").strip()
            try:
                tenants = resolve_tenants(value) if value else None
            except MaintenanceInputError as exc:
                messages.error(request, f"Nothing invalidated: {exc}")
                return self._back(request)
            invalidate_tenant(tenants[0] if tenants else None)
            messages.success(request, f"Invalidated the cache namespace of {value or 'shared data'}.")
            return self._back(request)
        return self._render(request, {})


# --------------------------------------------------------------------------- tenants


@admin.register(TenantHealth)
class TenantHealthAdmin(_PageAdmin):
    template = "admin/data_arch/tenants.html"
    per_page = 50

    def changelist_view(self, request: Any, extra_context: Any = None) -> Any:
        from django.core.paginator import Paginator

        from data_arch.maintenance.jobs import tenant_key
        from data_arch.partitioning import status
        from data_arch.tenancy import iter_tenants, tenant_context

        self._require(request, "view")
        page = Paginator(list(iter_tenants()), self.per_page).get_page(request.GET.get("page"))
        rows = []
        for tenant in page:
            row: dict[str, Any] = {"key": tenant_key(tenant), "tables": [], "error": ""}
            if getattr(tenant, "schema_name", None):
                try:
                    with tenant_context(tenant):
                        row["tables"] = status()
                except Exception as exc:  # noqa: BLE001 -- shown on the page, the others go on
                    row["error"] = f"{type(exc).__name__}: {exc}"
            last = MaintenanceRun.objects.filter(tenant=row["key"]).order_by("-started_at").first()
            row["last_run"] = last
            rows.append(row)
        return self._render(request, {"rows": rows, "page": page})
