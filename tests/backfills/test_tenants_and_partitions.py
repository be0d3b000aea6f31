"""Backfills per tenant (the example project's) and per partition, and the Celery task."""

import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django_tenants.utils import schema_context

from data_arch.backfills import run
from data_arch.backfills.models import BackfillCursor, State
from example_project.shop.models import Customer

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture
def customers(tenant_schemas, committed):
    for schema in tenant_schemas:
        with schema_context(schema), connections["default"].cursor() as cursor:
            cursor.execute("TRUNCATE shop_customer CASCADE")
            cursor.execute(
                "INSERT INTO shop_customer (name, email, created_at) "
                "SELECT 'c' || g, 'c' || g || '@' || %s || '.Example', now() "
                "FROM generate_series(1, 300) g", [schema])  # rows from before the column
    yield tenant_schemas
    for schema in tenant_schemas:
        with schema_context(schema), connections["default"].cursor() as cursor:
            cursor.execute("TRUNCATE shop_customer CASCADE")


def domains(schema):
    with schema_context(schema):
        return set(Customer.objects.values_list("email_domain", flat=True))


def test_the_example_backfill_runs_per_tenant_with_a_cursor_each(customers):
    with pytest.raises(CommandError, match="runs per tenant: pass --tenant SCHEMA or --all-tenants"):
        call_command("backfill", "run", "shop.customer_email_domain")
    call_command("backfill", "run", "shop.customer_email_domain", "--tenant", "tenant_a")
    assert domains("tenant_a") == {"tenant_a.example"}
    assert domains("tenant_b") == {None}
    call_command("backfill", "run", "shop.customer_email_domain", "--all-tenants")
    assert domains("tenant_b") == {"tenant_b.example"}
    cursors = {c.tenant: c for c in BackfillCursor.objects.using("default").filter(
        name="shop.customer_email_domain")}
    assert set(cursors) >= {"tenant_a", "tenant_b"}
    assert all(cursors[t].state == State.DONE and cursors[t].rows_done == 300
               for t in ("tenant_a", "tenant_b"))


@pytest.mark.parametrize("tenant", ["nope", "bad name"])
def test_an_unknown_or_malformed_tenant_is_a_command_error(customers, tenant):
    with pytest.raises(CommandError, match="--tenant"):
        call_command("backfill", "run", "shop.customer_email_domain", "--tenant", tenant)


@pytest.fixture
def parted(committed):
    with connections["default"].cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bf_parted")
        cursor.execute(
            "CREATE TABLE bf_parted (id bigint NOT NULL, at date NOT NULL, n int NOT NULL "
            "DEFAULT 0, PRIMARY KEY (id, at)) PARTITION BY RANGE (at)")
        cursor.execute("CREATE TABLE bf_parted_p2026_01 PARTITION OF bf_parted "
                       "FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')")
        cursor.execute("CREATE TABLE bf_parted_p2026_02 PARTITION OF bf_parted "
                       "FOR VALUES FROM ('2026-02-01') TO ('2026-03-01')")
        cursor.execute("CREATE TABLE bf_parted_default PARTITION OF bf_parted DEFAULT")
        cursor.execute("INSERT INTO bf_parted (id, at) SELECT g, date '2026-01-01' + (g % 75) "
                       "FROM generate_series(1, 3000) g")
    yield
    with connections["default"].cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bf_parted")


def test_a_partitioned_table_is_walked_partition_by_partition(parted):
    results = run("bf_parted")
    assert sorted(p.partition for p in results) == [
        "bf_parted_default", "bf_parted_p2026_01", "bf_parted_p2026_02"]
    assert all(p.state == State.DONE for p in results)
    assert sum(p.rows_done for p in results) == 3000
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT n, count(*) FROM bf_parted GROUP BY n")
        assert dict(cursor.fetchall()) == {1: 3000}


@pytest.mark.slow
def test_the_celery_task_runs_a_tenant_backfill_on_a_real_worker(customers, celery_worker):
    from data_arch.backfills.tasks import run_backfill

    result = run_backfill.delay("shop.customer_email_domain", tenant="tenant_b")
    [progress] = result.get(timeout=60)
    assert progress["state"] == "done" and progress["tenant"] == "tenant_b"
    assert progress["rows_done"] == 300
    assert domains("tenant_b") == {"tenant_b.example"}
    assert domains("tenant_a") == {None}


def _migrate_enqueue(schema: str, enqueue: bool) -> None:
    """What ``migrate_schemas`` does with the example's 0002 in ``schema``: run the operation."""
    from data_arch.backfills.operations import EnqueueBackfill

    operation = EnqueueBackfill("shop.customer_email_domain", enqueue=enqueue)
    with schema_context(schema), connections["default"].schema_editor() as editor:
        operation.database_forwards("shop", editor, None, None)


def test_the_migration_operation_marks_the_backfill_pending_and_changes_no_row(customers):
    for schema in customers:
        _migrate_enqueue(schema, enqueue=False)
    rows = BackfillCursor.objects.using("default").filter(name="shop.customer_email_domain")
    assert sorted(rows.values_list("tenant", "state")) == [(s, State.PENDING) for s in customers]
    assert all(domains(schema) == {None} for schema in customers)  # queued, not run inline


@pytest.mark.slow
def test_the_migration_operation_with_enqueue_sends_the_task_after_commit(customers, celery_worker):
    _migrate_enqueue("tenant_a", enqueue=True)
    rows = BackfillCursor.objects.using("default").filter(name="shop.customer_email_domain",
                                                         tenant="tenant_a")
    deadline = time.monotonic() + 60
    while not rows.filter(state=State.DONE).exists():
        assert time.monotonic() < deadline, list(rows.values_list("state", "error"))
        time.sleep(0.2)
    assert domains("tenant_a") == {"tenant_a.example"}
    assert domains("tenant_b") == {None}  # another tenant's migration did not run it here
