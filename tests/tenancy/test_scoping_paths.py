"""Query paths that used to slip past the tenant: negated lookups across relations, a filled
result cache, raw saves (loaddata)."""

import contextlib
import datetime
import json

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import Count, Q
from django import forms

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
    with connection.cursor() as cursor:  # as rows loaded before ids were checked would be
        cursor.execute(
            "INSERT INTO billing_account (id, tenant_id, name, email, created_at) "
            "VALUES (%s, %s, 'b', 'b@b.com', now())", [own.pk, b.pk]
        )
    with tenant_context(b):
        twin = Account.objects.get(pk=own.pk)
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


def test_an_explicit_id_of_another_tenants_row_is_refused(row_tenants):
    a, b = row_tenants[0], row_tenants[1]
    with tenant_context(a):
        own = Account.objects.create(name="a", email="a@a.com")
    with tenant_context(b):
        with pytest.raises(CrossTenantError, match="already belong to another tenant"):
            Account(pk=own.pk, name="b", email="b@b.com").save()
        with pytest.raises(CrossTenantError, match="already belong to another tenant"):
            Account.objects.bulk_create([Account(pk=own.pk, name="b", email="b@b.com")])
        assert not Account.objects.filter(pk=own.pk).exists()


# --------------------------------------------------------------------------- composite keys


def test_annotate_count_works_on_row_level_models(row_tenants):
    a = row_tenants[0]
    with tenant_context(a):
        account = Account.objects.create(name="counted", email="n@a.com")
        for n in range(3):
            Invoice.objects.create(account=account, number=f"CNT-{n}", total_cents=n,
                                   issued_on=DAY, due_on=DAY)
        rows = Account.objects.annotate(n=Count("invoices")).filter(pk=account.pk)
        assert [(r.name, r.n) for r in rows] == [("counted", 3)]
        assert list(Invoice.objects.values("account").annotate(n=Count("pk"))) == [
            {"account": account.pk, "n": 3}
        ]


@pytest.mark.parametrize("active", ["none", "other"])
def test_an_unscoped_delete_cascades_across_tenants(row_tenants, active):
    from example_project.billing.models import Contact

    a, b = row_tenants[0], row_tenants[1]
    with tenant_context(a):
        account = Account.objects.create(name="gone", email="g@a.com")
        Invoice.objects.create(account=account, number="GONE-1", total_cents=1,
                               issued_on=DAY, due_on=DAY)
        contact = Contact.objects.create(account=account, name="c", email="c@a.com")
    with tenant_context(b) if active == "other" else contextlib.nullcontext():
        deleted, per_model = Account.unscoped.filter(pk=account.pk).delete()
    assert per_model == {"billing.Invoice": 1, "billing.Account": 1}
    assert not Invoice.unscoped.filter(number="GONE-1").exists()
    assert Contact.unscoped.get(pk=contact.pk).account_id is None
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the deferred tenant keys hold now


def invoice_form(data):
    # Built inside the tenant: the account choices come from the scoped manager.
    form_class = forms.modelform_factory(
        Invoice, fields=["account", "number", "status", "total_cents", "issued_on", "due_on"]
    )
    return form_class(data)


def test_a_model_form_reports_a_duplicate_tenant_unique_value(row_tenants):
    a, b = row_tenants[0], row_tenants[1]
    with tenant_context(a):
        account = Account.objects.create(name="f", email="f@a.com")
        Invoice.objects.create(account=account, number="DUP-1", total_cents=1,
                               issued_on=DAY, due_on=DAY)
    data = {"account": account.pk, "number": "DUP-1", "status": "open", "total_cents": 2,
            "issued_on": "2026-04-02", "due_on": "2026-05-02"}
    with tenant_context(a):
        form = invoice_form(data)
        assert not form.is_valid()
        assert "billing_invoice_number_uniq" in str(form.errors) or "already exists" in str(
            form.errors)
    with tenant_context(b):
        other = Account.objects.create(name="f", email="f@b.com")
        form = invoice_form({**data, "account": other.pk})
        assert form.is_valid(), form.errors  # the same number in another tenant is fine
        with transaction.atomic():
            form.save()
