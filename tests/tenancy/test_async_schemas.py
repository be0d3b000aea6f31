"""Schema tenants under ASGI: the current tenant's schema follows the contextvar into
``sync_to_async`` threads and async ORM methods, whatever schema the thread's connection is in."""

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connections

from data_arch.tenancy import Tenant, tenant_context
from example_project.shop.models import Customer

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture
def customers(tenant_schemas):
    for schema in tenant_schemas:
        with tenant_context(Tenant(pk=None, schema_name=schema)):
            Customer.objects.create(name=f"of {schema}", email=f"c@{schema}.com")
    yield
    connections["default"].set_schema_to_public()


def test_async_tenant_context_moves_sync_to_async_reads_and_async_writes(customers):
    def names():
        return sorted(Customer.objects.values_list("name", flat=True))

    async def request():
        # What TenantMainMiddleware does under ASGI: the sync thread's connection is put in
        # the host's tenant; the async code then works for another tenant.
        await sync_to_async(connections["default"].set_schema)("tenant_a")
        with tenant_context(Tenant(pk=None, schema_name="tenant_b")):
            read = await sync_to_async(names)()
            await Customer.objects.acreate(name="async in b", email="x@b.com")
            counted = await Customer.objects.acount()
        return read, counted

    read, counted = async_to_sync(request)()
    assert read == ["of tenant_b"]
    assert counted == 2
    with tenant_context(Tenant(pk=None, schema_name="tenant_a")):
        assert names() == ["of tenant_a"]
    with tenant_context(Tenant(pk=None, schema_name="tenant_b")):
        assert names() == ["async in b", "of tenant_b"]


def test_a_thread_connection_left_in_another_schema_does_not_move_the_tenant(customers):
    connections["default"].set_schema("tenant_a")
    with tenant_context(Tenant(pk=None, schema_name="tenant_b")):
        connections["default"].set_schema("tenant_a")  # as if code switched it behind our back
        assert list(Customer.objects.values_list("name", flat=True)) == ["of tenant_b"]
