from django.contrib import admin

from example_project.events.models import Event


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("occurred_at", "kind", "customer")
    list_filter = ("kind",)
    date_hierarchy = "occurred_at"
