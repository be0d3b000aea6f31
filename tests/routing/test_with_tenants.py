"""django-tenants sets the tenant on the primary connection; reads on a replica get it too."""

import pytest
from django.db import connections
from django_tenants.utils import get_public_schema_name

from data_arch.routing import routing_context

# available_apps leaves customers out of the flush after the test, so the tenant rows the
# session's tenant_schemas fixture created survive for later tests.
pytestmark = pytest.mark.django_db(
    transaction=True,
    databases=["default", "replica"],
    available_apps=["django.contrib.contenttypes", "django.contrib.auth", "example_project.shop"],
)


def test_replica_connection_carries_the_tenant_schema(tenant_schemas, wait_for_replica):
    from example_project.customers.models import Client
    from example_project.shop.models import Customer

    wait_for_replica()  # the session fixture created the tenants moments ago
    primary = connections["default"]
    tenant_a = Client.objects.get(schema_name="tenant_a")
    tenant_b = Client.objects.get(schema_name="tenant_b")
    try:
        primary.set_tenant(tenant_a)  # what TenantMainMiddleware does: the primary only
        Customer.objects.create(name="only in a", email="a@example.com")
        wait_for_replica()
        with routing_context():
            found = Customer.objects.get(name="only in a")
            assert found._state.db == "replica"
            assert connections["replica"].schema_name == "tenant_a"
        primary.set_tenant(tenant_b)
        with routing_context():
            assert Customer.objects.all().db == "replica"
            assert not Customer.objects.filter(name="only in a").exists()
            assert connections["replica"].schema_name == "tenant_b"
    finally:
        primary.set_tenant(tenant_a)
        Customer.objects.filter(name="only in a")._raw_delete(using="default")
        primary.set_schema_to_public()
        connections["replica"].set_schema_to_public()
        assert primary.schema_name == get_public_schema_name()
