"""Maintenance never makes writers wait behind it, and indexes reach every partition."""

import datetime as dt
import threading
import time

import pytest
from django.apps import apps
from django.db import connection, connections, models
from django.db.migrations.state import ProjectState
from django.test import override_settings
from django_tenants.utils import schema_context

from data_arch.partitioning import AddPartitionedIndex, apply, plan, sql, status
from data_arch.partitioning.checks import check_declarations, check_partition_health
from example_project.events.models import Event
from tests.partitioning.conftest import TABLE


@pytest.mark.slow
def test_insert_stream_is_not_blocked_while_apply_waits_for_a_reader(events):
    """A long reader of the parent makes ATTACH wait for the default partition's lock; writers
    of the current month must never queue behind apply meanwhile, and no insert fails."""
    apply(plan(models_=["events.Event"], ahead=1))
    stop = threading.Event()
    reader_holds = threading.Event()
    inserter_ready = threading.Event()
    latencies: list[float] = []
    pids: dict[str, int] = {}
    blocked_by_apply: list[float] = []
    insert_errors: list[BaseException] = []
    reader_done: list[float] = []

    def pid_of(name: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pids[name] = cursor.fetchone()[0]

    def reader() -> None:
        with schema_context(events), connection.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute(f"SELECT count(*) FROM {sql.qualified(events, TABLE)}")
            reader_holds.set()
            time.sleep(1.5)
            cursor.execute("COMMIT")
            reader_done.append(time.monotonic())
        connections.close_all()

    def inserter() -> None:
        with schema_context(events):
            pid_of("inserter")
            inserter_ready.set()
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    Event.objects.create(occurred_at=dt.datetime.now(dt.UTC), kind="page_view")
                except Exception as exc:  # noqa: BLE001 -- collected and asserted on below
                    insert_errors.append(exc)
                latencies.append(time.perf_counter() - started)
        connections.close_all()

    def monitor() -> None:
        with connection.cursor() as cursor:
            while not stop.is_set():
                cursor.execute("SELECT pg_blocking_pids(%s)", [pids["inserter"]])
                blockers = cursor.fetchone()[0]
                if pids["apply"] in blockers:
                    blocked_by_apply.append(time.monotonic())
                time.sleep(0.002)
        connections.close_all()

    pid_of("apply")
    threads = [threading.Thread(target=reader), threading.Thread(target=inserter)]
    for thread in threads:
        thread.start()
    reader_holds.wait(5)
    inserter_ready.wait(5)
    watcher = threading.Thread(target=monitor)
    watcher.start()
    try:
        with override_settings(
            DATA_ARCH={"PARTITIONS": {"LOCK_TIMEOUT_MS": 100, "LOCK_RETRIES": 30}}
        ):
            result = apply(plan(models_=["events.Event"], ahead=3))
            applied_at = time.monotonic()
    finally:
        stop.set()
        for thread in (*threads, watcher):
            thread.join()
    assert len(result.done) == 2
    assert applied_at >= reader_done[0]  # apply really did wait for the reader
    assert insert_errors == []
    # Structural: while apply waited for the reader, no insert queued behind apply's locks (the
    # only wait allowed is the few milliseconds of the final move + ATTACH, after the reader).
    assert reader_done and all(moment >= reader_done[0] for moment in blocked_by_apply)
    assert len(latencies) > 10
    # Generous: far below the 1.5 s the reader held its lock, so no insert waited for it.
    assert max(latencies) < 1.0


def test_declared_indexes_exist_on_new_partitions_and_drift_is_reported(events):
    apply(plan(models_=["events.Event"], ahead=1))
    assert status()[0].index_drift == {}
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE INDEX event_kind_only ON ONLY {sql.qualified(events, TABLE)} (kind)"
        )
    drift = status()[0].index_drift
    assert sorted(drift["event_kind_only"]) == sorted(
        name for name in [p.name for p in status()[0].partitions]
    )
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX event_kind_only")


def test_add_index_concurrently_builds_per_partition_and_validates_the_parent(events):
    apply(plan(models_=["events.Event"], ahead=2))
    operation = AddPartitionedIndex("event", models.Index(fields=["kind"], name="event_kind_cc"))
    state = ProjectState.from_apps(apps)
    try:
        with connection.schema_editor(atomic=False) as editor:
            operation.database_forwards("events", editor, state, state)
            operation.database_forwards("events", editor, state, state)  # rerun is harmless
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT indisvalid FROM pg_index WHERE indexrelid = %s::regclass",
                [sql.qualified(events, "event_kind_cc")],
            )
            assert cursor.fetchone()[0] is True
        assert status()[0].index_drift == {}
        # A partition created later gets the index too (ATTACH adopts or builds it).
        apply(plan(models_=["events.Event"], ahead=4))
        assert status()[0].index_drift == {}
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP INDEX IF EXISTS {sql.qualified(events, 'event_kind_cc')}")


def test_checks_warn_about_missing_months_and_rows_in_default(events):
    def ids():
        with schema_context("public"):
            return sorted(
                {
                    w.id
                    for w in check_partition_health(databases=["default"])
                    if "tenant_a." in w.msg
                }
            )

    assert ids() == ["data_arch.W200"]
    apply(plan(models_=["events.Event"]))
    assert ids() == []
    Event.objects.create(occurred_at=dt.datetime(2099, 1, 1, tzinfo=dt.UTC), kind="login")
    assert ids() == ["data_arch.W201"]


def test_declaration_checks_pass_for_the_example_and_names_fit(events):
    assert check_declarations() == []
    long_name = sql.partition_name("x" * 80, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert len(long_name.encode()) <= 63 and long_name.endswith("_p2026_01")
    assert long_name == sql.partition_name("x" * 80, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))


def test_add_index_concurrently_gives_two_indexes_ending_alike_their_own_children(events):
    apply(plan(models_=["events.Event"], ahead=1))
    tail = "_by_time_for_reports_x"
    indexes = [
        models.Index(fields=["kind"], name=f"ev_a{tail}"),
        models.Index(fields=["occurred_at"], name=f"ev_b{tail}"),
    ]
    state = ProjectState.from_apps(apps)
    try:
        with connection.schema_editor(atomic=False) as editor:
            for index in indexes:
                AddPartitionedIndex("event", index).database_forwards("events", editor, state, state)
        with connection.cursor() as cursor:
            for index in indexes:
                cursor.execute(
                    "SELECT indisvalid FROM pg_index WHERE indexrelid = %s::regclass",
                    [sql.qualified(events, index.name)],
                )
                assert cursor.fetchone()[0] is True, index.name
    finally:
        with connection.cursor() as cursor:
            for index in indexes:
                cursor.execute(f"DROP INDEX IF EXISTS {sql.qualified(events, index.name)}")
