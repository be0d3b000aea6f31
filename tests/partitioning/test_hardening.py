"""Maintenance keeps going where it safely can: cron runs without --yes, a broken tenant,
a table another run holds, odd catalog contents, retention that leaves the database usable."""

import datetime as dt
import threading
import time

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.test import override_settings
from django_tenants.utils import schema_context

from data_arch.partitioning import apply, plan, sql, status
from data_arch.partitioning.checks import check_declarations, check_partition_health
from tests.partitioning.conftest import NOW, TABLE, partitions
from tests.partitioning.test_public_schema import audit  # noqa: F401 -- the fixture


def at(year: int, month: int, day: int = 1) -> dt.datetime:
    return dt.datetime(year, month, day, tzinfo=dt.UTC)


def execute(schema: str, statement: str, params=None) -> None:
    with schema_context(schema), connection.cursor() as cursor:
        cursor.execute(statement, params)


def ok(result) -> bool:  # noqa: ANN001
    return not getattr(result, "failures", [])


def field(report, name: str):  # noqa: ANN001 -- a TableStatus
    return getattr(report, name) if hasattr(report, name) else report.get(name, ())


def months_after_apply(schema: str) -> set[str]:
    return {name for name, _ in partitions(schema)}


# ----------------------------------------------------------------- cron, config, the shown plan


def test_apply_without_yes_still_creates_months_when_retention_is_due(events, capsys):
    """A nightly `apply` (no --yes, no terminal) once retention falls due: months keep coming,
    retention waits for --yes, and the run does not fail."""
    apply(plan(models_=["events.Event"], ahead=1, now=at(2024, 1, 10)))
    call_command("partitions", "apply", "--tenant", events, "--retain", "3")
    names = months_after_apply(events)
    current = dt.datetime.now(dt.UTC)
    assert sql.partition_name(TABLE, dt.datetime(current.year, current.month, 1)) in names
    assert "events_event_p2024_01" in names  # retention did not run
    assert "retention skipped" in capsys.readouterr().err
    call_command("partitions", "apply", "--tenant", events, "--retain", "3", "--yes")
    assert "events_event_p2024_01" not in months_after_apply(events)


def test_ahead_beyond_retain_is_accepted(events):
    the_plan = plan(models_=["events.Event"], ahead=24, retain=6, now=NOW)
    assert len(the_plan.tables[0].actions) == 25


def test_plan_sql_is_a_script_that_runs_in_one_transaction(events, capsys):
    from example_project.events.models import Event

    apply(plan(models_=["events.Event"], ahead=1))
    Event.objects.create(occurred_at=dt.datetime(2031, 5, 2, tzinfo=dt.UTC), kind="login")
    script = plan(models_=["events.Event"], ahead=2).sql()
    assert script.startswith("-- partition maintenance; run in one transaction")
    with connection.cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.execute(f"SET LOCAL search_path = {sql.quote(events)}, public")
        cursor.execute(script)
        cursor.execute("COMMIT")
    assert not plan(models_=["events.Event"], ahead=2).pending
    report = status()[0]
    assert field(report, "default_rows") == 0 and field(report, "staging") in ({}, ())
    assert Event.objects.filter(occurred_at__year=2031).count() == 1


def test_two_partitioned_models_with_the_same_default_name_fail_the_check():
    from django.db import models

    from data_arch.partitioning import MonthlyPartitioning

    class Twin(models.Model):
        occurred_at = models.DateTimeField()

        class Meta:
            app_label = "events"
            constraints = [MonthlyPartitioning(field="occurred_at")]

    try:
        errors = [e for e in check_declarations() if e.id == "data_arch.E203"]
        assert len(errors) == 1 and "events.Event" in errors[0].msg and "events.Twin" in errors[0].msg
    finally:
        from django.apps import apps

        del apps.all_models["events"]["twin"]
        apps.clear_cache()


# ----------------------------------------------------------------- tenants, locks


def test_all_tenants_goes_on_past_a_broken_tenant_and_exits_non_zero(events, capsys):
    # tenant_a: a hand-made partition carries the name of next month's but other bounds, and a
    # MAXVALUE partition far ahead; tenant_b is healthy.
    now = dt.datetime.now(dt.UTC)
    nxt = dt.datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=dt.UTC)
    execute(
        events,
        f"CREATE TABLE {sql.quote(sql.partition_name(TABLE, nxt))} PARTITION OF {sql.quote(TABLE)} "
        "FOR VALUES FROM ('2040-01-01+00') TO ('2040-02-01+00')",
    )
    execute(
        events,
        f"CREATE TABLE events_event_far PARTITION OF {sql.quote(TABLE)} "
        "FOR VALUES FROM ('2050-01-01+00') TO (MAXVALUE)",
    )
    execute(
        events,
        f"CREATE TABLE events_event_old PARTITION OF {sql.quote(TABLE)} "
        "FOR VALUES FROM ('-infinity') TO ('2000-01-01+00')",
    )
    with schema_context("public"):
        with pytest.raises(CommandError, match="failure"):
            call_command("partitions", "apply", "--all-tenants", "--yes")
        call_command("partitions", "status", "--all-tenants")  # reads MAXVALUE / -infinity
        health = check_partition_health(databases=["default"])  # read, never raised or W202
        assert [w.id for w in health if w.id == "data_arch.W202"] == []
    err = capsys.readouterr().err
    assert f"tenant_a: {events}.{TABLE}: cannot create {sql.partition_name(TABLE, nxt)}" in err
    # tenant_b got every month; tenant_a got every month but the blocked one.
    assert len(partitions("tenant_b")) == 5
    assert len(partitions("tenant_a")) == 1 + 3 + 3


def test_a_table_held_by_another_run_is_reported_and_other_tables_do_not_wait(events):
    holding, release = threading.Event(), threading.Event()

    def other_run() -> None:
        with connection.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute(sql.try_table_lock("tenant_a", TABLE))
            holding.set()
            release.wait(10)
            cursor.execute("COMMIT")
        connections.close_all()

    thread = threading.Thread(target=other_run)
    thread.start()
    holding.wait(5)
    try:
        with override_settings(DATA_ARCH={"PARTITIONS": {"LOCK_RETRIES": 2}}):
            with schema_context("tenant_b"):
                other = apply(plan(models_=["events.Event"], ahead=1))
            busy = apply(plan(models_=["events.Event"], ahead=1))
    finally:
        release.set()
        thread.join()
    assert ok(other) and len(other.done) == 2
    assert busy.done == []
    assert [f.error for f in busy.failures] == [
        f"another run holds the maintenance lock of tenant_a.{TABLE}"
    ]


# ----------------------------------------------------------------- odd catalog contents


def test_generated_columns_reach_new_partitions(events):
    execute(
        events,
        f"ALTER TABLE {sql.quote(TABLE)} ADD COLUMN kind_upper text "
        "GENERATED ALWAYS AS (upper(kind)) STORED",
    )
    try:
        result = apply(plan(models_=["events.Event"], ahead=1))
        assert ok(result) and len(result.done) == 2
    finally:
        execute(events, f"ALTER TABLE {sql.quote(TABLE)} DROP COLUMN kind_upper")


def test_a_leftover_table_with_other_columns_is_refused_not_reused(events):
    name = sql.partition_name(TABLE, at(2026, 7))
    execute(events, f"CREATE TABLE {sql.quote(name)} (id bigint, occurred_at timestamptz)")
    execute(
        events,
        f"ALTER TABLE {sql.quote(name)} ADD CONSTRAINT {sql.quote(sql.constraint_name(name, '_bounds'))} "
        "CHECK (occurred_at IS NOT NULL)",
    )
    the_plan = plan(models_=["events.Event"], ahead=2, now=NOW)
    assert any("leftover staging table" in p for p in the_plan.tables[0].problems)
    result = apply(the_plan)
    assert ok(result) and len(result.done) == 2  # June and August; July refused


def test_a_dependent_view_keeps_its_partition_and_is_reported(events):
    apply(plan(models_=["events.Event"], ahead=8, now=at(2026, 1, 10)))
    execute(events, "CREATE VIEW january AS SELECT * FROM events_event_p2026_01")
    try:
        the_plan = plan(models_=["events.Event"], ahead=3, retain=3, now=NOW)
        assert [a.partition for a in the_plan.tables[0].actions if a.kind == "drop"] == [
            "events_event_p2026_02"
        ]
        assert any("january" in b for b in the_plan.tables[0].problems)
        apply(the_plan)
        names = months_after_apply(events)
        assert "events_event_p2026_01" in names and "events_event_p2026_02" not in names
    finally:
        execute(events, "DROP VIEW IF EXISTS january")


def _relation_exists(schema: str, name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [sql.qualified(schema, name)])
        return cursor.fetchone()[0]


def test_cascade_is_an_explicit_opt_in_and_the_plan_names_what_it_takes_along(events):
    apply(plan(models_=["events.Event"], ahead=8, now=at(2026, 1, 10)))
    execute(events, "CREATE VIEW january AS SELECT * FROM events_event_p2026_01")
    try:
        the_plan = plan(models_=["events.Event"], ahead=3, retain=3, now=NOW, cascade=True)
        table = the_plan.tables[0]
        assert [a.partition for a in table.actions if a.kind == "drop"] == [
            "events_event_p2026_01", "events_event_p2026_02",
        ]
        assert table.blocked == ()
        [january] = [a for a in table.actions if a.partition == "events_event_p2026_01"]
        assert january.cascade == ("january",)
        assert "CASCADE" in " ".join(january.statements) and "january" in str(the_plan)
        assert ok(apply(the_plan))
        assert not _relation_exists(events, "january")
        assert "events_event_p2026_01" not in months_after_apply(events)
    finally:
        execute(events, "DROP VIEW IF EXISTS january")


def test_a_dependent_that_appears_after_the_plan_is_not_dropped_by_cascade(events):
    apply(plan(models_=["events.Event"], ahead=8, now=at(2026, 1, 10)))
    the_plan = plan(models_=["events.Event"], ahead=3, retain=3, now=NOW, cascade=True)
    execute(events, "CREATE VIEW january AS SELECT * FROM events_event_p2026_01")
    try:
        result = apply(the_plan)
        assert [f.action for f in result.failures] == ["drop events_event_p2026_01"]
        assert "january" in result.failures[0].error
        assert _relation_exists(events, "january")  # never dropped without being shown
        assert "events_event_p2026_01" in months_after_apply(events)
        assert "events_event_p2026_02" not in months_after_apply(events)
    finally:
        execute(events, "DROP VIEW IF EXISTS january")


def test_a_dependent_made_after_the_detach_is_not_dropped_by_cascade(events):
    """The drop compares the dependents with the plan's again under its lock: a view made
    between the DETACH and the DROP (here by an event trigger at the end of the DETACH's
    ALTER TABLE, after the run's read) is refused, not taken along by CASCADE."""
    apply(plan(models_=["events.Event"], ahead=8, now=at(2026, 1, 10)))
    january = sql.qualified(events, "events_event_p2026_01")
    execute(events, f"CREATE VIEW january AS SELECT * FROM {january}")
    the_plan = plan(models_=["events.Event"], ahead=3, retain=3, now=NOW, cascade=True)
    [action] = [a for a in the_plan.tables[0].actions if a.partition == "events_event_p2026_01"]
    assert action.cascade == ("january",)
    try:
        execute(events, f"""
        CREATE FUNCTION {sql.quote(events)}.view_after_detach() RETURNS event_trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF NOT (SELECT relispartition FROM pg_class WHERE oid = to_regclass(
                        {sql.text_literal(january)}))
               AND to_regclass({sql.text_literal(sql.qualified(events, "late"))}) IS NULL THEN
                EXECUTE {sql.text_literal(
                    f"CREATE VIEW {sql.qualified(events, 'late')} AS SELECT * FROM {january}"
                )};
            END IF;
        END $$""")
        execute(events, "CREATE EVENT TRIGGER view_after_detach ON ddl_command_end WHEN TAG IN "
                        f"('ALTER TABLE') EXECUTE FUNCTION {sql.quote(events)}.view_after_detach()")
        result = apply(the_plan)
        assert [f.action for f in result.failures] == ["drop events_event_p2026_01"]
        assert "late" in result.failures[0].error
        assert _relation_exists(events, "late") and _relation_exists(events, "january")
        assert _relation_exists(events, "events_event_p2026_01")  # detached, not dropped
        assert "events_event_p2026_02" not in months_after_apply(events)
    finally:
        execute(events, "DROP EVENT TRIGGER IF EXISTS view_after_detach")
        execute(events, f"DROP FUNCTION IF EXISTS {sql.quote(events)}.view_after_detach()")
        execute(events, "DROP VIEW IF EXISTS late")
        execute(events, "DROP VIEW IF EXISTS january")


def test_cascade_comes_from_the_setting_or_the_command_option(events, capsys):
    apply(plan(models_=["events.Event"], ahead=8, now=at(2026, 1, 10)))
    execute(events, "CREATE VIEW january AS SELECT * FROM events_event_p2026_01")
    execute(events, "CREATE VIEW february AS SELECT * FROM events_event_p2026_02")
    try:
        with override_settings(DATA_ARCH={"PARTITIONS": {"DROP_CASCADE": True}}):
            the_plan = plan(models_=["events.Event"], ahead=3, retain=3, now=NOW)
        assert next(a.cascade for a in the_plan.tables[0].actions if a.kind == "drop")
        # The command: refused without --cascade (non-zero exit, the view stays) ...
        with pytest.raises(CommandError, match="failure"):
            call_command("partitions", "apply", "--tenant", events, "--retain", "3", "--yes")
        assert "--cascade" in capsys.readouterr().err
        assert _relation_exists(events, "january")
        # ... and done with it.
        call_command(
            "partitions", "apply", "--tenant", events, "--retain", "3", "--yes", "--cascade"
        )
        assert not _relation_exists(events, "january")
        assert not _relation_exists(events, "february")
    finally:
        execute(events, "DROP VIEW IF EXISTS january")
        execute(events, "DROP VIEW IF EXISTS february")


def test_a_malformed_drop_cascade_setting_is_a_configuration_error():
    from data_arch.checks import check_settings

    with override_settings(DATA_ARCH={"PARTITIONS": {"DROP_CASCADE": "yes"}}):
        errors = check_settings()
    assert [e.id for e in errors] == ["data_arch.E001"]
    assert "DATA_ARCH['PARTITIONS']['DROP_CASCADE'] must be True or False" in errors[0].msg


def test_an_interrupted_detach_concurrently_is_finished_with_finalize(events):
    apply(plan(models_=["events.Event"], ahead=8, now=at(2026, 1, 10)))
    execute(events, f"DROP TABLE {sql.quote(TABLE + '_default')}")
    holding, release = threading.Event(), threading.Event()

    def reader() -> None:
        with schema_context(events), connection.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute(f"SELECT count(*) FROM {sql.quote(TABLE)}")
            holding.set()
            release.wait(10)
            cursor.execute("COMMIT")
        connections.close_all()

    thread = threading.Thread(target=reader)
    thread.start()
    holding.wait(5)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '100ms'")
            with pytest.raises(Exception, match="lock timeout|canceling"):
                cursor.execute(
                    f"ALTER TABLE {sql.quote(TABLE)} DETACH PARTITION events_event_p2026_01 "
                    "CONCURRENTLY"
                )
            cursor.execute("RESET lock_timeout")
    finally:
        release.set()
        thread.join()
    try:
        report = status(now=NOW)[0]
        assert "events_event_p2026_01" in field(report, "pending_detach")
        settings = {"PARTITIONS": {"RETENTION_MODE": "detach", "DETACH_CONCURRENTLY": True}}
        with override_settings(DATA_ARCH=settings):
            the_plan = plan(models_=["events.Event"], ahead=3, retain=3, now=NOW)
            result = apply(the_plan)
        assert ok(result), result
        assert field(status(now=NOW)[0], "pending_detach") == ()
        assert "events_event_p2026_01" not in months_after_apply(events)
    finally:
        execute(events, sql.create_default(TABLE))


# ----------------------------------------------------------------- retention leaves a usable database


@pytest.mark.parametrize("mode", ["detach", "archive"])
def test_a_detached_or_archived_partition_no_longer_blocks_deleting_referenced_rows(events, mode):
    from example_project.events.models import Event
    from example_project.shop.models import Customer

    apply(plan(models_=["events.Event"], ahead=8, now=at(2026, 1, 10)))
    customer = Customer.objects.create(name="erase me", email="erase@example.com")
    Event.objects.create(occurred_at=at(2026, 1, 5), kind="login", customer=customer)
    with override_settings(DATA_ARCH={"PARTITIONS": {"RETENTION_MODE": mode}}):
        result = apply(plan(models_=["events.Event"], ahead=3, retain=3, now=NOW))
    assert ok(result), result
    Customer.objects.filter(pk=customer.pk).delete()  # the erasure of a customer still works
    assert not Customer.objects.filter(pk=customer.pk).exists()


# ----------------------------------------------------------------- archive schemas and tenants


def test_a_tenant_archive_schema_is_a_name_no_tenant_can_take(events):
    from data_arch.conf import partition_settings
    from data_arch.partitioning.plan import archive_schema_for
    from data_arch.tenancy import InvalidTenantError, validate_schema_name

    target = archive_schema_for("ten02", partition_settings())
    assert target == "ten02;archive"
    with pytest.raises(InvalidTenantError):
        validate_schema_name(target)  # so `ten02_archive` or any other signup can never be it


def test_shared_partitions_are_not_archived_into_a_tenants_schema(audit):  # noqa: F811
    from example_project.customers.models import Client

    # A tenant row whose schema name is the archive schema (bulk_create: no schema is made).
    Client.objects.bulk_create([Client(schema_name="archive", name="archive")])
    try:
        apply(plan(models_=["audit.AuditEntry"], ahead=8, now=at(2025, 5, 1)))
        the_plan = plan(models_=["audit.AuditEntry"], now=at(2026, 6, 15))
        assert not [a for a in the_plan.tables[0].actions if a.kind == "archive"]
        assert any("is a tenant's schema" in p for p in the_plan.tables[0].problems)
        apply(the_plan)
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regnamespace('archive') IS NULL")
            assert cursor.fetchone()[0]
    finally:
        Client.objects.filter(schema_name="archive").delete()


# ----------------------------------------------------------------- row-level security on partitions


def test_new_partitions_carry_the_parents_row_level_security(events):
    import psycopg

    from example_project.events.models import Event

    role = "partition_reader"
    execute(events, f"ALTER TABLE {sql.quote(TABLE)} ENABLE ROW LEVEL SECURITY")
    execute(events, f"ALTER TABLE {sql.quote(TABLE)} FORCE ROW LEVEL SECURITY")
    execute(events, f"CREATE POLICY only_logins ON {sql.quote(TABLE)} USING (kind = 'login')")
    execute(events, f"DROP ROLE IF EXISTS {role}")
    execute(events, f"CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS")
    try:
        result = apply(plan(models_=["events.Event"], ahead=1))
        assert ok(result) and len(result.done) == 2
        now = dt.datetime.now(dt.UTC)
        current = sql.partition_name(TABLE, dt.datetime(now.year, now.month, 1))
        with connection.cursor() as cursor:
            cursor.execute("SET row_security = off")  # the owner sees both rows to insert them
        execute(events, f"ALTER TABLE {sql.quote(TABLE)} NO FORCE ROW LEVEL SECURITY")
        Event.objects.create(occurred_at=now, kind="login")
        Event.objects.create(occurred_at=now, kind="page_view")
        execute(events, f"ALTER TABLE {sql.quote(TABLE)} FORCE ROW LEVEL SECURITY")
        execute(events, f"GRANT USAGE ON SCHEMA {sql.quote(events)} TO {role}")
        execute(events, f"GRANT SELECT ON {sql.qualified(events, current)} TO {role}")
        settings = connection.settings_dict
        with psycopg.connect(
            host=settings["HOST"], port=settings["PORT"], dbname=settings["NAME"], user=role
        ) as reader:
            kinds = reader.execute(
                f"SELECT kind FROM {sql.qualified(events, current)}"
            ).fetchall()
        assert kinds == [("login",)]  # read directly, the partition applies the policy
        problems = status()[0].problems
        assert any(p.startswith(f"{TABLE}_default lacks the row-level security") for p in problems)
    finally:
        execute(events, f"DROP POLICY IF EXISTS only_logins ON {sql.quote(TABLE)}")
        execute(events, f"ALTER TABLE {sql.quote(TABLE)} NO FORCE ROW LEVEL SECURITY")
        execute(events, f"ALTER TABLE {sql.quote(TABLE)} DISABLE ROW LEVEL SECURITY")
        execute(events, f"DROP OWNED BY {role}")
        execute(events, f"DROP ROLE IF EXISTS {role}")
        with connection.cursor() as cursor:
            cursor.execute("RESET row_security")


def test_a_grid_cut_in_another_time_zone_is_reported_not_overlapped(events):
    # pg_partman under America/New_York cuts months at 05:00 / 04:00 UTC.
    execute(
        events,
        f"CREATE TABLE events_event_ny PARTITION OF {sql.quote(TABLE)} "
        "FOR VALUES FROM ('2026-07-01 04:00+00') TO ('2026-08-01 04:00+00')",
    )
    the_plan = plan(models_=["events.Event"], ahead=3, now=NOW)
    problems = the_plan.tables[0].problems
    assert any("events_event_ny has bounds that are not UTC month starts" in p for p in problems)
    created = [a.partition for a in the_plan.tables[0].actions]
    assert "events_event_p2026_06" in created and "events_event_p2026_09" in created
    assert "events_event_p2026_07" not in created and "events_event_p2026_08" not in created
    result = apply(the_plan)
    assert ok(result)


def test_rows_outside_the_window_get_their_own_months_so_the_default_stays_empty(events):
    """Every later ATTACH scans the whole default under lock: rows far ahead and rows of past
    months still kept get partitions, so that scan stays trivial."""
    from example_project.events.models import Event

    apply(plan(models_=["events.Event"], ahead=1, now=NOW))
    Event.objects.bulk_create(
        [Event(occurred_at=at(2099, 1, 5), kind="login") for _ in range(30)]
        + [Event(occurred_at=at(2026, 2, 5), kind="login") for _ in range(20)]  # kept (13 months)
        + [Event(occurred_at=at(2024, 1, 5), kind="login") for _ in range(5)]  # past retention
    )
    result = apply(plan(models_=["events.Event"], ahead=1, now=NOW))
    assert ok(result)
    names = months_after_apply(events)
    assert {"events_event_p2099_01", "events_event_p2026_02"} <= names
    assert "events_event_p2024_01" not in names
    report = status(now=NOW)[0]
    assert report.default_rows == 5  # only the rows older than what is kept, and reported:
    assert any("2024-01 sit in the default partition and are older" in p
               for p in plan(models_=["events.Event"], ahead=1, now=NOW).tables[0].problems)


def test_a_row_level_partitioned_model_has_tenant_leading_keys_and_rls_on_every_partition(
    committed_db,
):
    from django.apps import apps
    from django.db import models

    from data_arch.partitioning import MonthlyPartitioning
    from data_arch.tenancy import sql as tenancy_sql
    from data_arch.tenancy.models import TenantModel

    class Reading(TenantModel):
        at = models.DateTimeField()

        class Meta:
            app_label = "billing"
            db_table = "billing_reading"
            constraints = [MonthlyPartitioning(field="at", name="billing_reading_partitioning")]

    table = Reading._meta.db_table
    try:
        with schema_context("public"):
            with connection.schema_editor() as editor:
                editor.create_model(Reading)
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT array_agg(a.attname ORDER BY array_position(x.indkey::int2[], "
                    "a.attnum)) FROM pg_index x JOIN pg_attribute a ON a.attrelid = x.indrelid "
                    "AND a.attnum = ANY(x.indkey) WHERE x.indrelid = %s::regclass AND x.indisprimary",
                    [table],
                )
                assert cursor.fetchone()[0] == ["tenant_id", "id", "at"]
                for statement, params in tenancy_sql.enable_rls(
                    connection.ops.quote_name, table, "tenant_id", "bigint", "data_arch.tenant"
                ):
                    cursor.execute(statement, params)
            result = apply(plan(models_=["billing.Reading"], ahead=1))
            assert ok(result) and len(result.done) == 2
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT c.relname, c.relrowsecurity AND c.relforcerowsecurity, "
                    "(SELECT array_agg(polname) FROM pg_policy WHERE polrelid = c.oid) "
                    "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = %s::regclass AND NOT c.relname LIKE '%%default' "
                    "ORDER BY 1",
                    [table],
                )
                rows = cursor.fetchall()
            assert len(rows) == 2
            assert all(secured and policies == [tenancy_sql.POLICY_NAME]
                       for _, secured, policies in rows)
    finally:
        with schema_context("public"), connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {sql.quote(table)} CASCADE")
        del apps.all_models["billing"]["reading"]
        apps.clear_cache()


def test_a_sub_partitioned_child_is_reported_and_left_alone(events):
    execute(
        events,
        f"CREATE TABLE events_event_sub PARTITION OF {sql.quote(TABLE)} "
        "FOR VALUES FROM ('2040-01-01+00') TO ('2041-01-01+00') PARTITION BY RANGE (occurred_at)",
    )
    report = status(now=NOW)[0]
    assert any(p.startswith("events_event_sub is itself partitioned") for p in report.problems)
    result = apply(plan(models_=["events.Event"], ahead=1, now=NOW))
    assert ok(result) and len(result.done) == 2


def _one(schema: str, query: str, params=None):
    with schema_context(schema), connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchone()[0]


def test_identity_storage_parameters_and_comments_reach_new_partitions(events):
    """A partition created later behaves like the ones before it: the parent's identity
    sequence numbers rows inserted into it directly, it keeps the storage parameters the
    newest partition was given, and the parent's table and column comments."""
    from example_project.events.models import Event

    assert _one(
        events, "SELECT attidentity FROM pg_attribute WHERE attrelid = %s::regclass "
        "AND attname = 'id'", [TABLE],
    ) in ("a", "d")  # Django's ids are identity columns
    apply(plan(models_=["events.Event"], ahead=1, now=NOW))
    execute(events, "ALTER TABLE events_event_p2026_07 SET (fillfactor = 70, "
                    "autovacuum_vacuum_scale_factor = 0.01)")
    execute(events, f"COMMENT ON TABLE {sql.quote(TABLE)} IS 'what tenants did, by month'")
    execute(events, f"COMMENT ON COLUMN {sql.quote(TABLE)}.kind IS 'the tenant''s action'")
    try:
        result = apply(plan(models_=["events.Event"], ahead=3, now=NOW))
        assert ok(result) and len(result.done) == 2
        for name in ("events_event_p2026_08", "events_event_p2026_09"):
            assert _one(
                events, "SELECT reloptions FROM pg_class WHERE oid = %s::regclass", [name]
            ) == ["fillfactor=70", "autovacuum_vacuum_scale_factor=0.01"]
            assert _one(events, "SELECT obj_description(%s::regclass, 'pg_class')", [name]) == (
                "what tenants did, by month"
            )
            assert _one(
                events, "SELECT col_description(%s::regclass, attnum) FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attname = 'kind'", [name, name],
            ) == "the tenant's action"
        before = Event.objects.create(occurred_at=at(2026, 8, 3), kind="login").pk
        direct = _one(
            events, "INSERT INTO events_event_p2026_08 (occurred_at, kind, payload) "
            "VALUES (%s, 'login', '{}') RETURNING id", [at(2026, 8, 4)],
        )
        after = Event.objects.create(occurred_at=at(2026, 8, 5), kind="login").pk
        assert before < direct < after  # one sequence numbers them all
    finally:
        execute(events, f"COMMENT ON TABLE {sql.quote(TABLE)} IS NULL")
        execute(events, f"COMMENT ON COLUMN {sql.quote(TABLE)}.kind IS NULL")


def test_open_and_far_bounds_never_break_status_plan_apply_or_migrate(events, capsys):
    """MINVALUE, '-infinity', a bound past year 9999, 'infinity' and MAXVALUE, all on one
    table: read as open ends, left alone by retention, and never an exception -- not in the
    health check that ``migrate`` runs either."""
    bounds = {
        "events_event_minvalue": "(MINVALUE) TO ('-infinity')",
        "events_event_ancient": "('-infinity') TO ('1990-01-01+00')",
        "events_event_far": "('2090-01-01+00') TO ('12000-01-01+00')",
        "events_event_beyond": "('12000-01-01+00') TO ('infinity')",
        "events_event_maxvalue": "('infinity') TO (MAXVALUE)",
    }
    for name, bound in bounds.items():
        execute(events, f"CREATE TABLE {name} PARTITION OF {sql.quote(TABLE)} FOR VALUES FROM {bound}")
    [report] = status(now=NOW)
    shown = {p.name: (p.start, p.end) for p in report.partitions}
    assert shown["events_event_minvalue"] == ("MINVALUE", "-infinity")
    assert shown["events_event_ancient"] == ("-infinity", "1990-01-01T00:00:00+00:00")
    assert shown["events_event_far"] == ("2090-01-01T00:00:00+00:00", "12000-01-01 00:00:00+00")
    assert shown["events_event_beyond"] == ("12000-01-01 00:00:00+00", "infinity")
    assert shown["events_event_maxvalue"] == ("infinity", "MAXVALUE")
    assert not report.covers_current  # none of them holds a month of today
    the_plan = plan(models_=["events.Event"], ahead=3, retain=3, now=NOW)
    assert [a.kind for a in the_plan.tables[0].actions] == ["create"] * 4
    result = apply(the_plan)
    assert ok(result) and len(result.done) == 4
    assert set(bounds) <= months_after_apply(events)
    for argv in (["apply", "--yes"], ["status", "--format", "json"], ["plan", "--format", "sql"]):
        call_command("partitions", *argv, "--tenant", events)
    with schema_context("public"):
        warnings = check_partition_health(databases=["default"])
        assert [w.id for w in warnings if w.id == "data_arch.W202"] == []
        call_command("migrate", "--schema", events, skip_checks=False, verbosity=0)
    assert "Traceback" not in capsys.readouterr().err


def test_a_foreign_table_partition_is_reported_and_left_alone(events):
    """PostgreSQL allows a foreign partition only when the parent has no unique index and no
    foreign key, so the test takes those off the (empty) table for its duration."""
    with schema_context(events), connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = "
            "%s::regclass AND contype IN ('p', 'f') AND conparentid = 0 ORDER BY contype DESC",
            [TABLE],
        )
        keys = cursor.fetchall()
    for name, _ in keys:
        execute(events, f"ALTER TABLE {sql.quote(TABLE)} DROP CONSTRAINT {sql.quote(name)}")
    execute(events, "CREATE FOREIGN DATA WRAPPER partition_test_fdw")
    execute(events, "CREATE SERVER partition_test_server FOREIGN DATA WRAPPER partition_test_fdw")
    try:
        execute(
            events,
            f"CREATE FOREIGN TABLE events_event_remote PARTITION OF {sql.quote(TABLE)} "
            "FOR VALUES FROM ('2040-01-01+00') TO ('2041-01-01+00') SERVER partition_test_server",
        )
        report = status(now=NOW)[0]
        assert any(p.startswith("events_event_remote is a foreign table") for p in report.problems)
        assert "events_event_remote" not in str(report.index_drift)  # it cannot have indexes
        the_plan = plan(models_=["events.Event"], ahead=1, retain=3, now=at(2045, 6, 15))
        assert "events_event_remote" not in [a.partition for a in the_plan.tables[0].actions]
        result = apply(plan(models_=["events.Event"], ahead=1, now=NOW))
        assert ok(result) and len(result.done) == 2
        with schema_context("public"):
            warnings = check_partition_health(databases=["default"])
        assert [w.id for w in warnings if w.id == "data_arch.W202"] == []
    finally:
        execute(events, "DROP FOREIGN TABLE IF EXISTS events_event_remote")
        execute(events, "DROP SERVER IF EXISTS partition_test_server")
        execute(events, "DROP FOREIGN DATA WRAPPER IF EXISTS partition_test_fdw")
        execute(events, f"TRUNCATE {sql.quote(TABLE)}")
        for name, definition in reversed(keys):
            execute(events, f"ALTER TABLE {sql.quote(TABLE)} ADD CONSTRAINT {sql.quote(name)} "
                            f"{definition}")


def test_one_broken_tenant_in_twenty_never_stops_the_others(events, capsys):
    """Twenty tenants, five of them each carrying one of the catalog contents that used to
    crash a run: ``--all-tenants`` maintains every tenant it can, reports each failure with
    its tenant, and exits non-zero. (The extra tenants get only the events table: that is all
    partition maintenance reads.)"""
    from example_project.customers.models import Client

    extra = [f"bulk_t{n:02d}" for n in range(18)]
    now = dt.datetime.now(dt.UTC)
    current = dt.datetime(now.year, now.month, 1, tzinfo=dt.UTC)
    following = dt.datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=dt.UTC)
    faults = {
        "bulk_t00": f"CREATE TABLE events_event_far PARTITION OF {sql.quote(TABLE)} "
                    "FOR VALUES FROM ('2050-01-01+00') TO (MAXVALUE)",
        "bulk_t01": f"CREATE TABLE events_event_old PARTITION OF {sql.quote(TABLE)} "
                    "FOR VALUES FROM ('-infinity') TO ('2000-01-01+00')",
        "bulk_t02": f"ALTER TABLE {sql.quote(TABLE)} ADD COLUMN kind_upper text "
                    "GENERATED ALWAYS AS (upper(kind)) STORED",
        "bulk_t03": f"CREATE TABLE {sql.quote(sql.partition_name(TABLE, following))} PARTITION "
                    f"OF {sql.quote(TABLE)} FOR VALUES FROM ('2040-01-01+00') TO ('2040-02-01+00')",
        "bulk_t04": f"CREATE TABLE events_event_p2020_01 PARTITION OF {sql.quote(TABLE)} "
                    "FOR VALUES FROM ('2020-01-01+00') TO ('2020-02-01+00'); "
                    "CREATE VIEW january AS SELECT * FROM events_event_p2020_01",
    }
    with connection.cursor() as cursor:
        for schema in extra:
            cursor.execute(f"DROP SCHEMA IF EXISTS {sql.quote(schema)} CASCADE")
            cursor.execute(f"CREATE SCHEMA {sql.quote(schema)}")
            cursor.execute(
                f"CREATE TABLE {sql.qualified(schema, TABLE)} (LIKE "
                f"{sql.qualified('tenant_a', TABLE)} INCLUDING ALL) PARTITION BY RANGE (occurred_at)"
            )
            cursor.execute(
                f"CREATE TABLE {sql.qualified(schema, TABLE + '_default')} PARTITION OF "
                f"{sql.qualified(schema, TABLE)} DEFAULT"
            )
    Client.objects.bulk_create([Client(schema_name=s, name=s) for s in extra])
    try:
        for schema, statement in faults.items():
            execute(schema, statement)
        with schema_context("public"), pytest.raises(CommandError, match="2 failure"):
            call_command("partitions", "apply", "--all-tenants", "--yes")
        err = capsys.readouterr().err
        assert "Traceback" not in err
        failures = [line for line in err.splitlines() if line.startswith("failed: ")]
        assert [line.split(":")[1].strip() for line in failures] == ["bulk_t03", "bulk_t04"]
        assert "cannot create" in failures[0] and "january" in failures[1]
        four = {sql.partition_name(TABLE, dt.datetime(
            (current.year * 12 + current.month - 1 + i) // 12,
            (current.month - 1 + i) % 12 + 1, 1, tzinfo=dt.UTC)) for i in range(4)}
        for schema in ("tenant_a", "tenant_b", *extra):
            names = months_after_apply(schema)
            expected = four - ({sql.partition_name(TABLE, following)}
                               if schema == "bulk_t03" else set())
            assert expected <= names, (schema, names)
        assert "events_event_p2020_01" in months_after_apply("bulk_t04")  # kept for its view
    finally:
        Client.objects.filter(schema_name__in=extra).delete()
        with connection.cursor() as cursor:
            for schema in extra:
                cursor.execute(f"DROP SCHEMA IF EXISTS {sql.quote(schema)} CASCADE")


def test_changes_to_the_parent_during_a_run_reach_the_months_made_after_them(events):
    """A run reads the table once for its consecutive months and checks that read against the
    catalog under each month's locks: a comment, a row-level security policy or an overlapping
    partition made while it runs is seen by every month made after it."""
    from data_arch.partitioning.catalog import row_security

    names = [sql.partition_name(TABLE, at(2026, month)) for month in (6, 7, 8, 9)]
    table = sql.quote(TABLE)

    def meanwhile(label: str) -> None:
        if label.endswith(names[0]):
            execute(events, f"COMMENT ON TABLE {table} IS 'changed mid-run'")
            execute(events, f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            execute(events, f"CREATE POLICY mid_run ON {table} USING (kind = 'login')")
        elif label.endswith(names[1]):
            execute(events, f"CREATE TABLE events_event_elsewhere PARTITION OF {table} FOR "
                            "VALUES FROM ('2026-09-10 00:00:00+00') TO ('2026-09-20 00:00:00+00')")

    try:
        result = apply(plan(models_=["events.Event"], ahead=3, now=NOW), on_progress=meanwhile)
        assert [label.rsplit(" ", 1)[1] for label in result.done] == names[:3]
        assert [(f.action, f.error) for f in result.failures] == [
            (f"create {names[3]}", "a partition now overlaps [2026-09-01, 2026-10-01)")
        ]
        made = dict(partitions(events))
        assert names[3] not in made and all(name in made for name in names[:3])
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT relname, obj_description(oid, 'pg_class'), relrowsecurity FROM pg_class "
                "WHERE relnamespace = %s::regnamespace AND relname = ANY(%s) ORDER BY 1",
                [events, names[:3]],
            )
            rows = cursor.fetchall()
        assert rows == [(names[0], None, False), (names[1], "changed mid-run", True),
                        (names[2], "changed mid-run", True)]
        for name in names[1:3]:
            assert [p[0] for p in row_security("default", events, name).policies] == ["mid_run"]
        assert row_security("default", events, names[0]).policies == ()
    finally:
        execute(events, f"DROP POLICY IF EXISTS mid_run ON {table}")
        execute(events, f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
        execute(events, f"COMMENT ON TABLE {table} IS NULL")


def test_a_plan_applied_after_the_parent_changed_builds_from_the_parent_as_it_is(events):
    """apply starts from the plan's read of the table: a policy and a comment added between
    plan and apply still reach every new month."""
    from data_arch.partitioning.catalog import row_security

    table = sql.quote(TABLE)
    the_plan = plan(models_=["events.Event"], ahead=2, now=NOW)
    execute(events, f"COMMENT ON TABLE {table} IS 'after the plan'")
    execute(events, f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    execute(events, f"CREATE POLICY after_plan ON {table} USING (kind = 'login')")
    try:
        result = apply(the_plan)
        names = [sql.partition_name(TABLE, at(2026, month)) for month in (6, 7, 8)]
        assert ok(result) and [label.rsplit(" ", 1)[1] for label in result.done] == names
        for name in names:
            security = row_security("default", events, name)
            assert security.enabled and [p[0] for p in security.policies] == ["after_plan"]
            with connection.cursor() as cursor:
                cursor.execute("SELECT obj_description(%s::regclass, 'pg_class')", [name])
                assert cursor.fetchone()[0] == "after the plan"
    finally:
        execute(events, f"DROP POLICY IF EXISTS after_plan ON {table}")
        execute(events, f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
        execute(events, f"COMMENT ON TABLE {table} IS NULL")


def test_a_month_another_session_makes_while_apply_waits_for_quiet_is_skipped(events):
    """Between a month's read and its transaction another session makes that month (here: a
    long transaction on the parent, which apply waits out holding nothing, creates it before
    it ends). The month's CREATE TABLE finds the name taken, the step is rolled back and
    decided on a fresh read: done by someone else, skipped, not a failure."""
    names = [sql.partition_name(TABLE, at(2026, month)) for month in (6, 7, 8)]
    holding, errors = threading.Event(), []

    def other_session() -> None:
        try:
            with schema_context(events), connection.cursor() as cursor:
                cursor.execute("BEGIN")
                cursor.execute(f"SELECT count(*) FROM {sql.quote(TABLE)}")
                holding.set()
                time.sleep(0.4)
                cursor.execute(
                    f"CREATE TABLE {sql.quote(names[1])} PARTITION OF {sql.quote(TABLE)} FOR "
                    "VALUES FROM ('2026-07-01 00:00:00+00') TO ('2026-08-01 00:00:00+00')"
                )
                cursor.execute("COMMIT")
        except Exception as exc:  # noqa: BLE001 -- reported by the test below
            errors.append(exc)
        finally:
            connections.close_all()

    threads: list[threading.Thread] = []

    def meanwhile(label: str) -> None:
        if label.endswith(names[0]):
            threads.append(threading.Thread(target=other_session))
            threads[0].start()
            holding.wait(5)
            time.sleep(0.05)  # older than the few milliseconds apply lets pass

    try:
        result = apply(plan(models_=["events.Event"], ahead=2, now=NOW), on_progress=meanwhile)
    finally:
        for thread in threads:
            thread.join(10)
    assert errors == []
    assert ok(result), result.failures
    assert [label.rsplit(" ", 1)[1] for label in result.done] == [names[0], names[2]]
    assert [label.rsplit(" ", 1)[1] for label in result.skipped] == [names[1]]
    assert all(name in dict(partitions(events)) for name in names)
