"""Scenario 7: tenant isolation under concurrency, through Django's pool and through PgBouncer.

Twelve tenants -- two with a schema of their own (``shop``: customers with the same ids in
both), ten known only by their rows in the shared, RLS-protected billing tables -- are served
concurrently by the example project running as an ordinary role (not owner, superuser or
BYPASSRLS) on Django's connection pool, while Celery tasks run for the row tenants. Then the
same through PgBouncer in transaction mode, where one server connection serves every tenant in
turn. Invariants: every answer holds exactly the tenant's own rows -- by the ORM, by raw SQL
that only the row-level policy filters, from the cache and from the replica -- and every write
lands in its own tenant.
"""

from __future__ import annotations

import contextlib
import datetime
import random
import threading
from collections import Counter

import pytest
from django.db import connections

from data_arch.testing.pytest_plugin import replica_caught_up
from tests.reliability.conftest import LIVE, Load, database_settings, latency_line, tenant_hosts

pytestmark = [pytest.mark.slow, LIVE]

ROLE = "data_arch_reliability_app"
SCHEMAS = ("tenant_a", "tenant_b")
ROW_TENANTS = 10
INVOICES = 6
DAY = datetime.date(2026, 2, 1)
BILLING = ("billing_account", "billing_invoice", "billing_contact")


@pytest.fixture
def tenants(live_db, tenant_schemas):
    """{host: (tenant pk, schema or None)}, with customers, orders and invoices per tenant."""
    from django_tenants.utils import schema_context

    from data_arch.tenancy import Tenant, tenant_context
    from example_project.billing.models import Account, Invoice
    from example_project.customers.models import Client, Domain
    from example_project.shop.models import Customer, Order

    connections["default"].set_schema_to_public()  # an earlier request may have left a tenant's
    for table in ("billing_invoice", "billing_contact", "billing_account"):
        with connections["default"].cursor() as cursor:
            cursor.execute(f"DELETE FROM {table}")
    hosts = {host: (Client.objects.get(schema_name=schema).pk, schema)
             for schema, host in tenant_hosts(SCHEMAS).items()}
    for schema in SCHEMAS:
        with schema_context(schema):
            Order.objects.all().delete()
            Customer.objects.all().delete()
            # The same ids in both schemas: a read in the wrong one finds the other's row.
            with connections["default"].cursor() as cursor:
                cursor.execute("ALTER SEQUENCE shop_customer_id_seq RESTART WITH 1")
            Customer.objects.create(name=f"{schema} buyer", email="b@example.com")
    for number in range(ROW_TENANTS):
        client = Client(schema_name=f"rel_row_{number}", name=f"Row tenant {number}")
        client.auto_create_schema = False
        client.save()
        host = f"rel-row-{number}.localhost"
        Domain.objects.create(domain=host, tenant=client, is_primary=True)
        hosts[host] = (client.pk, None)
    for pk, _schema in hosts.values():
        with tenant_context(Tenant(pk=pk)):
            account = Account.objects.create(name="acc", email=f"a@t{pk}.example.com")
            Invoice.objects.bulk_create(
                Invoice(account=account, number=f"T{pk}-{n}", total_cents=n, issued_on=DAY,
                        due_on=DAY) for n in range(INVOICES)
            )
    yield hosts
    with connections["default"].cursor() as cursor:
        for table in ("billing_invoice", "billing_contact", "billing_account"):
            cursor.execute(f"DELETE FROM {table}")
    Client.objects.filter(schema_name__startswith="rel_row_").delete()
    for schema in SCHEMAS:
        with schema_context(schema):
            Order.objects.all().delete()
            Customer.objects.all().delete()


@pytest.fixture
def app_role(live_db, tenants, streaming_replica):
    """An ordinary role with the application's privileges on public and the tenant schemas."""
    schemas = ", ".join(("public", *SCHEMAS))
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [ROLE])
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE ROLE "{ROLE}" LOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT')
        cursor.execute(f'GRANT USAGE ON SCHEMA {schemas} TO "{ROLE}"')
        cursor.execute(
            f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schemas} TO "{ROLE}"')
        cursor.execute(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schemas} TO "{ROLE}"')
        cursor.execute(f'REVOKE ALL ON data_arch_rls_secret FROM "{ROLE}"')
    replica_caught_up()  # the role exists on the standby before the server connects there
    yield ROLE
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [ROLE])
        cursor.execute(f'DROP OWNED BY "{ROLE}"')
        with contextlib.suppress(Exception):
            cursor.execute(f'DROP ROLE "{ROLE}"')


def _run_tenants(server, hosts: dict, seconds: float, tasks: bool):
    """Concurrent requests (and tasks) for random tenants; returns (results, violations)."""
    from data_arch.tenancy import Tenant, tenant_context
    from example_project.billing.tasks import invoice_numbers

    lock = threading.Lock()
    acked = {host: 0 for host in hosts}
    started = {host: 0 for host in hosts}
    violations: list[str] = []
    schema_hosts = [host for host, (_, schema) in hosts.items() if schema]
    row_hosts = [host for host, (_, schema) in hosts.items() if not schema]

    def expected_invoices(pk: int) -> list:
        return [[pk, f"T{pk}-{n}"] for n in sorted(range(INVOICES), key=lambda n: f"T{pk}-{n}")]

    def step(worker: int, i: int):
        host = random.choice(list(hosts))
        pk, schema = hosts[host]
        kind = random.choice(["orm", "raw", "stats", "customer", "order", "task"]
                             if tasks else ["orm", "raw", "stats", "customer", "order"])
        if kind in ("stats", "customer", "order") and schema is None:
            host = random.choice(schema_hosts)
            pk, schema = hosts[host]
        if kind == "task" and worker == 0:
            host = random.choice(row_hosts)
            pk, _ = hosts[host]
            with tenant_context(Tenant(pk=pk)):
                result = invoice_numbers.delay()
            seen = result.get(timeout=60)[0]
            own = sorted(f"T{pk}-{n}" for n in range(INVOICES))
            if seen["tenant"] != pk or seen["numbers"] != own:
                violations.append(f"task for tenant {pk} saw {seen}")
            return type("R", (), {"status": 200, "seconds": 0.0, "body": {}, "kind": "task"})()
        if kind == "task":
            kind = "orm"
        if kind in ("orm", "raw"):
            result = server.request("GET", "/api/invoices" + ("?raw=1" if kind == "raw" else ""),
                                    host)
            if result.status == 200 and result.body["invoices"] != expected_invoices(pk):
                violations.append(f"{kind} invoices for tenant {pk}: {result.body['invoices']}")
        elif kind == "customer":
            result = server.request("GET", "/api/customers/1", host)
            if result.status == 200 and result.body["name"] != f"{schema} buyer":
                violations.append(f"customer 1 of {schema}: {result.body}")
        elif kind == "order":
            with lock:
                started[host] += 1
            result = server.request("POST", "/api/orders", host,
                                    {"customer": 1, "total_cents": 1})
            if result.status == 201:
                with lock:
                    acked[host] += 1
        else:
            with lock:
                floor = acked[host]
            result = server.request("GET", "/api/stats", host)
            with lock:
                ceiling = started[host]
            if result.status == 200 and not floor <= result.body["orders"] <= ceiling:
                violations.append(f"stats of {schema}: {result.body['orders']} orders, "
                                  f"expected {floor}..{ceiling}")
        result.kind = kind
        return result

    with Load(step, workers=6) as load:
        load.run_phase("load", min_seconds=seconds, min_requests=600)
    return [r for _, r in load.results], violations, acked


def _check_orders(hosts: dict, acked: dict) -> None:
    from django_tenants.utils import schema_context

    from example_project.shop.models import Order

    for host, (_, schema) in hosts.items():
        if schema:
            with schema_context(schema):
                assert Order.objects.count() == acked[host], (schema, acked[host])


def _report(title: str, results, violations) -> None:
    failed = [r for r in results if r.status not in (200, 201)]
    kinds = Counter(r.kind for r in results)
    print(f"\nscenario 7, {title}: {len(results)} requests and tasks {dict(kinds)}, "
          f"{len(violations)} cross-tenant answers, {len(failed)} failed")
    print("  " + latency_line([r for r in results if r.kind != "task"]))
    assert not violations, violations[:5]
    assert not failed, [(r.status, r.body) for r in failed[:5]]


def test_no_tenant_sees_or_writes_another_tenants_rows_on_djangos_pool(
    tenants, app_role, celery_worker, example_server
):
    pool = {"USER": app_role, "PASSWORD": "", "CONN_MAX_AGE": 0,
            "OPTIONS": {"pool": {"min_size": 2, "max_size": 8}}}
    server = example_server(database_settings(default=pool, replica=pool), threads=8)
    results, violations, acked = _run_tenants(server, tenants, seconds=8, tasks=True)
    _report("Django's pool, an ordinary role, a Celery worker", results, violations)
    assert {"orm", "raw", "stats", "customer", "order", "task"} <= {r.kind for r in results}
    served = Counter(r.body.get("db") for r in results if r.kind == "customer")
    print(f"  customer reads served by {dict(served)}")
    assert served["replica"] > 0
    _check_orders(tenants, acked)


def test_no_tenant_sees_or_writes_another_tenants_rows_through_pgbouncer(
    tenants, app_role, example_server
):
    from harness import services

    primary_port = int(connections["default"].settings_dict["PORT"])
    replica_port = int(connections["replica"].settings_dict["PORT"])
    try:
        bouncers = [services.start_pgbouncer(port, pool_size=2, users=(app_role,))
                    for port in (primary_port, replica_port)]
    except services.ServiceError as exc:
        pytest.skip(f"no PgBouncer to test through: {exc}")
    try:
        through = {alias: {"USER": app_role, "PASSWORD": "", "HOST": "127.0.0.1",
                           "PORT": str(bouncer.port), "CONN_MAX_AGE": 0}
                   for alias, bouncer in zip(("default", "replica"), bouncers)}
        # The signed context (the default) binds to the pool behind a transaction pooler.
        server = example_server(database_settings(**through), threads=8)
        results, violations, acked = _run_tenants(server, tenants, seconds=8, tasks=False)
        _report("PgBouncer in transaction mode (2 server connections per server)", results,
                violations)
        _check_orders(tenants, acked)
    finally:
        for bouncer in bouncers:
            bouncer.stop()
