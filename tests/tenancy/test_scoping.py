"""The scoped manager fails closed on every query path, sync and async."""

import datetime

import pytest
from asgiref.sync import async_to_sync
from django.db import connection

from data_arch.tenancy import CrossTenantError, NoTenantError, Tenant, tenant_context
from example_project.billing.models import Account, Contact, Invoice

TODAY = datetime.date(2026, 1, 15)

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture
def two_tenants(row_tenants):
    a, b = row_tenants[0], row_tenants[1]
    made = {}
    for tenant in (a, b):
        with tenant_context(tenant):
            account = Account.objects.create(name=f"acc {tenant.pk}", email=f"x{tenant.pk}@e.com")
            invoice = Invoice.objects.create(
                account=account, number=f"N-{tenant.pk}", total_cents=100 * tenant.pk,
                issued_on=TODAY, due_on=TODAY,
            )
            contact = Contact.objects.create(account=account, name="c", email="C@E.com")
            made[tenant.pk] = (account, invoice, contact)
    return a, b, made


SYNC_PATHS = {
    "iterate": lambda m: list(m.objects.all()),
    "get": lambda m: m.objects.get(pk=1),
    "first": lambda m: m.objects.first(),
    "exists": lambda m: m.objects.exists(),
    "count": lambda m: m.objects.count(),
    "contains": lambda m: m.objects.contains(m(pk=1)),
    "aggregate": lambda m: m.objects.aggregate(n=__import__("django").db.models.Count("pk")),
    "in_bulk": lambda m: m.objects.in_bulk([1]),
    "iterator": lambda m: list(m.objects.iterator()),
    "explain": lambda m: m.objects.explain(),
    "values": lambda m: list(m.objects.values("pk")),
    "update": lambda m: m.objects.update(name="x"),
    "delete": lambda m: m.objects.all().delete(),
    "bulk_create": lambda m: m.objects.bulk_create([m(name="n", email="e@e.com")]),
    "bulk_update": lambda m: m.objects.bulk_update([m(pk=1, name="n")], ["name"]),
    "unscoped_to_scoped": lambda m: m.objects.filter(pk__in=m.unscoped.values("pk")).count(),
}

ASYNC_PATHS = {
    "aget": lambda m: m.objects.aget(pk=1),
    "afirst": lambda m: m.objects.afirst(),
    "aexists": lambda m: m.objects.aexists(),
    "acount": lambda m: m.objects.acount(),
    "acontains": lambda m: m.objects.acontains(m(pk=1)),
    "aaggregate": lambda m: m.objects.aaggregate(n=__import__("django").db.models.Count("pk")),
    "ain_bulk": lambda m: m.objects.ain_bulk([1]),
    "aexplain": lambda m: m.objects.aexplain(),
    "aupdate": lambda m: m.objects.aupdate(name="x"),
    "adelete": lambda m: m.objects.all().adelete(),
    "abulk_create": lambda m: m.objects.abulk_create([m(name="n", email="e@e.com")]),
    "abulk_update": lambda m: m.objects.abulk_update([m(pk=1, name="n")], ["name"]),
}


@pytest.mark.parametrize("path", sorted(SYNC_PATHS))
def test_every_sync_path_raises_without_a_tenant(two_tenants, path):
    with pytest.raises(NoTenantError, match="no tenant is active"):
        SYNC_PATHS[path](Account)
    assert Account.unscoped.count() == 2  # nothing written or deleted


@pytest.mark.parametrize("path", sorted(ASYNC_PATHS))
def test_every_async_path_raises_without_a_tenant(two_tenants, path):
    async def run():
        return await ASYNC_PATHS[path](Account)

    with pytest.raises(NoTenantError, match="no tenant is active"):
        async_to_sync(run)()
    assert Account.unscoped.count() == 2


def test_aiterator_and_async_for_raise_without_a_tenant(two_tenants):
    async def iterate():
        return [a async for a in Account.objects.aiterator()]

    with pytest.raises(NoTenantError):
        async_to_sync(iterate)()


def test_none_is_never_all_tenants(two_tenants):
    with pytest.raises(Exception, match="never reads None"):
        with tenant_context(None):
            Account.objects.count()


def test_each_path_sees_only_the_current_tenant(two_tenants):
    a, b, made = two_tenants
    acc_a, inv_a, _ = made[a.pk]
    acc_b, _inv_b, _ = made[b.pk]
    with tenant_context(a):
        assert list(Account.objects.all()) == [acc_a]
        assert Account.objects.count() == 1
        assert Account.objects.filter(pk=acc_b.pk).exists() is False
        assert Account.objects.contains(acc_b) is False
        assert Account.objects.in_bulk([acc_a.pk, acc_b.pk]) == {acc_a.pk: acc_a}
        assert [x.pk for x in Account.objects.iterator(chunk_size=1)] == [acc_a.pk]
        assert Invoice.objects.aggregate(t=__import__("django").db.models.Sum("total_cents")) == {
            "t": inv_a.total_cents
        }
        with pytest.raises(Account.DoesNotExist):
            Account.objects.get(pk=acc_b.pk)
        assert Account.objects.filter(pk=acc_b.pk).update(name="hijack") == 0
        assert Account.objects.filter(pk=acc_b.pk).delete()[0] == 0
        assert "tenant_id" in Account.objects.explain() or "Index" in Account.objects.explain()

        async def read_async():
            return await Account.objects.acount(), await Account.objects.aget(pk=acc_a.pk)

        assert async_to_sync(read_async)() == (1, acc_a)
    assert Account.unscoped.get(pk=acc_b.pk).name == acc_b.name


def test_related_access_is_scoped(two_tenants):
    a, b, made = two_tenants
    acc_a, inv_a, _contact_a = made[a.pk]
    acc_b, inv_b, _ = made[b.pk]
    with tenant_context(a):
        invoice = Invoice.objects.select_related("account").get(pk=inv_a.pk)
        assert invoice.account == acc_a
        assert list(acc_a.invoices.all()) == [inv_a]
        fetched = Account.objects.prefetch_related("invoices", "contacts").get()
        assert list(fetched.invoices.all()) == [inv_a]
        assert [c.account for c in Contact.objects.prefetch_related("account")] == [acc_a]
        # A row of another tenant, loaded through the unscoped manager, leads nowhere.
        foreign = Invoice.unscoped.get(pk=inv_b.pk)
        with pytest.raises(Account.DoesNotExist):
            foreign.account  # noqa: B018
        with pytest.raises(CrossTenantError):
            foreign.save()
        with pytest.raises(CrossTenantError):
            foreign.delete()
        assert list(acc_b.invoices.all()) == []
    # Outside any tenant even the reverse manager of a loaded row refuses.
    with pytest.raises(NoTenantError):
        list(acc_a.invoices.all())
    fresh = Invoice.unscoped.get(pk=inv_a.pk)
    with pytest.raises(NoTenantError):
        fresh.account  # noqa: B018


def test_joins_carry_the_tenant(two_tenants):
    a, _b, _made = two_tenants
    with tenant_context(a):
        sql = str(Invoice.objects.select_related("account").query)
        reverse = str(Account.objects.filter(invoices__status="open").query)
    assert '"billing_account"."tenant_id" = ("billing_invoice"."tenant_id")' in sql
    assert '"billing_account"."tenant_id" = ("billing_invoice"."tenant_id")' in reverse


def test_writes_fill_in_the_tenant_and_refuse_another(two_tenants):
    a, b, made = two_tenants
    acc_b = made[b.pk][0]
    with tenant_context(a):
        new = Account.objects.create(name="new", email="new@e.com")
        assert new.tenant_id == a.pk
        created = Account.objects.bulk_create(
            [Account(name="b1", email="b1@e.com"), Account(name="b2", email="b2@e.com")]
        )
        assert {x.tenant_id for x in created} == {a.pk}
        with pytest.raises(CrossTenantError, match="nothing was written"):
            Account.objects.bulk_create(
                [Account(name="ok", email="ok@e.com"),
                 Account(name="bad", email="bad@e.com", tenant_id=b.pk)]
            )
        with pytest.raises(CrossTenantError):
            Account.objects.bulk_update([acc_b], ["name"])
        with pytest.raises(CrossTenantError):
            Account.objects.update(tenant_id=b.pk)
        with pytest.raises(CrossTenantError):
            Account(name="x", email="x@e.com", tenant_id=b.pk).save()
    assert Account.unscoped.filter(tenant_id=a.pk).count() == 4
    assert Account.unscoped.filter(tenant_id=b.pk).count() == 1


def test_a_queryset_is_bound_to_the_tenant_that_made_it(two_tenants):
    a, b, _made = two_tenants
    with tenant_context(a):
        queryset = Account.objects.all()
    with pytest.raises(NoTenantError, match="context ended"):
        list(queryset)
    with tenant_context(b):
        with pytest.raises(CrossTenantError, match="made for tenant"):
            queryset.count()
    with tenant_context(a):
        evaluated = Account.objects.all()
        assert len(evaluated) == 1
    with tenant_context(b), pytest.raises(CrossTenantError):
        list(evaluated)  # cached rows are not handed over either


def test_tenant_without_pk_cannot_reach_row_level_tables(two_tenants):
    with tenant_context(Tenant(pk=None, schema_name="public")):
        with pytest.raises(NoTenantError, match="has no primary key"):
            Account.objects.count()


def test_connection_has_no_tenant_left_after(two_tenants):
    a, _b, _made = two_tenants
    with tenant_context(a):
        Account.objects.count()
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('data_arch.tenant_id', true)")
        assert cursor.fetchone()[0] in ("", None)
