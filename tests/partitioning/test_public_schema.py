"""A shared (public schema) partitioned model: maintenance, archive mode, admin and the ORM."""

import datetime as dt

import pytest
from django.db import connection
from django_tenants.utils import schema_context

from data_arch.partitioning import apply, plan, sql, status
from data_arch.testing.pytest_plugin import replica_caught_up
from example_project.audit.models import AuditEntry


@pytest.fixture
def audit(committed_db):
    def reset():
        with schema_context("public"), connection.cursor() as cursor:
            cursor.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relname LIKE 'audit_auditentry_p%%' AND c.relkind = 'r'"
            )
            for (name,) in cursor.fetchall():
                cursor.execute(f"DROP TABLE {sql.qualified('public', name)}")
            cursor.execute("DROP SCHEMA IF EXISTS archive CASCADE")
            cursor.execute("TRUNCATE audit_auditentry")

    reset()
    with schema_context("public"):
        yield
    reset()


def test_shared_model_partitions_live_in_public_and_archive_to_the_archive_schema(audit):
    now = dt.datetime(2026, 6, 15, tzinfo=dt.UTC)
    apply(plan(models_=["audit.AuditEntry"], ahead=8, now=dt.datetime(2025, 5, 1, tzinfo=dt.UTC)))
    the_plan = plan(models_=["audit.AuditEntry"], now=now)
    assert the_plan.tables[0].schema == "public"
    kinds = {a.kind for a in the_plan.tables[0].actions}
    assert kinds == {"create", "archive"}
    apply(the_plan)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'archive' AND c.relkind = 'r' ORDER BY 1"
        )
        assert [row[0] for row in cursor.fetchall()] == ["audit_auditentry_p2025_05"]
    assert status(models_=["audit.AuditEntry"], now=now)[0].months_ahead == 2


@pytest.fixture
def admin_client(audit, client):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_superuser("partition-admin", "a@example.com", "x")
    client.force_login(user)
    yield client
    user.delete()


def test_admin_and_orm_work_on_a_partitioned_model(audit, admin_client):
    apply(plan(models_=["audit.AuditEntry"]))
    entry = AuditEntry.objects.create(at=dt.datetime.now(dt.UTC), action="login")
    assert AuditEntry.objects.get(pk=entry.pk) == entry
    # admin_client logged in outside any request, so no WAL cookie carries that write to the
    # requests below: let the replica catch up, as the next real request would find it.
    replica_caught_up()
    response = admin_client.get("/admin/audit/auditentry/")
    assert response.status_code == 200 and b"login" in response.content
    response = admin_client.get(f"/admin/audit/auditentry/{entry.pk}/change/")
    assert response.status_code == 200
    entry.action = "logout"
    entry.save()
    assert AuditEntry.objects.filter(action="logout").count() == 1
