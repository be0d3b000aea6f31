"""The signed tenant context, as the ordinary role: SQL injected into one tenant's statements
cannot switch the policy to another tenant, neither with a plain id nor with a signed value
read from another session."""

import concurrent.futures
import datetime

import pytest
from django.db import connections, transaction

from data_arch.tenancy import tenant_context
from example_project.billing.models import Account, Invoice

pytestmark = pytest.mark.django_db(databases="__all__")

DAY = datetime.date(2026, 3, 1)
INJECTED = (
    "SELECT number FROM billing_invoice WHERE number = 'x' "
    "OR (SELECT set_config('data_arch.tenant_id', %s, true)) IS NOT NULL ORDER BY number"
)


@pytest.fixture(scope="module")
def committed(row_tenants, live_db):
    for tenant in row_tenants[:2]:
        with tenant_context(tenant):
            account = Account.objects.create(name="s", email=f"s@t{tenant.pk}.com")
            Invoice.objects.create(account=account, number=f"S{tenant.pk}", total_cents=1,
                                   issued_on=DAY, due_on=DAY)
    return row_tenants[:2]


def value_seen_by_another_session(tenant):
    """The setting as another server process running for ``tenant`` holds it."""

    def other_session():
        connection = connections["app"]
        try:
            with tenant_context(tenant), transaction.atomic(using="app"):
                with connection.cursor() as cursor:
                    cursor.execute("SELECT current_setting('data_arch.tenant_id', true)")
                    return cursor.fetchone()[0]
        finally:
            connection.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(other_session).result()


@pytest.mark.parametrize("forged", ["plain id", "value from another session"])
def test_injected_set_config_reads_no_row_of_another_tenant(committed, app_role, forged):
    a, b = committed
    value = str(b.pk) if forged == "plain id" else value_seen_by_another_session(b)
    assert value.startswith(str(b.pk))
    with tenant_context(a), transaction.atomic(using="app"):
        with connections["app"].cursor() as cursor:
            cursor.execute(INJECTED, [value])
            assert f"S{b.pk}" not in [row[0] for row in cursor.fetchall()]
        # The same setting left for a statement that reaches the server without the wrapper.
        raw = connections["app"].connection
        raw.execute("SELECT set_config('data_arch.tenant_id', %s, true)", [value])
        assert raw.execute("SELECT number FROM billing_invoice").fetchall() == []


def test_the_application_role_cannot_read_the_secret(committed, app_role):
    with pytest.raises(Exception, match="permission denied"):
        with transaction.atomic(using="app"), connections["app"].cursor() as cursor:
            cursor.execute("SELECT * FROM data_arch_rls_secret")


def test_the_tenants_own_rows_are_still_visible(committed, app_role):
    a, _b = committed
    with tenant_context(a), connections["app"].cursor() as cursor:
        cursor.execute("SELECT number FROM billing_invoice")
        assert cursor.fetchall() == [(f"S{a.pk}",)]


def test_the_operation_takes_back_grants_on_the_secret_table(committed, app_role):
    from data_arch.tenancy import sql
    from data_arch.tenancy.rls import secret_pads

    def readable():
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT has_table_privilege(%s, 'data_arch_rls_secret', 'SELECT')",
                           [app_role])
            return cursor.fetchone()[0]

    with connections["default"].cursor() as cursor:
        # What ALTER DEFAULT PRIVILEGES ... GRANT SELECT ON TABLES does for a new table.
        cursor.execute(f'GRANT SELECT ON data_arch_rls_secret TO "{app_role}"')
        assert readable()
        for statement, params in sql.signed_context(
            connections["default"].ops.quote_name, "public", *secret_pads()
        ):
            cursor.execute(statement, params)
    assert not readable()
