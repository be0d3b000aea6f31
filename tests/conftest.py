import pytest
from django_tenants.utils import get_public_schema_name, schema_context

from tests.factories import ClientFactory


@pytest.fixture(scope="session")
def tenant_schemas(django_db_setup, django_db_blocker):
    """Two tenant schemas, migrated once per session (creating a schema runs migrations)."""
    with django_db_blocker.unblock():
        for schema in ("tenant_a", "tenant_b"):
            ClientFactory(schema_name=schema)
    return ("tenant_a", "tenant_b")


@pytest.fixture
def tenant(tenant_schemas, db):
    """A django-tenants tenant whose schema exists and is migrated."""
    from example_project.customers.models import Client

    client, _ = Client.objects.get_or_create(
        schema_name=tenant_schemas[0], defaults={"name": "Tenant A"}
    )
    with schema_context(get_public_schema_name()):
        yield client
