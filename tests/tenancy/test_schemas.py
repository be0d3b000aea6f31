"""Schema-per-tenant (django-tenants) with data_arch: per-transaction search_path on every
alias, shared tables next to tenant schemas, and DB metrics through ORIGINAL_BACKEND."""

import pytest
from django.db import connections
from django_prometheus.db import metrics as db_metrics

from data_arch.tenancy import Tenant, tenant_context
from example_project.shop.models import Customer

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture(scope="module")
def customers(migrated_tenant_schemas, live_db):
    """One committed customer in each tenant schema."""
    made = {}
    for schema in migrated_tenant_schemas:
        with tenant_context(Tenant(pk=None, schema_name=schema)):
            made[schema] = Customer.objects.create(name=f"of {schema}", email=f"c@{schema}.com").pk
    yield made
    for schema in migrated_tenant_schemas:
        with tenant_context(Tenant(pk=None, schema_name=schema)):
            Customer.objects.all().delete()


def names(alias):
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT name FROM shop_customer")
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.parametrize("alias", ["default", "replica"])
def test_each_schema_sees_its_own_rows_on_every_alias(customers, wait_for_replica, alias):
    wait_for_replica()
    for schema in customers:
        with tenant_context(Tenant(pk=None, schema_name=schema)):
            assert names(alias) == [f"of {schema}"]
            assert list(Customer.objects.using(alias).values_list("name", flat=True)) == [
                f"of {schema}"
            ]


@pytest.mark.parametrize("alias", ["default", "replica"])
def test_a_session_level_search_path_cannot_move_a_statement(customers, wait_for_replica, alias):
    wait_for_replica()
    with tenant_context(Tenant(pk=None, schema_name="tenant_b")):
        with connections[alias].cursor() as cursor:
            # As if a pooler handed over a server connection left in another schema.
            cursor.execute("SET search_path = tenant_a, public")
            cursor.execute("SELECT name FROM shop_customer")
            assert cursor.fetchall() == [("of tenant_b",)]


def test_shared_row_level_tables_work_inside_a_tenant_schema(customers, tenant):
    from example_project.billing.models import Account

    with tenant_context(tenant):
        account = Account.objects.create(name="in schema", email="s@s.com")
        assert account.tenant_id == tenant.pk
        assert list(Account.objects.all()) == [account]
        assert connections["default"].schema_name == tenant.schema_name


def test_db_metrics_flow_through_the_tenants_backend(customers):
    counter = db_metrics.execute_total.labels("default", "postgresql")
    before = counter._value.get()
    with tenant_context(Tenant(pk=None, schema_name="tenant_a")):
        Customer.objects.count()
        Customer.objects.exists()
    assert counter._value.get() >= before + 2
