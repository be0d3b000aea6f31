"""Model-driven invalidation on every write path, applied on commit and never on rollback."""

import pytest
from django.db import transaction

from data_arch.caching import (
    cached,
    engine,
    get_or_load,
    invalidate_model,
    invalidate_tag,
    metrics,
    namespace,
)
from data_arch.tenancy import tenant_context
from example_project.shop.models import Customer, Order
from tests.factories import CustomerFactory, OrderFactory

pytestmark = pytest.mark.django_db


@cached(60, models=[Order])
def order_count():
    return Order.objects.count()


@cached(60, models=["shop.Customer"])
def customer_names():
    return sorted(Customer.objects.values_list("name", flat=True))


@pytest.fixture
def in_tenant(tenant):
    with tenant_context(tenant):
        yield tenant


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Run set-up writes as if committed, so their invalidations are not pending later."""

    def run(make):
        with django_capture_on_commit_callbacks(execute=True):
            return make()

    return run


@pytest.fixture
def customer(in_tenant, committed):
    return committed(CustomerFactory)


def write_and_check(commit_hooks, write, expected_after, bumps=1):
    """Prime the cache, write inside a transaction, prove nothing changes before commit."""
    before = order_count()
    with commit_hooks(execute=True) as callbacks, transaction.atomic():
        write()
        assert order_count() == before, "invalidated before commit"
    assert len(callbacks) == bumps, "one bump per written model per transaction"
    assert order_count() == expected_after


def test_save(customer, django_capture_on_commit_callbacks):
    write_and_check(django_capture_on_commit_callbacks, lambda: OrderFactory(customer=customer), 1)


def test_instance_delete(customer, committed, django_capture_on_commit_callbacks):
    order = committed(lambda: OrderFactory(customer=customer))
    write_and_check(django_capture_on_commit_callbacks, order.delete, 0)


def test_queryset_update(customer, committed, django_capture_on_commit_callbacks):
    committed(lambda: OrderFactory.create_batch(3, customer=customer))

    @cached(60, models=[Order])
    def paid():
        return Order.objects.filter(status="paid").count()

    assert paid() == 0
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        Order.objects.update(status="paid")
    assert len(callbacks) == 1
    assert paid() == 3


def test_bulk_create(customer, django_capture_on_commit_callbacks):
    write_and_check(
        django_capture_on_commit_callbacks,
        lambda: Order.objects.bulk_create(
            [Order(customer=customer, total_cents=i) for i in range(5)]
        ),
        5,
    )


def test_bulk_update(customer, committed, django_capture_on_commit_callbacks):
    orders = committed(lambda: OrderFactory.create_batch(2, customer=customer))

    @cached(60, models=[Order])
    def revenue():
        return sum(Order.objects.values_list("total_cents", flat=True))

    before = revenue()
    for order in orders:
        order.total_cents += 1000
    with django_capture_on_commit_callbacks(execute=True):
        Order.objects.bulk_update(orders, ["total_cents"])
    assert revenue() == before + 2000


def test_queryset_delete(customer, committed, django_capture_on_commit_callbacks):
    committed(lambda: OrderFactory.create_batch(4, customer=customer))
    write_and_check(django_capture_on_commit_callbacks, lambda: Order.objects.all().delete(), 0)


def test_cascade_delete_through_the_parent(customer, committed, django_capture_on_commit_callbacks):
    committed(lambda: OrderFactory.create_batch(2, customer=customer))
    write_and_check(django_capture_on_commit_callbacks, customer.delete, 0, bumps=2)


def test_rollback_invalidates_nothing(customer, django_capture_on_commit_callbacks, redis_client):
    order_count()
    gen_key = namespace().model_generation("shop.order")
    generation = redis_client.get(gen_key)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                OrderFactory(customer=customer)
                Order.objects.update(status="paid")
                raise RuntimeError("rolled back")
    assert callbacks == []
    assert redis_client.get(gen_key) == generation
    assert order_count() == 0


def test_savepoint_rollback_drops_only_its_own_invalidation(
    customer, django_capture_on_commit_callbacks
):
    order_count()
    names = customer_names()
    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        CustomerFactory(name="kept")
        with pytest.raises(RuntimeError), transaction.atomic():
            OrderFactory(customer=customer)
            raise RuntimeError("savepoint rolled back")
    assert len(callbacks) == 1
    assert order_count() == 0
    assert customer_names() == sorted([*names, "kept"])


def test_unrelated_models_are_untouched(customer, django_capture_on_commit_callbacks):
    order_count()
    metrics.reset()
    with django_capture_on_commit_callbacks(execute=True):
        CustomerFactory()
    assert metrics.total("invalidation") == 1  # customer only
    order_count()
    assert metrics.total("hit") == 1


def test_writes_in_one_tenant_do_not_invalidate_another(
    tenant_schemas, django_capture_on_commit_callbacks
):
    from example_project.customers.models import Client

    a = Client.objects.get(schema_name="tenant_a")
    b = Client.objects.get(schema_name="tenant_b")
    with tenant_context(b):
        assert order_count() == 0
    with tenant_context(a):
        with django_capture_on_commit_callbacks(execute=True):
            OrderFactory()
        assert order_count() == 1
    with tenant_context(b):
        assert order_count() == 0
    assert metrics.total("hit") == 1


def test_explicit_tag_and_model_invalidation(
    in_tenant, committed, django_capture_on_commit_callbacks
):
    values = iter(range(100))
    load = lambda: next(values)  # noqa: E731
    assert get_or_load("tagged", load, 60, tags=["pricing"]) == 0
    assert get_or_load("tagged", load, 60, tags=["pricing"]) == 0
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        invalidate_tag("pricing")
        assert get_or_load("tagged", load, 60, tags=["pricing"]) == 0
    assert get_or_load("tagged", load, 60, tags=["pricing"]) == 1
    committed(lambda: invalidate_model(Order))  # no models= on this entry: unaffected
    assert get_or_load("tagged", load, 60, tags=["pricing"]) == 1


def test_value_computed_across_an_invalidation_is_not_stored(in_tenant):
    gen_key = namespace().model_generation("shop.order")

    def racing_loader():
        # A write commits while we load: our result may predate it, so it must not be kept.
        engine().bump([gen_key])
        return "maybe stale"

    assert get_or_load("race", racing_loader, 60, models=[Order]) == "maybe stale"
    assert metrics.total("store_skipped") == 1
    assert get_or_load("race", lambda: "fresh", 60, models=[Order]) == "fresh"
    assert get_or_load("race", lambda: "again", 60, models=[Order]) == "fresh"


def test_a_flush_is_one_counter_increment(in_tenant, committed, redis_client):
    for i in range(50):
        get_or_load(("many", i), lambda i=i: i, 60, models=[Order])
    before = set(redis_client.keys("*"))
    gen_key = namespace().model_generation("shop.order")
    generation = int(redis_client.get(gen_key))
    committed(lambda: invalidate_model(Order))
    assert int(redis_client.get(gen_key)) == generation + 1
    after = set(redis_client.keys("*"))
    assert before <= after  # nothing scanned or deleted
    # the one key added: the namespace's record of the write's WAL position
    assert after - before <= {namespace().positions_key().encode()}
    assert all(get_or_load(("many", i), lambda: -1, 60, models=[Order]) == -1 for i in range(50))
