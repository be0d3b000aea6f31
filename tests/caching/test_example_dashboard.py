"""The example project's dashboard is served through the cache helpers, per tenant."""

import pytest
from django.db import transaction

from data_arch.caching import metrics
from example_project.customers.models import Client
from tests.factories import DomainFactory, OrderFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def hosts(tenant_schemas):
    from django.db import connection

    hosts = {schema: f"{schema.replace('_', '-')}.localhost" for schema in tenant_schemas}
    for schema, host in hosts.items():
        DomainFactory(tenant=Client.objects.get(schema_name=schema), domain=host)
    yield hosts
    connection.set_schema_to_public()  # the tenant middleware leaves the last request's schema


def test_dashboard_is_cached_per_tenant_and_invalidated_by_orders(
    client, hosts, django_capture_on_commit_callbacks
):
    from django_tenants.utils import schema_context

    response = client.get("/", HTTP_HOST=hosts["tenant_a"])
    assert response.status_code == 200
    assert response.context["orders"] == 0
    client.get("/", HTTP_HOST=hosts["tenant_a"])
    assert metrics.snapshot()["hit"] == {"default:example_project.shop.stats.dashboard_stats": 1}

    with schema_context("tenant_a"), django_capture_on_commit_callbacks(execute=True):
        with transaction.atomic():
            OrderFactory(total_cents=1234)
    assert client.get("/", HTTP_HOST=hosts["tenant_a"]).context["orders"] == 1
    assert client.get("/", HTTP_HOST=hosts["tenant_b"]).context["orders"] == 0
    response = client.get("/", HTTP_HOST=hosts["tenant_a"])
    assert response.context["revenue"] == 12.34
