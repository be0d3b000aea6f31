"""Query paths that used to slip past the tenant: negated lookups across relations, a filled
result cache, raw saves (loaddata)."""

import datetime
import json

import pytest
from django.core.management import call_command
from django.db.models import Q

from data_arch.tenancy import CrossTenantError, NoTenantError, tenant_context
from example_project.billing.models import Account, Invoice

pytestmark = pytest.mark.django_db(databases="__all__")

DAY = datetime.date(2026, 4, 1)


@pytest.fixture
def twin_ids(row_tenants):
    """Tenant A's account and tenant B's account with the same id; only B's has a paid invoice."""
    a, b = row_tenants[0], row_tenants[1]
    with tenant_context(a):
        own = Account.objects.create(name="a", email="a@a.com")
    with tenant_context(b):
        twin = Account(pk=own.pk, name="b", email="b@b.com")
        twin.save(force_insert=True)
        Invoice.objects.create(account=twin, number="PAID-B", status="paid", total_cents=1,
                               issued_on=DAY, due_on=DAY)
    return a, b, own


@pytest.mark.parametrize(
    "query",
    [lambda: Account.objects.exclude(invoices__status="paid"),
     lambda: Account.objects.filter(~Q(invoices__status="paid")),
     lambda: Account.objects.exclude(invoices__number__startswith="PAID")],
    ids=["exclude", "negated_q", "exclude_lookup"],
)
def test_negated_lookups_across_a_relation_ignore_another_tenants_rows(twin_ids, query):
    a, _b, own = twin_ids
    with tenant_context(a):
        assert list(query()) == [own]


def test_negated_lookups_still_exclude_the_tenants_own_rows(twin_ids):
    _a, b, own = twin_ids
    with tenant_context(b):
        assert list(Account.objects.exclude(invoices__status="paid")) == []
        assert Account.objects.exclude(invoices__status="open").count() == 1


@pytest.mark.parametrize(
    "access",
    [lambda qs: qs[0], lambda qs: qs[:5], lambda qs: repr(qs), lambda qs: list(qs[1:]),
     lambda qs: qs.__getitem__(slice(None))],
    ids=["index", "slice", "repr", "slice_list", "full_slice"],
)
def test_a_cached_queryset_is_checked_on_every_access_path(row_tenants, access):
    a, b = row_tenants[0], row_tenants[1]
    with tenant_context(a):
        Account.objects.create(name="cached", email="c@a.com")
        queryset = Account.objects.all()
        list(queryset)  # fills the result cache
        access(queryset)
    with tenant_context(b), pytest.raises(CrossTenantError):
        access(queryset)
    with pytest.raises(NoTenantError):
        access(queryset)


def test_loaddata_refuses_rows_of_another_tenant(row_tenants, tmp_path):
    a, b = row_tenants[0], row_tenants[1]
    fixture = tmp_path / "accounts.json"
    fixture.write_text(json.dumps([{
        "model": "billing.account", "pk": 990001,
        "fields": {"tenant": b.pk, "name": "loaded", "email": "l@b.com",
                   "created_at": "2026-04-01T00:00:00Z"},
    }]))
    with tenant_context(a), pytest.raises(CrossTenantError, match="not to the active tenant"):
        call_command("loaddata", str(fixture), verbosity=0)
    with pytest.raises(NoTenantError):
        call_command("loaddata", str(fixture), verbosity=0)
    assert not Account.unscoped.filter(name="loaded").exists()
    with tenant_context(b):
        call_command("loaddata", str(fixture), verbosity=0)
        assert Account.objects.get(pk=990001).name == "loaded"


def test_a_raw_save_refuses_another_tenants_row(row_tenants):
    a, b = row_tenants[0], row_tenants[1]
    with tenant_context(a), pytest.raises(CrossTenantError):
        Account(tenant_id=b.pk, name="raw", email="r@b.com", created_at=datetime.datetime(
            2026, 4, 1, tzinfo=datetime.UTC)).save_base(raw=True)
    assert not Account.unscoped.filter(name="raw").exists()
