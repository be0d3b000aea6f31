from django.contrib import admin

from example_project.audit.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ("at", "action", "tenant_schema", "actor")
    list_filter = ("action",)
    date_hierarchy = "at"
