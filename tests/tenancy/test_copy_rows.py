"""copy_rows() into a row-level tenant model: the current tenant's rows only, RLS enforced."""

import datetime as dt

import pytest
from django.apps import apps
from django.db import connections, models, transaction
from django_tenants.utils import schema_context

from data_arch.conf import tenancy_settings
from data_arch.partitioning import MonthlyPartitioning, apply, copy_rows, plan
from data_arch.tenancy import CrossTenantError, NoTenantError, tenant_context
from data_arch.tenancy import sql as tenancy_sql
from data_arch.tenancy.models import TenantModel
from tests.tenancy.conftest import APP_ROLE

JUNE = dt.datetime(2026, 6, 10, tzinfo=dt.UTC)
TABLE = "billing_copy_reading"

pytestmark = pytest.mark.django_db(databases="__all__")  # what a test writes is rolled back


@pytest.fixture(scope="module")
def reading(row_tenants, app_role):
    """A monthly-partitioned row-level model with RLS, readable and writable by the app role
    (``live_db``, through ``row_tenants``: the table is committed)."""

    class Reading(TenantModel):
        at = models.DateTimeField()
        value = models.IntegerField()

        class Meta:
            app_label = "billing"
            db_table = TABLE
            constraints = [  # noqa: RUF012 -- Django's Meta option
                MonthlyPartitioning(field="at", name="billing_copy_reading_part")
            ]

    connection = connections["default"]
    try:
        with schema_context("public"):
            with connection.schema_editor() as editor:
                editor.create_model(Reading)
            apply(plan(models_=["billing.Reading"], ahead=1, now=JUNE))
            with connection.cursor() as cursor:
                # The billing migrations' policy: the tenant id as the signed context verifies it.
                config = tenancy_settings()
                function = (f"public.{connection.ops.quote_name(tenancy_sql.VERIFY_FUNCTION)}"
                            if config.signed_context else None)
                for statement, params in tenancy_sql.enable_rls(
                    connection.ops.quote_name, TABLE, "tenant_id", "bigint", config.rls_setting,
                    function,
                ):
                    cursor.execute(statement, params)
                cursor.execute(f'GRANT SELECT, INSERT ON {TABLE} TO "{APP_ROLE}"')
                cursor.execute(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{APP_ROLE}"')
        yield Reading
    finally:
        with schema_context("public"), connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {TABLE} CASCADE")
        del apps.all_models["billing"]["reading"]
        apps.clear_cache()


def stored(reading, tenants) -> list[tuple[int, int]]:
    """(tenant_id, value) of the rows the app role sees, tenant by tenant (the policy bounds
    what it sees; its test transaction holds what it wrote)."""
    found = []
    for tenant in tenants:
        with tenant_context(tenant):
            found += reading.unscoped.using("app").values_list("tenant_id", "value")
    return sorted(found)


@pytest.fixture
def empty(reading):
    return reading


def test_rows_are_written_for_the_current_tenant_through_rls(empty, row_tenants):
    a, b = row_tenants[:2]
    with tenant_context(a):
        written = copy_rows(
            empty, [empty(at=JUNE, value=n) for n in range(3)] + [{"at": JUNE, "value": 3}],
            using="app",
        )
    assert written == 4
    assert stored(empty, [a, b]) == [(a.pk, 0), (a.pk, 1), (a.pk, 2), (a.pk, 3)]
    with tenant_context(b):
        assert empty.objects.using("app").count() == 0  # the policy hides them from b
        copy_rows(empty, [(JUNE, 9)], fields=["at", "value"], using="app")
        assert list(empty.objects.using("app").values_list("value", flat=True)) == [9]


def test_a_row_of_another_tenant_refuses_the_whole_copy(empty, row_tenants):
    a, b = row_tenants[:2]
    rows = [empty(at=JUNE, value=n) for n in range(10)]
    rows[5].tenant_id = b.pk
    with tenant_context(a), pytest.raises(CrossTenantError, match="nothing was written"):
        copy_rows(empty, rows, using="app")
    with tenant_context(a), pytest.raises(CrossTenantError):
        copy_rows(empty, [{"at": JUNE, "value": 1, "tenant_id": b.pk}], using="default")
    assert stored(empty, [a, b]) == []
    assert empty.unscoped.using("default").count() == 0


def test_without_a_tenant_nothing_is_written(empty, row_tenants):
    with pytest.raises(NoTenantError):
        copy_rows(empty, [empty(at=JUNE, value=1)], using="app")
    with pytest.raises(NoTenantError):
        copy_rows(empty, [empty(at=JUNE, value=1)])  # as the superuser too
    assert stored(empty, row_tenants[:2]) == []
    assert empty.unscoped.using("default").count() == 0


def test_explicit_ids_are_refused(empty, row_tenants):
    with tenant_context(row_tenants[0]), pytest.raises(CrossTenantError, match="leave 'id' out"):
        copy_rows(empty, [(1, JUNE, 1)], fields=["id", "at", "value"], using="app")


def test_a_bare_copy_by_a_role_under_rls_is_refused_so_rows_are_staged(empty, row_tenants):
    """PostgreSQL refuses COPY FROM into a table whose policies apply to the role, whatever the
    rows: copy_rows() copies into a temporary table and moves the rows with one INSERT, which
    the policy checks (the test above wrote through it as the app role)."""
    a = row_tenants[0]
    refused = pytest.raises(Exception, match="COPY FROM not supported with row-level")
    statement = f"COPY {TABLE} (tenant_id, at, value) FROM STDIN"
    app = connections["app"]
    with (
        tenant_context(a), refused, transaction.atomic(using="app"),
        app.cursor() as cursor, cursor.copy(statement) as copy,
    ):
        copy.write_row((a.pk, JUNE, 1))
    with connections["app"].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'data_arch_copy_%%'")
        assert cursor.fetchone()[0] == 0  # no staging table is left behind
    assert stored(empty, [a]) == []
