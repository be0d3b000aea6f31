import datetime as dt

import pytest
from django.db import connection
from django_tenants.utils import schema_context

from data_arch.partitioning import sql
from example_project.customers.models import Client

# A fixed "now": mid-month, so retention by END and by START would disagree.
NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)
TABLE = "events_event"


def reset_events(schema: str) -> None:
    """Leave ``schema``'s events table with only its (empty) default partition."""
    with schema_context(schema), connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'",
            [sql.qualified(schema, TABLE)],
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f"DROP TABLE {sql.qualified(schema, name)}")
        # Standalone leftovers (detached partitions, half-made tables) and archives.
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname LIKE %s AND c.relkind = 'r' AND NOT c.relispartition",
            [schema, TABLE + "_p%"],
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f"DROP TABLE {sql.qualified(schema, name)}")
        # Recorders left by runs killed mid-drain (a trigger, its function and its table).
        default = sql.default_name(TABLE)
        cursor.execute(
            "SELECT substr(tgname, %s) FROM pg_trigger WHERE tgrelid = %s::regclass "
            "AND tgname LIKE %s",
            [len(sql.fit_name(default, "_stranger_")) + 1, sql.qualified(schema, default),
             sql.stranger_pattern(default)],
        )
        for (token,) in cursor.fetchall():
            for statement in sql.drop_stranger_capture(schema, default, token):
                cursor.execute(statement)
        cursor.execute(f"DROP SCHEMA IF EXISTS {sql.quote(schema + ';archive')} CASCADE")
        cursor.execute(f"TRUNCATE {sql.qualified(schema, TABLE)}")


@pytest.fixture
def committed_db(django_db_setup, django_db_blocker):
    """Database access without a wrapping transaction and without a flush afterwards.

    Maintenance commits once per partition, so it cannot run inside the test transaction; and a
    flush would delete the session's tenants (public rows) that later test modules rely on.
    Each fixture below cleans up exactly what its tests create.
    """
    from django.conf import settings

    # pytest-django creates the test database only when some collected test asks for ``db``;
    # test_apply_refuses_to_run_inside_a_transaction does, so run the module, not one test.
    if not settings.DATABASES["default"]["NAME"].startswith("test_"):
        pytest.fail("no test database: include a test that uses the `db` fixture in this run")
    with django_db_blocker.unblock():
        yield


@pytest.fixture
def events(tenant_schemas, committed_db):
    """tenant_a's events table, emptied; the tenants' rows exist in public."""
    for schema in tenant_schemas:
        Client.objects.get_or_create(schema_name=schema, defaults={"name": schema})
        reset_events(schema)
    with schema_context("tenant_a"):
        yield "tenant_a"
    for schema in tenant_schemas:
        reset_events(schema)


def partitions(schema: str = "tenant_a") -> list[tuple[str, str]]:
    """(name, bound) of every partition, bounds printed in UTC."""
    with schema_context(schema), connection.cursor() as cursor:
        cursor.execute("SET TimeZone = 'UTC'")
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass ORDER BY 1",
            [sql.qualified(schema, TABLE)],
        )
        rows = cursor.fetchall()
        cursor.execute("RESET TimeZone")
    return rows
