"""The planner uses the tenant-leading, partial, functional and unique indexes of the example
models on realistic volumes: 40,000 invoices, 8,000 accounts and contacts, 50 tenants."""

import json

import pytest
from django.db import connections
from django.db.models.functions import Lower

from data_arch.tenancy import Tenant, tenant_context
from example_project.billing.models import Account, Contact, Invoice

pytestmark = pytest.mark.django_db(databases="__all__")

TENANTS = 50
ACCOUNTS_PER_TENANT = 160
INVOICES_PER_ACCOUNT = 5


@pytest.fixture(scope="module")
def volume(live_db):
    """Bulk data generated in SQL, committed and ANALYZEd."""
    from example_project.customers.models import Client

    clients = []
    for number in range(TENANTS):
        client = Client(schema_name=f"volume_{number}", name=f"Volume {number}")
        client.auto_create_schema = False
        client.save()
        clients.append(client)
    ids = [c.pk for c in clients]
    with connections["default"].cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO billing_account (tenant_id, name, email, created_at)
            SELECT t, 'Account ' || n, 'User' || n || '@T' || t || '.example.com',
                   now() - n * interval '1 hour'
            FROM unnest(%s::bigint[]) t, generate_series(1, %s) n
            """,
            [ids, ACCOUNTS_PER_TENANT],
        )
        cursor.execute(
            """
            INSERT INTO billing_contact (tenant_id, account_id, name, email)
            SELECT tenant_id, id, name, 'Contact.' || email FROM billing_account
            """
        )
        cursor.execute(
            """
            INSERT INTO billing_invoice
                (tenant_id, account_id, number, status, total_cents, issued_on, due_on)
            SELECT a.tenant_id, a.id, 'INV-' || a.id || '-' || i,
                   CASE WHEN (a.id + i) %% 20 = 0 THEN 'open' ELSE 'paid' END,
                   1000 * i, date '2025-01-01' + ((a.id * 7 + i * 13) %% 700)::int,
                   date '2025-02-01' + ((a.id * 7 + i * 13) %% 700)::int
            FROM billing_account a, generate_series(1, %s) i
            """,
            [INVOICES_PER_ACCOUNT],
        )
        cursor.execute("ANALYZE billing_account, billing_contact, billing_invoice")
        cursor.execute("SELECT count(*) FROM billing_invoice")
        assert cursor.fetchone()[0] == TENANTS * ACCOUNTS_PER_TENANT * INVOICES_PER_ACCOUNT
    yield [Tenant(pk=pk) for pk in ids]
    with connections["default"].cursor() as cursor:
        # DELETE, not TRUNCATE: replaying a TRUNCATE on the standby waits for every replica
        # reader of these tables (up to max_standby_streaming_delay) and stalls replication.
        for table in ("billing_invoice", "billing_contact", "billing_account"):
            cursor.execute(f"DELETE FROM {table}")
    Client.objects.filter(pk__in=ids).delete()


def indexes_used(queryset) -> set[str]:
    plan = json.loads(queryset.explain(format="json"))
    found = set()

    def walk(node):
        if "Index Name" in node:
            found.add(node["Index Name"])
        for child in node.get("Plans", ()):
            walk(child)

    walk(plan[0]["Plan"])
    return found


def test_partial_index_serves_open_invoices_by_due_date(volume):
    with tenant_context(volume[17]):
        queryset = Invoice.objects.filter(status="open", due_on__lt="2025-06-01").order_by("due_on")
        assert indexes_used(queryset) == {"billing_inv_open_due_idx"}
        assert queryset.exists()


def test_functional_index_serves_case_insensitive_email(volume):
    tenant = volume[3]
    with tenant_context(tenant):
        email = Contact.objects.first().email.upper()
        queryset = Contact.objects.alias(email_ci=Lower("email")).filter(email_ci=email.lower())
        assert indexes_used(queryset) == {"billing_contact_email_idx"}
        assert queryset.count() == 1


def test_functional_unique_constraint_serves_account_lookup(volume):
    with tenant_context(volume[40]):
        email = Account.objects.order_by("pk").first().email
        queryset = Account.objects.alias(email_ci=Lower("email")).filter(email_ci=email.lower())
        assert indexes_used(queryset) == {"billing_account_email_ci_uniq"}


def test_per_tenant_unique_number_and_tenant_leading_composite(volume):
    with tenant_context(volume[25]):
        invoice = Invoice.objects.order_by("pk").first()
        assert indexes_used(Invoice.objects.filter(number=invoice.number)) == {
            "billing_invoice_number_uniq"
        }
        latest = Invoice.objects.filter(account_id=invoice.account_id).order_by("-issued_on")[:3]
        assert indexes_used(latest) == {"billing_inv_account_idx"}
        assert indexes_used(Account.objects.order_by("-created_at")[:10]) == {
            "billing_acc_created_idx"
        }


def test_select_related_join_uses_the_composite_key(volume):
    with tenant_context(volume[9]):
        queryset = Invoice.objects.select_related("account").filter(status="open", due_on__lt="2025-03-01")
        # The join condition carries the tenant, so the (tenant_id, id) primary key serves it.
        assert indexes_used(queryset) == {"billing_inv_open_due_idx", "billing_account_pkey"}
        assert all(i.account.tenant_id == i.tenant_id for i in queryset)


def test_under_rls_as_the_application_role_the_same_indexes_serve(volume, app_role):
    with tenant_context(volume[17]):
        queryset = Invoice.objects.using("app").filter(status="open", due_on__lt="2025-06-01")
        assert indexes_used(queryset) == {"billing_inv_open_due_idx"}
        assert 0 < queryset.count() < ACCOUNTS_PER_TENANT * INVOICES_PER_ACCOUNT
