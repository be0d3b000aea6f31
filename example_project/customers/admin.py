from django.contrib import admin
from django_tenants.admin import TenantAdminMixin

from example_project.customers.models import Client, Domain


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0


@admin.register(Client)
class ClientAdmin(TenantAdminMixin, admin.ModelAdmin):
    list_display = ("name", "schema_name", "created_on")
    inlines = [DomainInline]
