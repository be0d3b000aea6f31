"""Row-Level Security as the application role: per transaction, every alias, pooled connections."""

import datetime
import threading

import psycopg
import psycopg.sql
import pytest
from django.db import connections, transaction

from data_arch.tenancy import Tenant, tenant_context
from example_project.billing.models import Account, Invoice

pytestmark = pytest.mark.django_db(databases="__all__")

DAY = datetime.date(2026, 3, 1)


@pytest.fixture(scope="module")
def committed(row_tenants, live_db):
    """Two accounts and invoices per tenant for the first three tenants, committed."""
    for tenant in row_tenants[:3]:
        with tenant_context(tenant):
            for n in range(2):
                account = Account.objects.create(name=f"a{n}", email=f"a{n}@t{tenant.pk}.com")
                Invoice.objects.create(
                    account=account, number=f"T{tenant.pk}-{n}", total_cents=n,
                    issued_on=DAY, due_on=DAY,
                )
    return row_tenants[:3]


def raw_numbers(alias):
    with connections[alias].cursor() as cursor:
        # Forgets the tenant filter on purpose: the policy must apply it.
        cursor.execute("SELECT number FROM billing_invoice ORDER BY number")
        return [row[0] for row in cursor.fetchall()]


def test_role_is_ordinary(app_role):
    with connections["app"].cursor() as cursor:
        cursor.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        assert cursor.fetchone() == (False, False)


def test_raw_sql_sees_only_the_current_tenant_and_none_without_one(committed, app_role):
    a, b, _c = committed
    assert raw_numbers("app") == []
    with tenant_context(a):
        assert raw_numbers("app") == [f"T{a.pk}-0", f"T{a.pk}-1"]
    with tenant_context(b):
        assert raw_numbers("app") == [f"T{b.pk}-0", f"T{b.pk}-1"]
    assert raw_numbers("app") == []
    # The superuser (migrations, maintenance) is not subject to the policy.
    assert len(raw_numbers("default")) == 6


def test_unscoped_manager_is_still_bounded_by_rls(committed, app_role):
    a, _b, _c = committed
    assert Invoice.unscoped.using("app").count() == 0
    with tenant_context(a):
        assert Invoice.unscoped.using("app").count() == 2
    assert Invoice.unscoped.using("default").count() == 6


def test_rls_refuses_a_raw_write_into_another_tenant(committed, app_role):
    a, b, _c = committed
    with tenant_context(a):
        account_a = Account.objects.using("app").first()
        with pytest.raises(Exception, match="row-level security"):
            with transaction.atomic(using="app"), connections["app"].cursor() as cursor:
                cursor.execute(
                    "INSERT INTO billing_account (tenant_id, name, email, created_at) "
                    "VALUES (%s, 'x', 'x@x.com', now())", [b.pk]
                )
        with connections["app"].cursor() as cursor:
            cursor.execute("UPDATE billing_account SET name = 'hijacked' WHERE tenant_id = %s", [b.pk])
            assert cursor.rowcount == 0
        assert account_a is not None
    assert not Account.unscoped.filter(name="hijacked").exists()


def test_the_setting_lives_only_as_long_as_the_transaction(committed, app_role):
    a, _b, _c = committed
    with tenant_context(a):
        with transaction.atomic(using="app"):
            assert len(raw_numbers("app")) == 2
            assert len(raw_numbers("app")) == 2
    # Application SQL that sets the value session-wide is overridden by the next statement.
    with connections["app"].cursor() as cursor:
        cursor.execute("SELECT set_config('data_arch.tenant_id', %s, false)", [str(a.pk)])
    assert raw_numbers("app") == []


def test_server_side_cursor_and_executemany_carry_the_tenant(committed, app_role):
    a, _b, _c = committed
    with tenant_context(a):
        assert [i.number for i in Invoice.unscoped.using("app").order_by("number").iterator(1)] == [
            f"T{a.pk}-0", f"T{a.pk}-1"
        ]
        with transaction.atomic(using="app"):
            assert [i.pk for i in Invoice.unscoped.using("app").iterator(1)]
        with connections["app"].cursor() as cursor:
            cursor.executemany(
                "UPDATE billing_invoice SET total_cents = total_cents + %s WHERE number = %s",
                [(1, f"T{a.pk}-0"), (1, f"T{a.pk + 1}-0")],
            )


def test_statement_results_are_the_callers_not_set_configs(committed, app_role):
    a, _b, _c = committed
    with tenant_context(a):
        with connections["app"].cursor() as cursor:
            cursor.execute("SELECT 41 + 1, 'x%%'", [])
            assert cursor.fetchone() == (42, "x%")
            cursor.execute("SELECT 'y%'")
            assert cursor.fetchone() == ("y%",)
            cursor.execute("UPDATE billing_invoice SET total_cents = total_cents")
            assert cursor.rowcount == 2
            composed = psycopg.sql.SQL("SELECT count(*) FROM {}").format(
                psycopg.sql.Identifier("billing_invoice")
            )
            cursor.execute(composed)
            assert cursor.fetchone() == (2,)


def test_replica_alias_is_scoped_too(committed, app_role, wait_for_replica):
    a, b, _c = committed
    wait_for_replica()
    assert raw_numbers("app_replica") == []
    with tenant_context(b):
        assert raw_numbers("app_replica") == [f"T{b.pk}-0", f"T{b.pk}-1"]
        assert Invoice.objects.using("replica").count() == 2
        assert Invoice.objects.using("app_replica").count() == 2
    with tenant_context(a):
        assert Invoice.unscoped.using("app_replica").count() == 2


def test_pooled_connection_carries_nothing_to_its_next_user(committed, app_role):
    a, b, _c = committed
    seen = {}

    def requests():
        # Each block is one "request": it takes the single pooled connection and gives it back.
        for label, tenant in (("a", a), ("none", None), ("b", b)):
            if tenant is None:
                seen[label] = raw_numbers("app_pool")
            else:
                with tenant_context(tenant):
                    seen[label] = raw_numbers("app_pool")
            with connections["app_pool"].cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                seen.setdefault("pids", set()).add(cursor.fetchone()[0])
            connections["app_pool"].close()
        # A foreign client on the same server connection (PgBouncer's next user) sees no tenant.
        pool = connections["app_pool"].pool
        with pool.connection() as raw:
            seen["leftover"] = raw.execute(
                "SELECT current_setting('data_arch.tenant_id', true)"
            ).fetchone()[0]
            seen["foreign"] = raw.execute("SELECT count(*) FROM billing_invoice").fetchone()[0]
        connections["app_pool"].close_pool()

    connections["app_pool"].close()  # test setup may have taken the pool's only connection
    thread = threading.Thread(target=requests)
    thread.start()
    thread.join()
    assert seen["a"] == [f"T{a.pk}-0", f"T{a.pk}-1"]
    assert seen["none"] == []
    assert seen["b"] == [f"T{b.pk}-0", f"T{b.pk}-1"]
    assert len(seen["pids"]) == 1  # really the same server connection each time
    assert seen["leftover"] in ("", None)
    assert seen["foreign"] == 0


def test_psycopg_without_data_arch_sees_nothing(committed, app_role):
    settings_dict = connections["app"].settings_dict
    with psycopg.connect(
        host=settings_dict["HOST"], port=settings_dict["PORT"], dbname=settings_dict["NAME"],
        user=settings_dict["USER"], autocommit=True,
    ) as raw:
        assert raw.execute("SELECT count(*) FROM billing_invoice").fetchone()[0] == 0
        raw.execute("SET data_arch.tenant_id = ''")
        assert raw.execute("SELECT count(*) FROM billing_invoice").fetchone()[0] == 0


def test_tenant_on_a_tenant_without_pk_sets_nothing(committed, app_role):
    with tenant_context(Tenant(pk=None, schema_name="public")):
        assert raw_numbers("app") == []


def test_async_queries_and_tenant_switches_inside_one_transaction(committed, app_role):
    from asgiref.sync import async_to_sync

    a, b, _c = committed

    async def count_as(tenant):
        with tenant_context(tenant):
            return await Invoice.unscoped.using("app").acount()

    assert async_to_sync(count_as)(a) == 2
    with transaction.atomic(using="app"):
        with tenant_context(a):
            assert raw_numbers("app") == [f"T{a.pk}-0", f"T{a.pk}-1"]
            with tenant_context(b):
                assert raw_numbers("app") == [f"T{b.pk}-0", f"T{b.pk}-1"]
            assert len(raw_numbers("app")) == 2
        assert raw_numbers("app") == []
