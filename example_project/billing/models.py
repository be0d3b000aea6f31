"""Billing: shared tables in the public schema, one tenant column, Row-Level Security.

Where ``shop`` keeps each tenant's rows in the tenant's own schema, these tables hold every
tenant's rows side by side. Every query filters by the current tenant, PostgreSQL's policy
filters again, and every key includes the tenant so Citus could distribute them by tenant.
"""

from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower

from data_arch.tenancy.models import TenantForeignKey, TenantModel, tenant_index, tenant_unique


class Account(TenantModel):
    name = models.CharField(max_length=200)
    email = models.EmailField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta(TenantModel.Meta):
        constraints = [
            # Case-insensitive e-mail, unique per tenant (a functional unique index).
            tenant_unique(Lower("email"), name="billing_account_email_ci_uniq"),
        ]
        indexes = [tenant_index("-created_at", name="billing_acc_created_idx")]

    def __str__(self) -> str:
        return self.name


class Invoice(TenantModel):
    class Status(models.TextChoices):
        OPEN = "open"
        PAID = "paid"
        VOID = "void"

    account = TenantForeignKey(Account, on_delete=models.CASCADE, related_name="invoices")
    number = models.CharField(max_length=32)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    total_cents = models.BigIntegerField()
    issued_on = models.DateField()
    due_on = models.DateField()

    class Meta(TenantModel.Meta):
        constraints = [tenant_unique("number", name="billing_invoice_number_uniq")]
        indexes = [
            # Supports the composite foreign key and "an account's latest invoices".
            tenant_index("account", "-issued_on", name="billing_inv_account_idx"),
            # Partial: only open invoices are chased by due date, a small slice of the table.
            tenant_index("due_on", condition=Q(status="open"), name="billing_inv_open_due_idx"),
        ]

    def __str__(self) -> str:
        return self.number


class Contact(TenantModel):
    account = TenantForeignKey(
        Account, on_delete=models.SET_NULL, null=True, blank=True, related_name="contacts"
    )
    name = models.CharField(max_length=200)
    email = models.EmailField()

    class Meta(TenantModel.Meta):
        indexes = [
            tenant_index("account", name="billing_contact_account_idx"),
            # Functional: case-insensitive lookups by e-mail.
            tenant_index(Lower("email"), name="billing_contact_email_idx"),
        ]

    def __str__(self) -> str:
        return self.name
