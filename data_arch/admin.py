"""Admin pages of data_arch: the maintenance runs (read-only: they are a record)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin

from data_arch.models import MaintenanceRun


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
