"""Hypothesis: random mixes of sync and async tenant switches, server-side iterators and COPY
inside transactions, as the ordinary role, never hand a row of one tenant to another -- under
the signed policy (the default) and the plain one (``SIGNED_CONTEXT: False``), with the plans
the planner picks for these tables (no scan type forced)."""

import asyncio
import datetime
import threading

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings as django_settings
from django.db import connections, transaction
from django.test import override_settings
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
    with connections["default"].cursor() as cursor:
        # Statistics for what is there: a small table, which the planner reads sequentially,
        # evaluating the policy row by row at each FETCH.
        cursor.execute("ANALYZE billing_invoice")
    return row_tenants[:TENANTS]


#: The cursor of the example: opened once, before any tenant, and used across switches (a
#: cursor kept over several tenant contexts, as code that holds one does).
_shared = {}


def _select():
    cursor = _shared["cursor"]
    cursor.execute("SELECT tenant_id FROM billing_invoice")
    return {row[0] for row in cursor.fetchall()}


def _copy():
    with _shared["cursor"].copy("COPY (SELECT tenant_id FROM billing_invoice) TO STDOUT") as copy:
        return {int(v) for v in b"".join(bytes(c) for c in copy).decode().split()}


def _driver():
    # Straight to psycopg: neither the execute wrapper nor the COPY guard sees it, so only
    # the values tenant_context put on the open transaction when it switched apply.
    raw = connections["app"].connection
    return {row[0] for row in raw.execute("SELECT tenant_id FROM billing_invoice").fetchall()}


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
    "sync driver": lambda tenant: _in(tenant, _driver),
    "async select": _async(_select),
    "async copy": _async(_copy),
}


def _in(tenant, read):
    with tenant_context(tenant):
        return read()


def _open_iterator():
    rows = Invoice.unscoped.using("app").iterator(chunk_size=1)  # streamed: no sort
    return rows, {next(rows).tenant_id}


def _finish_iterator(rows, seen):
    try:
        return seen | {invoice.tenant_id for invoice in rows}
    finally:
        rows.close()


async def _task(kind, tenant):
    """One coroutine's request for ``tenant``, yielding to the others between every step: the
    others switch tenants (on the same connection) while it is inside its own context,
    between its statements and in the middle of its iterator."""
    with tenant_context(tenant):
        await asyncio.sleep(0)
        if kind == "iterator":
            rows, seen = await sync_to_async(_open_iterator)()
            await asyncio.sleep(0)
            seen = await sync_to_async(_finish_iterator)(rows, seen)
        else:
            seen = await sync_to_async({"select": _select, "copy": _copy}[kind])()
        await asyncio.sleep(0)
        return seen


def _concurrently(tasks, tenants):
    async def run():
        return await asyncio.gather(
            *(_task(kind, tenants[index]) for kind, index in tasks), return_exceptions=True
        )

    for (_kind, index), outcome in zip(tasks, async_to_sync(run)(), strict=True):
        if isinstance(outcome, CrossTenantError):
            continue  # refused, not answered: a switch while another tenant's cursor is open
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome <= {tenants[index].pk}


sequential = st.tuples(
    st.sampled_from(sorted(READS) + ["iterator"]),
    st.integers(0, TENANTS - 1),
    st.sampled_from(sorted(READS)),
    st.integers(0, TENANTS - 1),
)
concurrent = st.lists(
    st.tuples(st.sampled_from(["select", "copy", "iterator"]), st.integers(0, TENANTS - 1)),
    min_size=2, max_size=3,
)
step = st.one_of(sequential, concurrent)


def _alter_policy(signed):
    """Give billing_invoice the signed or the plain policy, committed (the application role
    reads through its own connection)."""
    from data_arch.tenancy import sql

    def alter():
        connection = connections["default"]
        try:
            quote = connection.ops.quote_name
            function = f"{quote('public')}.{quote(sql.VERIFY_FUNCTION)}" if signed else None
            predicate = sql.tenant_predicate(quote, "tenant_id", "bigint", function)
            with connection.cursor() as cursor:
                cursor.execute(
                    f"ALTER POLICY {quote(sql.POLICY_NAME)} ON billing_invoice USING "
                    f"({predicate}) WITH CHECK ({predicate})",
                    ["data_arch.tenant_id", "data_arch.tenant_id"],
                )
                cursor.execute("SELECT qual FROM pg_policies WHERE tablename = 'billing_invoice'")
                (qual,) = cursor.fetchone()
            assert (sql.VERIFY_FUNCTION in qual) == signed, qual
        finally:
            connection.close()

    thread = threading.Thread(target=alter)
    thread.start()
    thread.join(120)


# Module scope: set up before, and torn down after, the test's own transactions (which hold
# the table the policy is altered on).
@pytest.fixture(scope="module", params=["signed policy", "plain policy"])
def policy(request, committed, app_role):
    if request.param == "signed policy":
        yield request.param
        return
    tenancy = {**django_settings.DATA_ARCH.get("TENANCY", {}), "SIGNED_CONTEXT": False}
    _alter_policy(signed=False)
    try:
        with override_settings(DATA_ARCH={**django_settings.DATA_ARCH, "TENANCY": tenancy}):
            yield request.param
    finally:
        _alter_policy(signed=True)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, min_size=1, max_size=6), atomic=st.booleans())
def test_random_switches_iterators_and_copy_never_cross_tenants(
    committed, app_role, policy, steps, atomic
):
    tenants = committed
    # The test's own transaction wraps "app" already; ``atomic`` adds a savepoint level.
    with transaction.atomic(using="app") if atomic else _nothing():
        with connections["app"].cursor() as cursor:
            _shared["cursor"] = cursor
            for item in steps:
                if isinstance(item, list):
                    _concurrently(item, tenants)
                    continue
                kind, index, inner_kind, inner_index = item
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
