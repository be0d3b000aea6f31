"""Fixtures for tenancy tests: committed row-level tenants and an ordinary application role.

Row-level isolation is proven on committed data read through other connections (the
application role, the replica, a Celery worker), so the module-scoped fixtures write outside
pytest-django's per-test transaction and clean up after themselves. Tests themselves run with
``django_db(databases="__all__")``: what they write is rolled back.
"""

from __future__ import annotations

import contextlib

import pytest
from django.db import connections

from data_arch.tenancy import Tenant
from data_arch.testing.pytest_plugin import replica_caught_up

APP_ROLE = "data_arch_test_app"
ROW_TENANTS = 8


@pytest.fixture(scope="session")
def live_db(django_db_setup, django_db_blocker):
    """Database access outside test transactions (writes commit)."""
    with django_db_blocker.unblock():
        yield


def _purge_billing() -> None:
    with connections["default"].cursor() as cursor:
        # DELETE, not TRUNCATE: replaying a TRUNCATE on the standby waits for every replica
        # reader of these tables (up to max_standby_streaming_delay) and stalls replication.
        for table in ("billing_invoice", "billing_contact", "billing_account"):
            cursor.execute(f"DELETE FROM {table}")


@pytest.fixture(scope="module")
def row_tenants(live_db):
    """``ROW_TENANTS`` tenants of the shared billing tables (no schema of their own)."""
    from example_project.customers.models import Client

    clients = []
    for number in range(ROW_TENANTS):
        client = Client(schema_name=f"row_tenant_{number}", name=f"Row tenant {number}")
        client.auto_create_schema = False
        client.save()
        clients.append(client)
    _purge_billing()
    yield [Tenant(pk=client.pk) for client in clients]
    _purge_billing()
    Client.objects.filter(pk__in=[c.pk for c in clients]).delete()


def _add_alias(alias: str, base: str, **changes) -> None:
    settings_dict = {**connections[base].settings_dict, **changes}
    settings_dict["TEST"] = {**settings_dict.get("TEST", {}), "MIRROR": base}
    connections.settings[alias] = settings_dict


def _drop_alias(alias: str) -> None:
    with contextlib.suppress(Exception):
        connections[alias].close()
    with contextlib.suppress(Exception):
        connections[alias].close_pool()
    connections.settings.pop(alias, None)
    with contextlib.suppress(AttributeError):
        delattr(connections._connections, alias)


@pytest.fixture(scope="session")
def app_role(live_db, data_arch_services):
    """An ordinary role (not superuser, not BYPASSRLS, not owner) as the ``app`` alias on the
    primary and ``app_replica`` on the streaming replica."""
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", [APP_ROLE]
        )
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE ROLE "{APP_ROLE}" LOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT')
        cursor.execute(f'GRANT USAGE ON SCHEMA public TO "{APP_ROLE}"')
        cursor.execute(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON billing_account, billing_invoice, "
            f'billing_contact, customers_client TO "{APP_ROLE}"'
        )
        cursor.execute(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{APP_ROLE}"')
    if data_arch_services.has_streaming_replica:
        replica_caught_up()  # the role must exist on the standby before anyone connects there
    app = {**connections["default"].settings_dict, "USER": APP_ROLE, "PASSWORD": ""}
    app["TEST"] = {**app.get("TEST", {}), "MIRROR": None}
    connections.settings["app"] = app
    _add_alias("app_replica", "replica", USER=APP_ROLE, PASSWORD="")
    _add_alias(
        "app_pool", "default", USER=APP_ROLE, PASSWORD="", CONN_MAX_AGE=0,
        OPTIONS={**connections["default"].settings_dict.get("OPTIONS", {}),
                 "pool": {"min_size": 1, "max_size": 1}},
    )
    yield APP_ROLE
    for alias in ("app", "app_replica", "app_pool"):
        _drop_alias(alias)
    with connections["default"].cursor() as cursor:
        # Pools and other threads' connections may outlive the aliases; the test database
        # can only be dropped once they are gone.
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
            [APP_ROLE],
        )
        cursor.execute(f'DROP OWNED BY "{APP_ROLE}"')
        with contextlib.suppress(Exception):
            cursor.execute(f'DROP ROLE "{APP_ROLE}"')
