"""The tenant travels with Celery tasks to a real worker: single tasks, chains, groups."""

import datetime

import pytest
from celery import chain, group
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_arch.tenancy import NoTenantError, tenant_context
from data_arch.tenancy.celery import HEADER, tenant_from_header
from example_project.billing.models import Account, Invoice
from example_project.billing.tasks import invoice_numbers, open_invoice

pytestmark = [pytest.mark.django_db(databases="__all__"), pytest.mark.slow]

DAY = datetime.date(2026, 2, 1)
WAIT = 30


@pytest.fixture(scope="module")
def billed(row_tenants, live_db):
    tenants = row_tenants[:3]
    accounts = {}
    for tenant in tenants:
        with tenant_context(tenant):
            account = Account.objects.create(name="acc", email=f"c@t{tenant.pk}.com")
            Invoice.objects.create(
                account=account, number=f"C{tenant.pk}", total_cents=1, issued_on=DAY, due_on=DAY
            )
            accounts[tenant.pk] = account.pk
    return tenants, accounts


def numbers(tenant):
    """The tenant's invoice numbers as committed now (tasks may have added some)."""
    return sorted(Invoice.unscoped.filter(tenant_id=tenant.pk).values_list("number", flat=True))


def test_a_task_runs_in_the_tenant_it_was_sent_from(billed, celery_worker):
    (a, b, _c), _accounts = billed
    with tenant_context(a):
        result_a = invoice_numbers.delay()
    with tenant_context(b):
        result_b = invoice_numbers.delay()
    assert result_a.get(timeout=WAIT) == [{"tenant": a.pk, "schema": "public", "numbers": numbers(a)}]
    assert result_b.get(timeout=WAIT)[0]["numbers"] == numbers(b)


def test_chains_and_groups_keep_the_tenant(billed, celery_worker):
    (_a, b, c), _accounts = billed
    with tenant_context(b):
        chained = chain(invoice_numbers.s(), invoice_numbers.s(), invoice_numbers.s()).apply_async()
    with tenant_context(c):
        grouped = group(invoice_numbers.s() for _ in range(3)).apply_async()
    steps = chained.get(timeout=WAIT)
    assert [step["numbers"] for step in steps] == [numbers(b)] * 3
    assert [r[0]["numbers"] for r in grouped.get(timeout=WAIT)] == [numbers(c)] * 3


def test_a_task_without_its_tenant_fails_clearly_and_writes_nothing(billed, celery_worker):
    (a, _b, _c), accounts = billed
    before = Invoice.unscoped.count()
    result = open_invoice.delay(accounts[a.pk], "NO-TENANT", 5)
    with pytest.raises(Exception) as raised:
        result.get(timeout=WAIT)
    assert "needs a tenant" in str(raised.value)
    assert type(raised.value).__name__ == NoTenantError.__name__
    assert Invoice.unscoped.count() == before


def test_a_task_cannot_reach_another_tenants_rows(billed, celery_worker):
    (a, b, _c), accounts = billed
    with tenant_context(a):
        refused = open_invoice.delay(accounts[b.pk], "CROSS", 5)
        created = open_invoice.delay(accounts[a.pk], "OWN", 5)
    with pytest.raises(Exception, match="does not exist"):
        refused.get(timeout=WAIT)
    invoice_pk = created.get(timeout=WAIT)
    assert Invoice.unscoped.get(pk=invoice_pk).tenant_id == a.pk
    assert not Invoice.unscoped.filter(number="CROSS").exists()


def test_a_header_whose_pk_and_schema_belong_to_different_tenants_is_refused(
    billed, tenant, celery_worker
):
    (a, _b, _c), _accounts = billed
    forged = {"pk": a.pk, "schema_name": tenant.schema_name}  # a's id, another tenant's schema
    result = invoice_numbers.apply_async(headers={HEADER: forged})
    with pytest.raises(Exception) as raised:
        result.get(timeout=WAIT)
    assert type(raised.value).__name__ == "InvalidTenantError"
    assert "belong to different tenants" in str(raised.value)
    unknown = invoice_numbers.apply_async(headers={HEADER: {"pk": 987654, "schema_name": None}})
    with pytest.raises(Exception, match="no tenant has primary key 987654"):
        unknown.get(timeout=WAIT)


@pytest.mark.parametrize(
    "header", [{"pk": 1, "schema_name": "bad;name"}, {"pk": 1, "extra": 2}, "tenant_a"]
)
def test_malformed_tenant_headers_are_refused(header):
    with pytest.raises(Exception, match="invalid schema name|malformed"):
        tenant_from_header(header)


def test_publishing_adds_the_header_only_inside_a_tenant(billed):
    from data_arch.tenancy.celery import _on_publish

    (a, _b, _c), _accounts = billed
    headers: dict = {}
    _on_publish(headers=headers)
    assert headers == {}
    with tenant_context(a):
        _on_publish(headers=headers)
    assert headers[HEADER] == {"pk": a.pk, "schema_name": None}


def test_a_schema_tenant_task_runs_in_its_schema(tenant, celery_worker):
    with tenant_context(tenant):
        result = invoice_numbers.delay()
    assert result.get(timeout=WAIT) == [
        {"tenant": tenant.pk, "schema": tenant.schema_name, "numbers": []}
    ]


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.lists(st.integers(0, 2), min_size=1, max_size=5))
def test_random_task_streams_stay_with_their_tenant(billed, celery_worker, order):
    tenants, _accounts = billed
    sent = []
    for index in order:
        with tenant_context(tenants[index]):
            sent.append((tenants[index], invoice_numbers.delay()))
    for tenant, result in sent:
        (seen,) = result.get(timeout=WAIT)
        assert seen["tenant"] == tenant.pk and seen["numbers"] == numbers(tenant)
