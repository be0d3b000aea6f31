"""Property-based isolation: random reads and writes across many tenants never see or change
another tenant's rows -- through the ORM (sync and async), raw SQL as the application role
under RLS, and the replica."""

import itertools

import pytest
from asgiref.sync import async_to_sync
from django.db import DatabaseError, connections, transaction
from django.db.models import Count, Sum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_arch.tenancy import CrossTenantError, tenant_context
from example_project.billing.models import Account

pytestmark = pytest.mark.django_db(databases="__all__")

PROPERTY_SETTINGS = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
_serial = itertools.count()


@pytest.fixture(scope="module")
def seeded(row_tenants, live_db):
    """Three committed accounts per tenant, for all eight tenants."""
    for tenant in row_tenants:
        with tenant_context(tenant):
            Account.objects.bulk_create(
                Account(name=f"seed {n}", email=f"seed{n}@t{tenant.pk}.com") for n in range(3)
            )
    return row_tenants


def snapshot(alias="default"):
    rows = Account.unscoped.using(alias).values_list("tenant_id", "id", "name", "email")
    by_tenant = {}
    for tenant_id, *row in rows:
        by_tenant.setdefault(tenant_id, set()).add(tuple(row))
    return by_tenant


def others(state, tenant_pk):
    return {k: v for k, v in state.items() if k != tenant_pk}


def run_async(coroutine_function, *args):
    async def runner():
        return await coroutine_function(*args)

    return async_to_sync(runner)()


def own(objs, tenant_pk):
    objs = list(objs)
    assert all(o.tenant_id == tenant_pk for o in objs), "a row of another tenant was returned"
    return objs


def orm_op(name, tenant_pk, foreign_pk, value):
    """Run one ORM operation as tenant ``tenant_pk``; assert what it returns is its own."""
    m = Account.objects
    n = next(_serial)
    if name == "create":
        own([m.create(name=f"c{value}", email=f"c{n}@x.com")], tenant_pk)
    elif name == "acreate":
        own([run_async(lambda: m.acreate(name=f"a{value}", email=f"a{n}@x.com"))], tenant_pk)
    elif name == "bulk_create":
        own(m.bulk_create([Account(name="b", email=f"b{n}-{i}@x.com") for i in range(2)]), tenant_pk)
    elif name == "bulk_create_foreign":
        with pytest.raises(CrossTenantError):
            m.bulk_create([Account(name="f", email=f"f{n}@x.com", tenant_id=foreign_pk)])
    elif name == "abulk_create":
        own(run_async(lambda: m.abulk_create([Account(name="ab", email=f"ab{n}@x.com")])), tenant_pk)
    elif name == "update":
        m.filter(name__startswith="c").update(name=f"u{value}")
    elif name == "aupdate":
        run_async(lambda: m.filter(pk__gte=value).aupdate(name=f"au{value}"))
    elif name == "update_any_pk":
        m.filter(pk=value).update(name="hijack")
    elif name == "delete_any_pk":
        m.filter(pk=value).delete()
    elif name == "adelete":
        run_async(lambda: m.filter(name__startswith="a", pk__gt=value).adelete())
    elif name == "bulk_update":
        objs = own(m.order_by("pk")[:2], tenant_pk)
        for obj in objs:
            obj.name = f"bu{value}"
        m.bulk_update(objs, ["name"])
    elif name == "bulk_update_foreign":
        foreign = Account.unscoped.filter(tenant_id=foreign_pk).first()
        foreign.name = "stolen"
        with pytest.raises(CrossTenantError):
            m.bulk_update([foreign], ["name"])
    elif name == "save_foreign":
        foreign = Account.unscoped.filter(tenant_id=foreign_pk).first()
        with pytest.raises(CrossTenantError):
            foreign.save()
    elif name == "reads":
        pks = set(Account.unscoped.values_list("pk", flat=True))
        own(m.all(), tenant_pk)
        own(m.iterator(chunk_size=2), tenant_pk)
        own(m.in_bulk(list(pks)).values(), tenant_pk)
        own([x for x in [m.first(), m.last()] if x is not None], tenant_pk)
        count = m.count()
        assert count == Account.unscoped.filter(tenant_id=tenant_pk).count()
        assert m.exists() == (count > 0)
        assert m.aggregate(n=Count("pk"))["n"] == count
        assert {v["tenant"] for v in m.values("tenant")} <= {tenant_pk}
        foreign = Account.unscoped.filter(tenant_id=foreign_pk).first()
        assert not m.contains(foreign)
        with pytest.raises(Account.DoesNotExist):
            m.get(pk=foreign.pk)
        assert "billing_account" in m.explain()
    elif name == "async_reads":
        count = run_async(lambda: m.acount())
        assert count == Account.unscoped.filter(tenant_id=tenant_pk).count()
        assert run_async(lambda: m.aexists()) == (count > 0)
        assert run_async(lambda: m.aaggregate(n=Count("pk")))["n"] == count
        every_pk = list(Account.unscoped.values_list("pk", flat=True))
        in_bulk = run_async(lambda: m.ain_bulk(every_pk))
        own(in_bulk.values(), tenant_pk)

        async def collect():
            return [a async for a in m.aiterator(chunk_size=3)]

        own(run_async(collect), tenant_pk)
        first = run_async(lambda: m.afirst())
        own([first] if first else [], tenant_pk)


ORM_OPS = [
    "create", "acreate", "bulk_create", "bulk_create_foreign", "abulk_create", "update",
    "aupdate", "update_any_pk", "delete_any_pk", "adelete", "bulk_update",
    "bulk_update_foreign", "save_foreign", "reads", "async_reads",
]


@PROPERTY_SETTINGS
@given(
    steps=st.lists(
        st.tuples(
            st.integers(0, 7), st.integers(0, 7), st.sampled_from(ORM_OPS), st.integers(0, 400)
        ),
        min_size=1, max_size=8,
    )
)
def test_orm_operations_never_touch_another_tenant(seeded, steps):
    for tenant_index, foreign_index, name, value in steps:
        tenant = seeded[tenant_index]
        foreign = seeded[(tenant_index + 1 + foreign_index % 7) % 8]
        foreign_pk = foreign.pk
        with tenant_context(foreign):  # earlier deletes may have emptied it
            if not Account.objects.exists():
                Account.objects.create(name="refill", email=f"refill{next(_serial)}@x.com")
        before = snapshot()
        with tenant_context(tenant), transaction.atomic():
            orm_op(name, tenant.pk, foreign_pk, value)
        assert others(snapshot(), tenant.pk) == others(before, tenant.pk), name


RAW_SQL = {
    "select_all": "SELECT tenant_id, id FROM billing_account",
    "count_all": "SELECT tenant_id, count(*) FROM billing_account GROUP BY tenant_id",
    "update_all": "UPDATE billing_account SET name = name || '.' RETURNING tenant_id, id",
    "delete_some": "DELETE FROM billing_account WHERE id %% 5 = %s RETURNING tenant_id, id",
    "insert_foreign": "INSERT INTO billing_account (tenant_id, name, email, created_at) "
                      "VALUES (%s, 'raw', %s, now()) RETURNING tenant_id, id",
    "insert_own": "INSERT INTO billing_account (tenant_id, name, email, created_at) "
                  "VALUES (%s, 'raw', %s, now()) RETURNING tenant_id, id",
}


def app_snapshot(tenants):
    """Every tenant's rows as the application role sees them (each in its own context)."""
    state = {}
    for tenant in tenants:
        with tenant_context(tenant):
            state[tenant.pk] = set(
                Account.unscoped.using("app").values_list("id", "name", "email")
            )
    return state


@PROPERTY_SETTINGS
@given(
    steps=st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(0, 7)), st.integers(0, 7),
            st.sampled_from(sorted(RAW_SQL)), st.integers(0, 4),
        ),
        min_size=1, max_size=8,
    )
)
def test_raw_sql_as_the_application_role_stays_in_its_tenant(seeded, app_role, steps):
    for tenant_index, foreign_index, name, value in steps:
        tenant = None if tenant_index is None else seeded[tenant_index]
        foreign_pk = seeded[foreign_index].pk
        before = app_snapshot(seeded)
        params = {
            "delete_some": [value],
            "insert_foreign": [foreign_pk, f"r{next(_serial)}@x.com"],
            "insert_own": [tenant.pk if tenant else foreign_pk, f"r{next(_serial)}@x.com"],
        }.get(name)
        returned = None
        refused = name.startswith("insert") and (
            tenant is None or (name == "insert_foreign" and foreign_pk != tenant.pk)
        )
        with tenant_context(tenant) if tenant else _no_tenant():
            try:
                with transaction.atomic(using="app"), connections["app"].cursor() as cursor:
                    cursor.execute(RAW_SQL[name], params)
                    returned = cursor.fetchall()
            except DatabaseError as exc:  # RLS refusing a row
                assert "row-level security" in str(exc), exc
                assert refused, f"{name} was refused: {exc}"
            else:
                assert not refused, f"{name} wrote a row outside the current tenant"
        if returned is not None:
            assert {row[0] for row in returned} <= ({tenant.pk} if tenant else set())
        after = app_snapshot(seeded)
        untouched = after if tenant is None else others(after, tenant.pk)
        expected = before if tenant is None else others(before, tenant.pk)
        assert untouched == expected, name


class _no_tenant:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@PROPERTY_SETTINGS
@given(order=st.permutations(range(8)))
def test_replica_reads_follow_the_tenant(seeded, app_role, wait_for_replica, order):
    wait_for_replica()
    expected = {
        t.pk: Account.unscoped.filter(tenant_id=t.pk, name__startswith="seed").count()
        for t in seeded
    }
    for index in order:
        tenant = seeded[index]
        with tenant_context(tenant):
            for alias in ("replica", "app_replica"):
                rows = own(Account.objects.using(alias).filter(name__startswith="seed"), tenant.pk)
                assert len(rows) == expected[tenant.pk]
            with connections["app_replica"].cursor() as cursor:
                cursor.execute("SELECT DISTINCT tenant_id FROM billing_account")
                assert cursor.fetchall() == [(tenant.pk,)]
    assert Account.unscoped.using("app_replica").count() == 0
    assert sum(expected.values()) == 24
    assert Account.unscoped.using("replica").aggregate(s=Sum("tenant_id"))["s"] is not None


@PROPERTY_SETTINGS
@given(visits=st.lists(st.one_of(st.none(), st.integers(0, 7)), min_size=2, max_size=10))
def test_one_pooled_connection_reused_across_tenants_never_leaks(seeded, app_role, visits):
    import threading

    seen = []

    def requests():
        try:
            for index in visits:
                tenant = None if index is None else seeded[index]
                with tenant_context(tenant) if tenant else _no_tenant():
                    with connections["app_pool"].cursor() as cursor:
                        cursor.execute("SELECT DISTINCT tenant_id FROM billing_account")
                        raw = {row[0] for row in cursor.fetchall()}
                    orm = set(Account.unscoped.using("app_pool").values_list("tenant_id", flat=True))
                seen.append((tenant.pk if tenant else None, raw, orm))
                connections["app_pool"].close()  # back to the pool for the next "request"
        finally:
            connections["app_pool"].close()

    connections["app_pool"].close()
    thread = threading.Thread(target=requests)
    thread.start()
    thread.join()
    assert len(seen) == len(visits)
    for tenant_pk, raw, orm in seen:
        expected = set() if tenant_pk is None else {tenant_pk}
        assert raw == expected and orm == expected
