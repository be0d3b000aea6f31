"""django-tenants sets the tenant on the primary connection; reads on a replica get it too."""

import pytest
from django.db import connections
from django_tenants.utils import get_public_schema_name

from data_arch.routing import routing_context

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "replica"])


@pytest.fixture
def two_tenants(transactional_db):
    """The tenants of the session's ``tenant_schemas``, made sure of for this test.

    Not the session fixture itself: this test's flush empties the tenant table, and the
    session fixture would not put the rows back for the tests after it that rely on them.
    Creating a row whose schema already exists skips the schema's migrations.
    """
    from tests.factories import ClientFactory

    return [ClientFactory(schema_name=name) for name in ("tenant_a", "tenant_b")]


def test_replica_connection_carries_the_tenant_schema(two_tenants, wait_for_replica):
    from example_project.shop.models import Customer

    wait_for_replica()  # the tenants may have been created moments ago
    primary = connections["default"]
    tenant_a, tenant_b = two_tenants
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
