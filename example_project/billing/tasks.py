"""Tenant-scoped tasks: the tenant arrives in the message and scopes everything they touch."""

import datetime

from celery import shared_task
from django.db import connection

from data_arch.tenancy import require_tenant
from data_arch.tenancy.celery import requires_tenant
from example_project.billing.models import Account, Invoice


@shared_task
@requires_tenant
def invoice_numbers(previous: list | None = None) -> list:
    """The invoice numbers this task can see, appended to ``previous`` (for chains)."""
    tenant = require_tenant()
    seen = {
        "tenant": tenant.pk,
        "schema": connection.schema_name,
        "numbers": sorted(Invoice.objects.values_list("number", flat=True)),
    }
    return [*(previous or []), seen]


@shared_task
@requires_tenant
def open_invoice(account_id: int, number: str, total_cents: int) -> int:
    """Open an invoice on one of the current tenant's accounts; returns its id."""
    account = Account.objects.get(pk=account_id)
    today = datetime.date.today()
    invoice = Invoice.objects.create(
        account=account, number=number, total_cents=total_cents,
        issued_on=today, due_on=today + datetime.timedelta(days=30),
    )
    return invoice.pk
