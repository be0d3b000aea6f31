"""copy_rows() invalidates a cached model on commit, as bulk_create() does."""

import pytest
from django.db import transaction

from data_arch.caching import cached
from data_arch.partitioning import copy_rows
from data_arch.tenancy import tenant_context
from example_project.shop.models import Order
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


@cached(60, models=[Order])
def copied_orders():
    return Order.objects.count()


def test_copy_rows_invalidates_the_model_on_commit_and_not_before(
    tenant, django_capture_on_commit_callbacks
):
    with tenant_context(tenant):
        with django_capture_on_commit_callbacks(execute=True):
            customer = CustomerFactory()
        before = copied_orders()
        with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
            assert copy_rows(Order, [Order(customer=customer, total_cents=n) for n in range(4)]) == 4
            assert copied_orders() == before, "invalidated before commit"
        assert len(callbacks) == 1
        assert copied_orders() == before + 4
