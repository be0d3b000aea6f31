"""What reaches PostgreSQL without the execute wrapper -- COPY, statements passed through as
is, FETCH from a server-side cursor -- runs with the current tenant, as the ordinary role."""

import concurrent.futures
import contextlib
import datetime

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connections, transaction

from data_arch.tenancy import CrossTenantError, tenant_context
from example_project.billing.models import Account, Invoice

pytestmark = pytest.mark.django_db(databases="__all__")

DAY = datetime.date(2026, 3, 1)


@pytest.fixture(scope="module")
def committed(row_tenants, live_db):
    """Three invoices in each of three tenants, committed."""
    for tenant in row_tenants[:3]:
        with tenant_context(tenant):
            account = Account.objects.create(name="a", email=f"a@t{tenant.pk}.com")
            for n in range(3):
                Invoice.objects.create(account=account, number=f"T{tenant.pk}-{n}",
                                       total_cents=n, issued_on=DAY, due_on=DAY)
    return row_tenants[:3]


def numbers(tenant):
    return [f"T{tenant.pk}-{n}" for n in range(3)]


def raw_numbers(alias="app", cursor=None):
    with contextlib.ExitStack() as stack:
        if cursor is None:
            cursor = stack.enter_context(connections[alias].cursor())
        cursor.execute("SELECT number FROM billing_invoice ORDER BY number")
        return [row[0] for row in cursor.fetchall()]


def copy_out(cursor):
    with cursor.copy("COPY (SELECT number FROM billing_invoice ORDER BY number) TO STDOUT") as copy:
        return b"".join(bytes(chunk) for chunk in copy).decode().split()


def test_copy_in_a_transaction_exports_the_current_tenant_only(committed, app_role):
    a, b, _c = committed
    with transaction.atomic(using="app"), connections["app"].cursor() as cursor:
        with tenant_context(a):
            assert raw_numbers(cursor=cursor) == numbers(a)
        with tenant_context(b):
            assert copy_out(cursor) == numbers(b)
        assert copy_out(cursor) == []


def test_copy_in_autocommit_exports_the_current_tenant(committed, app_role):
    a, _b, _c = committed

    def in_autocommit():  # a new thread's connection is outside the test's transaction
        connection = connections["app"]
        try:
            with connection.cursor() as cursor:
                assert connection.get_autocommit()
                with tenant_context(a):
                    inside = copy_out(cursor)
                return inside, copy_out(cursor)
        finally:
            connection.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert pool.submit(in_autocommit).result() == (numbers(a), [])


def test_copy_in_cannot_write_into_another_tenant(committed, app_role):
    a, b, _c = committed
    account_b = Account.unscoped.using("default").get(tenant_id=b.pk)
    row = f"{b.pk}\t{account_b.pk}\tFORGED\topen\t1\t2026-03-01\t2026-03-01\n"
    with transaction.atomic(using="app"), connections["app"].cursor() as cursor:
        with tenant_context(b):
            raw_numbers(cursor=cursor)
        with tenant_context(a), pytest.raises(Exception, match="row-level security"):
            with transaction.atomic(using="app"):
                with cursor.copy(
                    "COPY billing_invoice (tenant_id, account_id, number, status, total_cents, "
                    "issued_on, due_on) FROM STDIN"
                ) as copy:
                    copy.write(row)


def test_a_statement_that_only_mentions_concurrently_still_gets_the_tenant(committed, app_role):
    a, b, _c = committed
    with transaction.atomic(using="app"), connections["app"].cursor() as cursor:
        with tenant_context(a):
            raw_numbers(cursor=cursor)
        with tenant_context(b):
            cursor.execute(
                "CREATE TEMP TABLE copied AS SELECT number FROM billing_invoice "
                "WHERE 'CONCURRENTLY' <> '' ORDER BY number"
            )
        cursor.execute("SELECT number FROM copied ORDER BY number")
        assert [row[0] for row in cursor.fetchall()] == numbers(b)


def test_switching_tenant_is_refused_while_a_server_side_cursor_is_open(committed, app_role):
    a, b, _c = committed
    with transaction.atomic(using="app"), tenant_context(a):
        rows = Invoice.objects.using("app").order_by("number").iterator(chunk_size=1)
        assert next(rows).number == numbers(a)[0]
        with pytest.raises(CrossTenantError, match="server-side cursor"):
            with tenant_context(b):
                raw_numbers()
        assert [invoice.number for invoice in rows] == numbers(a)[1:]


def test_an_async_switch_cannot_read_through_an_open_server_side_cursor(committed, app_role):
    a, b, _c = committed

    async def other_tenant():
        with tenant_context(b):
            return await sync_to_async(raw_numbers)()

    with transaction.atomic(using="app"), tenant_context(a):
        rows = Invoice.objects.using("app").order_by("number").iterator(chunk_size=1)
        assert next(rows).number == numbers(a)[0]
        with pytest.raises(CrossTenantError, match="server-side cursor"):
            async_to_sync(other_tenant)()
        assert [invoice.number for invoice in rows] == numbers(a)[1:]


def test_a_server_side_cursor_does_not_outlive_its_tenant_context(committed, app_role):
    a, _b, c = committed
    with transaction.atomic(using="app"), tenant_context(c):
        with tenant_context(a):
            rows = Invoice.objects.using("app").order_by("number").iterator(chunk_size=1)
            assert next(rows).number == numbers(a)[0]
        assert raw_numbers() == numbers(c)
        with pytest.raises(Exception, match="closed"):
            next(rows)


def test_a_role_that_bypasses_rls_may_iterate_across_tenant_switches(committed):
    a, b, _c = committed
    # The superuser alias, like a BYPASSRLS maintenance alias: FETCH ignores the setting.
    with transaction.atomic(using="default"):
        rows = Invoice.unscoped.using("default").filter(tenant_id__in=[a.pk, b.pk]).order_by(
            "number").iterator(chunk_size=1)
        first = next(rows)
        with tenant_context(b):
            assert Invoice.objects.using("default").count() == 3
        assert len([first, *rows]) == 6
