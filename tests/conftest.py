import pytest
import pytest_django.fixtures
from django_tenants.utils import get_public_schema_name, schema_context

from tests.factories import ClientFactory

TENANT_SCHEMAS = ("tenant_a", "tenant_b")

# pytest-django creates the test databases the collected tests ask for, which it reads from
# their django_db marker or db/transactional_db fixture. Tests that reach the database through
# the session's tenant schemas or tests/partitioning's committed_db (maintenance commits once
# per partition, so no wrapping transaction) carry neither: a module of them run alone asked
# for no database and ran against the settings' own, unmigrated one. They ask for default and
# replica.
_databases_for_test = pytest_django.fixtures._get_databases_for_test
_USE_THE_DATABASE = {"committed_db", "migrated_tenant_schemas"}


def _databases_including_fixture_users(test):
    databases, serialized = _databases_for_test(test)
    if not databases and _USE_THE_DATABASE & set(getattr(test, "fixturenames", ())):
        return ("default", "replica"), False
    return databases, serialized


pytest_django.fixtures._get_databases_for_test = _databases_including_fixture_users


@pytest.fixture(scope="session")
def migrated_tenant_schemas(django_db_setup, django_db_blocker):
    """Create and migrate the test tenants' schemas once per session (it runs migrations)."""
    with django_db_blocker.unblock():
        for schema in TENANT_SCHEMAS:
            ClientFactory(schema_name=schema)
    return TENANT_SCHEMAS


@pytest.fixture
def tenant_schemas(migrated_tenant_schemas, django_db_blocker):
    """Two tenants, tenant_a and tenant_b, whose schemas exist and are migrated.

    A ``transaction=True`` test flushes the tenant rows (not the schemas) when it ends, so the
    rows are put back here before each test; with the schema already there that is cheap.
    """
    with django_db_blocker.unblock():
        for schema in TENANT_SCHEMAS:
            ClientFactory(schema_name=schema)
    return TENANT_SCHEMAS


@pytest.fixture
def tenant(tenant_schemas, db):
    """A django-tenants tenant whose schema exists and is migrated."""
    from example_project.customers.models import Client

    client = Client.objects.get(schema_name=tenant_schemas[0])
    with schema_context(get_public_schema_name()):
        yield client
