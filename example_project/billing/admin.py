"""Billing in the admin of each tenant's site: the request's tenant scopes every list and form."""

from django.contrib import admin

from example_project.billing.models import Account, Contact, Invoice


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ("name", "email", "created_at")
    search_fields = ("name", "email")


@admin.register(Invoice)
class InvoiceAdmin(admin.ModelAdmin):
    list_display = ("number", "account", "status", "total_cents", "due_on")
    list_filter = ("status",)
    list_select_related = ("account",)


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    list_display = ("name", "email", "account")
