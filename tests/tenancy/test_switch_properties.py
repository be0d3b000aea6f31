"""Hypothesis: random mixes of sync and async tenant switches, server-side iterators and COPY
inside transactions, as the ordinary role, never hand a row of one tenant to another."""

import datetime

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connections, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_arch.tenancy import CrossTenantError, tenant_context
from example_project.billing.models import Account, Invoice

pytestmark = pytest.mark.django_db(databases="__all__")

DAY = datetime.date(2026, 3, 1)
TENANTS = 3


@pytest.fixture(scope="module")
def committed(row_tenants, live_db):
    for tenant in row_tenants[:TENANTS]:
        with tenant_context(tenant):
            account = Account.objects.create(name="p", email=f"p@t{tenant.pk}.com")
            for n in range(3):
                Invoice.objects.create(account=account, number=f"P{tenant.pk}-{n}",
                                       total_cents=n, issued_on=DAY, due_on=DAY)
    return row_tenants[:TENANTS]


def _select():
    with connections["app"].cursor() as cursor:
        cursor.execute("SELECT tenant_id FROM billing_invoice")
        return {row[0] for row in cursor.fetchall()}


def _copy():
    with connections["app"].cursor() as cursor:
        with cursor.copy("COPY (SELECT tenant_id FROM billing_invoice) TO STDOUT") as copy:
            return {int(v) for v in b"".join(bytes(c) for c in copy).decode().split()}


def _async(read):
    def run(tenant):
        async def inner():
            with tenant_context(tenant):
                return await sync_to_async(read)()

        return async_to_sync(inner)()

    return run


READS = {
    "sync select": lambda tenant: _in(tenant, _select),
    "sync copy": lambda tenant: _in(tenant, _copy),
    "async select": _async(_select),
    "async copy": _async(_copy),
}


def _in(tenant, read):
    with tenant_context(tenant):
        return read()


step = st.tuples(
    st.sampled_from(sorted(READS) + ["iterator"]),
    st.integers(0, TENANTS - 1),
    st.sampled_from(sorted(READS)),
    st.integers(0, TENANTS - 1),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, min_size=1, max_size=6), atomic=st.booleans())
def test_random_switches_iterators_and_copy_never_cross_tenants(committed, app_role, steps, atomic):
    tenants = committed
    # The test's own transaction wraps "app" already; ``atomic`` adds a savepoint level.
    with transaction.atomic(using="app") if atomic else _nothing():
        with connections["app"].cursor() as cursor:
            # Sequential scans evaluate the policy row by row at each FETCH (an index scan
            # computes its key once): the plan where a tenant switch mid-iterator would show.
            cursor.execute("SET LOCAL enable_indexscan = off")
            cursor.execute("SET LOCAL enable_bitmapscan = off")
        for kind, index, inner_kind, inner_index in steps:
            tenant = tenants[index]
            if kind != "iterator":
                assert READS[kind](tenant) <= {tenant.pk}
                continue
            # An iterator opened for one tenant, another tenant's read in the middle of it.
            with tenant_context(tenant):
                rows = Invoice.unscoped.using("app").iterator(chunk_size=1)  # streamed: no sort
                seen = {next(rows).tenant_id}
                other = tenants[inner_index]
                try:
                    assert READS[inner_kind](other) <= {other.pk}
                except CrossTenantError:
                    assert other.pk != tenant.pk  # refused, not answered
                seen |= {invoice.tenant_id for invoice in rows}
                assert seen == {tenant.pk}


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
