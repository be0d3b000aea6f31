import datetime as dt
import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.test import override_settings
from django_tenants.utils import schema_context

from data_arch.partitioning import PartitionError, apply, plan, sql, status
from example_project.events.models import Event
from tests.partitioning.conftest import NOW, TABLE, partitions


def at(year: int, month: int, day: int = 1) -> dt.datetime:
    return dt.datetime(year, month, day, tzinfo=dt.UTC)


def test_migrate_created_a_partitioned_parent_with_default_and_composite_pk(events):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relkind FROM pg_class WHERE oid = %s::regclass", [sql.qualified(events, TABLE)]
        )
        assert cursor.fetchone()[0] == "p"
        cursor.execute(
            "SELECT array_agg(a.attname ORDER BY a.attname) FROM pg_index x JOIN pg_attribute a "
            "ON a.attrelid = x.indrelid AND a.attnum = ANY(x.indkey) WHERE x.indrelid = %s::regclass "
            "AND x.indisprimary",
            [sql.qualified(events, TABLE)],
        )
        assert cursor.fetchone()[0] == ["id", "occurred_at"]
    assert partitions() == [("events_event_default", "DEFAULT")]


def test_creates_months_ahead_from_empty_and_reruns_are_idempotent(events):
    first = plan(models_=["events.Event"], now=NOW)
    assert first.pending
    assert [a.partition for t in first.tables for a in t.actions] == [
        "events_event_p2026_06",
        "events_event_p2026_07",
        "events_event_p2026_08",
        "events_event_p2026_09",
    ]
    result = apply(first)
    assert len(result.done) == 4
    assert partitions()[1] == (
        "events_event_p2026_06",
        "FOR VALUES FROM ('2026-06-01 00:00:00+00') TO ('2026-07-01 00:00:00+00')",
    )
    assert not plan(models_=["events.Event"], now=NOW).pending
    again = apply(first)  # replaying the stale plan changes nothing
    assert again.done == [] and len(again.skipped) == 4
    [report] = status(now=NOW)
    assert report.months_ahead == 3 and report.default_rows == 0 and report.problems == ()
    # Rows route to the partition of their month; declared indexes exist on every partition.
    Event.objects.create(occurred_at=at(2026, 7, 3), kind="login")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {sql.qualified(events, 'events_event_p2026_07')}")
        assert cursor.fetchone()[0] == 1
    assert report.index_drift == {} and report.missing_indexes == ()


def test_bounds_are_utc_months_whatever_the_session_time_zone(events):
    with connection.cursor() as cursor:
        cursor.execute("SET TimeZone = 'America/New_York'")
    try:
        apply(plan(models_=["events.Event"], ahead=1, now=NOW))
        report = status(now=NOW)[0]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET TimeZone")
    assert [p.start for p in report.partitions if not p.default] == [
        "2026-06-01T00:00:00+00:00",
        "2026-07-01T00:00:00+00:00",
    ]
    assert (
        partitions()[2][1]
        == "FOR VALUES FROM ('2026-07-01 00:00:00+00') TO ('2026-08-01 00:00:00+00')"
    )


@pytest.mark.parametrize("mode", ["drop", "detach", "archive"])
def test_retention_removes_a_partition_only_when_its_end_is_older_than_the_cutoff(events, mode):
    # Partitions Jan..Sep 2026; retain 3 months at 15 June: cutoff 15 March.
    apply(plan(models_=["events.Event"], ahead=8, now=at(2026, 1, 10)))
    Event.objects.create(occurred_at=at(2026, 3, 20), kind="login")
    with override_settings(DATA_ARCH={"PARTITIONS": {"RETENTION_MODE": mode}}):
        the_plan = plan(models_=["events.Event"], ahead=3, retain=3, now=NOW)
        assert [(a.kind, a.partition) for t in the_plan.tables for a in t.actions] == [
            (mode, "events_event_p2026_01"),
            (mode, "events_event_p2026_02"),
        ]
        apply(the_plan)
    names = [name for name, _ in partitions()]
    assert "events_event_p2026_02" not in names
    assert "events_event_p2026_03" in names  # ends 1 April, after the cutoff: March rows stay
    assert Event.objects.filter(occurred_at=at(2026, 3, 20)).exists()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = 'events_event_p2026_01'"
        )
        where = [row[0] for row in cursor.fetchall()]
    assert where == {"drop": [], "detach": [events], "archive": [f"{events};archive"]}[mode]


def test_gaps_and_overlaps_are_reported(events):
    apply(plan(models_=["events.Event"], ahead=2, now=NOW))
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {sql.qualified(events, 'events_event_p2026_07')}")
    report = status(now=NOW)[0]
    assert report.problems == ("gap: no partition covers 2026-07-01 .. 2026-08-01",)
    the_plan = plan(models_=["events.Event"], ahead=2, now=NOW)
    assert "gap: no partition covers 2026-07-01 .. 2026-08-01" in the_plan.tables[0].problems
    apply(the_plan)  # the missing month is inside the horizon: it is recreated
    assert status(now=NOW)[0].problems == ()


def test_catalog_overlap_is_reported_from_bounds_not_names():
    from data_arch.partitioning.catalog import Partition, TableState

    state = TableState(
        "s",
        "t",
        True,
        (Partition("t_a", at(2026, 1), at(2026, 3)), Partition("t_b", at(2026, 2), at(2026, 4))),
        None,
        0,
        {},
        [],
    )
    assert state.gaps_and_overlaps() == ["overlap: t_a and t_b"]


def test_rows_in_default_are_moved_into_their_partition(events):
    apply(plan(models_=["events.Event"], ahead=1, now=NOW))
    Event.objects.bulk_create(
        Event(occurred_at=at(2026, 9, 2), kind="login", payload={"i": i}) for i in range(23)
    )
    assert status(now=NOW)[0].default_rows == 23
    with override_settings(DATA_ARCH={"PARTITIONS": {"DRAIN_BATCH_SIZE": 5}}):
        the_plan = plan(models_=["events.Event"], ahead=3, now=NOW)
        assert [
            (a.partition, a.default_rows) for a in the_plan.tables[0].actions if a.default_rows
        ] == [("events_event_p2026_09", 23)]
        result = apply(the_plan)
    assert result.rows_moved == 23
    assert status(now=NOW)[0].default_rows == 0
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {sql.qualified(events, 'events_event_p2026_09')}")
        assert cursor.fetchone()[0] == 23


def test_an_interrupted_drain_loses_and_duplicates_nothing_on_rerun(events):
    apply(plan(models_=["events.Event"], ahead=1, now=NOW))
    Event.objects.bulk_create(
        Event(occurred_at=at(2026, 9, 2), kind="login", payload={"i": i}) for i in range(23)
    )
    target = "events_event_p2026_09"
    # A real fault in the third batch: the target table refuses inserts once it holds 10 rows.
    with connection.cursor() as cursor:
        for statement in sql.create_standalone(
            events, TABLE, target, "occurred_at", at(2026, 9), at(2026, 10)
        ):
            cursor.execute(statement)
        cursor.execute(
            "CREATE FUNCTION public.fail_third_batch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF (SELECT count(*) FROM {sql.qualified(events, target)}) >= 10 THEN "
            "RAISE EXCEPTION 'disk full'; END IF; RETURN NEW; END $$"
        )
        cursor.execute(
            f"CREATE TRIGGER interrupt BEFORE INSERT ON {sql.qualified(events, target)} "
            "FOR EACH ROW EXECUTE FUNCTION public.fail_third_batch()"
        )
    try:
        with override_settings(DATA_ARCH={"PARTITIONS": {"DRAIN_BATCH_SIZE": 5}}):
            failed = apply(plan(models_=["events.Event"], ahead=3, now=NOW))
            assert [f.error for f in failed.failures] == ["disk full"]
            # Copied rows stay in the default until the swap: every row is still visible.
            assert status(now=NOW)[0].default_rows == 23
            assert Event.objects.count() == 23
            assert status(now=NOW)[0].staging == {target: 10}
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TRIGGER interrupt ON {sql.qualified(events, target)}")
            apply(plan(models_=["events.Event"], ahead=3, now=NOW))
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER IF EXISTS interrupt ON {sql.qualified(events, target)}")
            cursor.execute("DROP FUNCTION IF EXISTS public.fail_third_batch()")
    payloads = sorted(Event.objects.values_list("payload__i", flat=True))
    assert payloads == list(range(23))
    assert status(now=NOW)[0].default_rows == 0


def test_two_applies_at_once_do_not_clash(events):
    errors, results = [], []
    barrier = threading.Barrier(2)

    def run():
        try:
            with schema_context(events):
                the_plan = plan(models_=["events.Event"], ahead=6, now=NOW)
                barrier.wait()
                results.append(apply(the_plan))
        except Exception as exc:  # noqa: BLE001 -- any failure in a thread is asserted below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(r.ok for r in results)
    # Each action done exactly once, by one run or the other.
    assert sorted(label for r in results for label in r.done) == sorted(
        {label for r in results for label in r.done}
    )
    assert sum(len(r.done) for r in results) == 7
    assert len(partitions()) == 8
    assert status(now=NOW)[0].problems == ()


def test_command_all_tenants_and_plan_exit_codes(events, capsys):
    with schema_context("public"):
        with pytest.raises(CommandError, match="changes pending") as exit_info:
            call_command("partitions", "plan", "--all-tenants", "--model", "events.Event")
        assert exit_info.value.returncode == 2
        call_command("partitions", "apply", "--all-tenants", "--yes")
        call_command(
            "partitions", "plan", "--all-tenants", "--format", "json"
        )  # exits 0: no SystemExit
        call_command("partitions", "status", "--tenant", "tenant_b")
    out = capsys.readouterr().out
    assert "events_event_default" in out and "months ahead: 3" in out
    for schema in ("tenant_a", "tenant_b"):
        assert len(partitions(schema)) == 5  # current month + 3 ahead + default


def test_plan_sql_and_dry_run_change_nothing(events, capsys):
    call_command("partitions", "apply", "--tenant", "tenant_a", "--dry-run", "--format", "sql")
    out = capsys.readouterr().out
    assert "ATTACH PARTITION" in out and "CREATE TABLE" in out
    assert len(partitions()) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "shop.Nope"], "unknown model 'shop.Nope'"),
        (["--model", "shop.Order"], "shop.Order is not partitioned"),
        (["--ahead", "-3"], "--ahead must be >= 0, got -3"),
        (["--retain", "0"], "--retain must be >= 1, got 0"),
        (["--ahead", "99999"], "--ahead must be <= 1200"),
        (["--retain", "99999999999999999999"], "--retain must be <= 1200"),
        (["--database", "nope"], "--database: unknown alias 'nope'"),
        (["--tenant", ""], "--tenant must name a tenant schema"),
        (["--tenant", "nobody"], "unknown tenant 'nobody'"),
    ],
)
def test_bad_input_is_a_clear_error_and_changes_nothing(events, argv, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        call_command(
            "partitions", "apply", "--yes", "--tenant", "tenant_a", *argv
        ) if "--tenant" not in argv else call_command("partitions", "apply", "--yes", *argv)
    assert len(partitions()) == 1


def test_plan_refuses_bad_months_directly():
    with pytest.raises(PartitionError, match="--retain must be >= 1, got 0"):
        plan(retain=0)


def test_detach_concurrently_on_a_table_without_default(events):
    apply(plan(models_=["events.Event"], ahead=8, now=at(2026, 1, 10)))
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {sql.qualified(events, 'events_event_default')}")
    try:
        settings = {"PARTITIONS": {"RETENTION_MODE": "detach", "DETACH_CONCURRENTLY": True}}
        with override_settings(DATA_ARCH=settings):
            the_plan = plan(models_=["events.Event"], ahead=3, retain=3, now=NOW)
            assert any(
                "DETACH PARTITION" in s and s.endswith("CONCURRENTLY")
                for a in the_plan.tables[0].actions
                for s in a.statements
            )
            apply(the_plan)
        names = [name for name, _ in partitions()]
        assert "events_event_p2026_01" not in names and "events_event_p2026_03" in names
    finally:
        with connection.cursor() as cursor:
            cursor.execute(sql.create_default(TABLE))


def test_demo_seed_spreads_events_over_more_than_a_year_into_partitions(events):
    call_command("seed_events", "tenant_a", "--events", "300")
    months = {(e.year, e.month) for e in Event.objects.values_list("occurred_at", flat=True)}
    assert len(months) >= 13
    report = status()[0]
    assert report.default_rows == 0 and report.problems == ()
    assert report.months_ahead == 3


def test_removing_the_declaration_is_refused_with_an_explanation(events):
    from django.db import NotSupportedError

    declared = Event._meta.constraints[0]
    with (
        connection.schema_editor() as editor,
        pytest.raises(NotSupportedError, match="cannot turn"),
    ):
        editor.remove_constraint(Event, declared)
    assert len(partitions()) == 1


def test_apply_refuses_to_run_inside_a_transaction(db):
    """One commit per partition: apply() inside transaction.atomic() is a clear error."""
    with pytest.raises(PartitionError, match="does not exist in schema 'public'"):
        plan(models_=["events.Event"], now=NOW)  # a tenant app, asked for in the public schema
    with pytest.raises(PartitionError, match="outside transaction.atomic"):
        apply(plan(models_=["audit.AuditEntry"], now=NOW))


# ------------------------------------------------ the plan shown is the plan run (big default)


def _fill(schema: str, start: dt.datetime, rows: int) -> None:
    """``rows`` rows on the third day of the month starting at ``start`` (in its default)."""
    with schema_context(schema), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {sql.qualified(schema, TABLE)} (occurred_at, kind, payload) "
            "SELECT %s + (g %% 86400) * interval '1 second', 'login', '{}' "
            "FROM generate_series(1, %s) g",
            [start + dt.timedelta(days=2), rows],
        )


def _in_default(schema: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {sql.qualified(schema, TABLE + '_default')}")
        return cursor.fetchone()[0]


def _json_plan() -> list[dict]:
    import io
    import json

    out = io.StringIO()
    with pytest.raises(CommandError):  # changes pending: exit status 2
        call_command(
            "partitions", "plan", "--tenant", "tenant_a", "--model", "events.Event",
            "--ahead", "2", "--format", "json", stdout=out,
        )
    return json.loads(out.getvalue())


def test_the_shared_swap_is_one_step_of_the_plan_and_apply_runs_the_plan_s_steps(events):
    """Three far-future months in the default: the plan lists what apply does — record, each
    month staged and copied, ONE swap attaching all three, its clean-up, then the month
    without rows — and apply reports exactly those steps, in that order."""
    from data_arch.partitioning.months import add_months, month_start

    current = month_start(dt.datetime.now(dt.UTC))
    apply(plan(models_=["events.Event"], ahead=1))
    far = [add_months(current, 30 + i) for i in range(3)]
    for start in far:
        _fill(events, start, 250)
    names = [sql.partition_name(TABLE, start) for start in far]
    third = sql.partition_name(TABLE, add_months(current, 2))
    swaps = [
        (action.get("months"), step)
        for table in _json_plan()[0]["tables"]
        for action in table["actions"]
        for step in action["steps"]
        if step["name"] == "swap"
    ]
    assert len(swaps) == 1 and swaps[0][0] == names
    assert any("TRUNCATE" in statement for statement in swaps[0][1]["sql"])

    the_plan = plan(models_=["events.Event"], ahead=2)
    prefix = f"{events}.{TABLE}: "
    months = ", ".join(names)
    assert the_plan.step_labels() == [
        f"{prefix}record {months}",
        *(f"{prefix}{step} {name}" for name in names for step in ("stage", "copy")),
        f"{prefix}swap {months}",
        f"{prefix}clean_up {months}",
        f"{prefix}attach {third}",
    ]
    shown = [line.split() for line in str(the_plan).splitlines()]
    assert [line[0] for line in shown[1:]] == ["record", *["create"] * 3, "swap", "create"]
    assert months in str(the_plan)

    with override_settings(DATA_ARCH={"PARTITIONS": {"DRAIN_BATCH_SIZE": 100}}):
        result = apply(the_plan)
    assert result.failures == []
    assert result.steps == the_plan.step_labels()
    assert result.rows_moved == 750
    assert sorted(result.done) == sorted(f"{prefix}create {n}" for n in [*names, third])
    assert _in_default(events) == 0
    for start in far:
        assert Event.objects.filter(
            occurred_at__gte=start, occurred_at__lt=add_months(start, 1)
        ).count() == 250
    assert not plan(models_=["events.Event"], ahead=2).pending


def test_with_rows_older_than_retention_in_the_default_the_plan_swaps_month_by_month(events):
    """Rows older than the retention cutoff stay in the default (a TRUNCATE would lose them):
    the plan shows each month staged, copied and swapped alone, and apply does just that."""
    from data_arch.partitioning.months import add_months, month_start

    current = month_start(dt.datetime.now(dt.UTC))
    apply(plan(models_=["events.Event"], ahead=1))
    far = [add_months(current, 30 + i) for i in range(2)]
    for start in far:
        _fill(events, start, 120)
    _fill(events, add_months(current, -8), 7)  # older than retain=3 months: stays
    names = [sql.partition_name(TABLE, start) for start in far]
    the_plan = plan(models_=["events.Event"], ahead=1, retain=3)
    prefix = f"{events}.{TABLE}: "
    assert the_plan.step_labels() == [
        f"{prefix}{step} {name}" for name in names for step in ("stage", "copy", "swap")
    ]
    assert any("older than the months kept" in p for p in the_plan.tables[0].problems)
    with override_settings(DATA_ARCH={"PARTITIONS": {"DRAIN_BATCH_SIZE": 50}}):
        result = apply(the_plan)
    assert result.failures == []
    assert result.steps == the_plan.step_labels()
    assert _in_default(events) == 7
    assert result.rows_moved == 240


def _run_psql_single_transaction(script: str) -> None:
    """``psql -1 -v ON_ERROR_STOP=1``: the script as one transaction, stopping at any error."""
    import os
    import subprocess

    from harness.services import find_postgres

    db = connection.settings_dict
    env = {**os.environ, "PGPASSWORD": str(db.get("PASSWORD") or "")}
    done = subprocess.run(
        [
            find_postgres(os.environ.get("DATA_ARCH_POSTGRES"))["psql"], "-X", "-q", "-1",
            "-v", "ON_ERROR_STOP=1", "-h", str(db["HOST"]), "-p", str(db["PORT"]),
            "-U", str(db["USER"]), "-d", str(db["NAME"]), "-f", "-",
        ],
        input=script, capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr


def test_plan_sql_of_a_shared_swap_runs_in_psql_single_transaction(events):
    from data_arch.partitioning.months import add_months, month_start

    current = month_start(dt.datetime.now(dt.UTC))
    apply(plan(models_=["events.Event"], ahead=1))
    far = [add_months(current, 30 + i) for i in range(2)]
    for start in far:
        _fill(events, start, 40)
    the_plan = plan(models_=["events.Event"], ahead=1)
    assert [a.kind for a in the_plan.tables[0].actions] == ["record", "create", "create", "swap"]
    script = the_plan.sql()
    assert "TRUNCATE" not in script  # one transaction holds its locks: no recorder needed
    _run_psql_single_transaction(script)
    assert _in_default(events) == 0
    assert not plan(models_=["events.Event"], ahead=1).pending
    assert Event.objects.filter(occurred_at__gte=far[0]).count() == 80
    with connection.cursor() as cursor:  # no recorder, capture or bounds CHECK left behind
        cursor.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
            [sql.qualified(events, TABLE + "_default")],
        )
        assert cursor.fetchone()[0] == 0
        cursor.execute(
            "SELECT count(*) FROM pg_constraint WHERE conname LIKE %s",
            [f"{TABLE}%_bounds"],
        )
        assert cursor.fetchone()[0] == 0
