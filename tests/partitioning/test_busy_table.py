"""Maintenance on a busy table: streams of inserts, updates by primary key and reads run while
``apply`` creates months and drains the default, with a long reader on the parent."""

import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Self

import pytest
from django.db import connection, connections
from django.test import override_settings
from django_tenants.utils import schema_context

from data_arch.partitioning import apply, plan, sql
from data_arch.partitioning.months import add_months, month_start
from example_project.events.models import Event
from tests.partitioning.conftest import TABLE

ROOT = Path(__file__).resolve().parents[2]
LOCK_TIMEOUT_MS = 2000


@pytest.fixture(autouse=True)
def replica_replays_the_load(events):
    """These tests write a lot of WAL: let the streaming replica catch up before the next test."""
    yield
    from data_arch.testing.pytest_plugin import replica_caught_up

    replica_caught_up(timeout=120)


class Streams:
    """Threads sending one kind of statement each, in a loop, from their own connections."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.stop = threading.Event()
        self.latencies: dict[str, list[float]] = {}
        self.errors: list[tuple[str, BaseException]] = []
        self.threads: list[threading.Thread] = []

    def add(self, name: str, operation) -> None:  # noqa: ANN001 -- a callable per statement
        self.latencies[name] = []

        def loop() -> None:
            with schema_context(self.schema):
                while not self.stop.is_set():
                    started = time.perf_counter()
                    try:
                        operation()
                    except Exception as exc:  # noqa: BLE001 -- every failure is asserted on
                        self.errors.append((name, exc))
                    self.latencies[name].append(time.perf_counter() - started)
                    time.sleep(0.002)
            connections.close_all()

        self.threads.append(threading.Thread(target=loop, name=name))

    def __enter__(self) -> "Streams":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def max_stall(self) -> dict[str, float]:
        return {name: max(values) for name, values in self.latencies.items()}


def hold_reader(schema: str, seconds: float, holding: threading.Event) -> threading.Thread:
    """A transaction that reads the parent (so every partition, the default too) and stays open."""

    def run() -> None:
        with schema_context(schema), connection.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute(f"SELECT count(*) FROM {sql.qualified(schema, TABLE)}")
            holding.set()
            time.sleep(seconds)
            cursor.execute("COMMIT")
        connections.close_all()

    thread = threading.Thread(target=run, name="long reader")
    thread.start()
    return thread


def busy_streams(schema: str, ids: list[int]) -> Streams:
    now = dt.datetime.now(dt.UTC)
    streams = Streams(schema)
    streams.add("insert", lambda: Event.objects.create(occurred_at=now, kind="page_view"))
    counter = iter(range(10**9))
    streams.add(
        "update by pk",
        lambda: Event.objects.filter(pk=ids[next(counter) % len(ids)]).update(kind="login"),
    )
    streams.add("select by pk", lambda: Event.objects.get(pk=ids[next(counter) % len(ids)]))
    return streams


@pytest.mark.slow
def test_twelve_months_created_under_update_by_pk_streams_and_a_long_reader(events):
    """The deadlock case: ``UPDATE ... WHERE id = %s`` locks the parent, then every partition
    (the default last); with a 2 s reader on the parent and ``LOCK_TIMEOUT_MS=2000``, an attach
    that locked the default before the parent deadlocked with it."""
    apply(plan(models_=["events.Event"], ahead=1))
    ids = [
        e.pk
        for e in Event.objects.bulk_create(
            Event(occurred_at=dt.datetime.now(dt.UTC), kind="login") for _ in range(50)
        )
    ]
    holding = threading.Event()
    settings = {"PARTITIONS": {"LOCK_TIMEOUT_MS": LOCK_TIMEOUT_MS, "LOCK_RETRIES": 10}}
    with busy_streams(events, ids) as streams:
        time.sleep(0.2)
        reader = hold_reader(events, 2.0, holding)
        holding.wait(5)
        try:
            with override_settings(DATA_ARCH=settings):
                result = apply(plan(models_=["events.Event"], ahead=13))
        finally:
            reader.join()
        time.sleep(0.2)
    assert getattr(result, "failures", []) == []
    assert len(result.done) == 12
    assert streams.errors == []
    stalls = streams.max_stall()
    assert all(len(v) > 20 for v in streams.latencies.values())
    assert all(stall <= (LOCK_TIMEOUT_MS + 50) / 1000 for stall in stalls.values()), stalls


def _fill_month(schema: str, start: dt.datetime, rows: int) -> None:
    with schema_context(schema), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {sql.qualified(schema, TABLE)} (occurred_at, kind, payload) "
            "SELECT %s + (g %% 86400) * interval '1 second', 'login', jsonb_build_object('i', g) "
            "FROM generate_series(1, %s) g",
            [start + dt.timedelta(days=2), rows],
        )


def _month_count_and_checksum(schema: str, start: dt.datetime, end: dt.datetime):
    with schema_context(schema), connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*), md5(string_agg(id::text || ':' || payload::text, ',' ORDER BY id)) "
            f"FROM {sql.qualified(schema, TABLE)} WHERE occurred_at >= %s AND occurred_at < %s",
            [start, end],
        )
        return cursor.fetchone()


class MonthCounter:
    """Counts the month's rows through the parent every 10 ms; remembers every count seen."""

    def __init__(self, schema: str, start: dt.datetime, end: dt.datetime) -> None:
        self.counts: list[int] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()

        def run() -> None:
            with schema_context(schema), connection.cursor() as cursor:
                while not self.stop.is_set():
                    try:
                        cursor.execute(
                            f"SELECT count(*) FROM {sql.qualified(schema, TABLE)} "
                            "WHERE occurred_at >= %s AND occurred_at < %s",
                            [start, end],
                        )
                        self.counts.append(cursor.fetchone()[0])
                    except Exception as exc:  # noqa: BLE001 -- asserted on
                        self.errors.append(exc)
                    time.sleep(0.01)
            connections.close_all()

        self.thread = threading.Thread(target=run, name="month counter")

    def __enter__(self) -> "MonthCounter":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


# Three months ahead: beyond the partitions made with ahead=1, so its rows land in the default.
FAR = add_months(month_start(dt.datetime.now(dt.UTC)), 3)
FAR_END = add_months(FAR, 1)


@pytest.mark.slow
def test_draining_200000_rows_never_hides_them_from_a_reader(events):
    apply(plan(models_=["events.Event"], ahead=1))
    _fill_month(events, FAR, 200_000)
    before = _month_count_and_checksum(events, FAR, FAR_END)
    assert before[0] == 200_000
    with MonthCounter(events, FAR, FAR_END) as counter:
        time.sleep(0.05)
        result = apply(plan(models_=["events.Event"], ahead=3))
        time.sleep(0.05)
    assert getattr(result, "failures", []) == []
    assert counter.errors == []
    assert len(counter.counts) > 10
    assert min(counter.counts) == 200_000, sorted(set(counter.counts))[:5]
    assert _month_count_and_checksum(events, FAR, FAR_END) == before
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {sql.qualified(events, TABLE + '_default')}")
        assert cursor.fetchone()[0] == 0


_APPLY_SCRIPT = """
import django
django.setup()
from django.test import override_settings
from data_arch.partitioning import apply, plan
from data_arch.tenancy import resolve_tenant, tenant_context
with override_settings(DATA_ARCH={"PARTITIONS": {"DRAIN_BATCH_SIZE": 500}}):
    with tenant_context(resolve_tenant("tenant_a")):
        apply(plan(models_=["events.Event"], ahead=3))
"""


def _database_url(alias: str = "default") -> str:
    s = connections[alias].settings_dict
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    return f"postgres://{s['USER']}{password}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


@pytest.mark.slow
def test_kill_9_in_the_middle_of_a_drain_then_rerun_keeps_every_row(events):
    apply(plan(models_=["events.Event"], ahead=1))
    _fill_month(events, FAR, 60_000)
    before = _month_count_and_checksum(events, FAR, FAR_END)
    staging = sql.partition_name(TABLE, FAR)
    url = _database_url()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": url,
        "REPLICA_URL": url,
    }
    with MonthCounter(events, FAR, FAR_END) as counter:
        child = subprocess.Popen([sys.executable, "-c", _APPLY_SCRIPT], cwd=ROOT, env=env)
        try:
            deadline = time.monotonic() + 60
            copied = 0
            while time.monotonic() < deadline and copied < 5_000:
                time.sleep(0.02)
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT to_regclass(%s) IS NOT NULL", [sql.qualified(events, staging)]
                    )
                    if cursor.fetchone()[0]:
                        cursor.execute(f"SELECT count(*) FROM {sql.qualified(events, staging)}")
                        copied = cursor.fetchone()[0]
            assert child.poll() is None, "apply finished before it could be killed"
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
        finally:
            if child.poll() is None:
                child.kill()
        time.sleep(0.1)
        # Killed mid-drain: every row is still visible, and status says what was left.
        assert _month_count_and_checksum(events, FAR, FAR_END) == before
        from data_arch.partitioning import status

        report = status()[0]
        assert staging in getattr(report, "staging", {}), report
        result = apply(plan(models_=["events.Event"], ahead=3))
        time.sleep(0.05)
    assert getattr(result, "failures", []) == []
    assert counter.errors == []
    assert min(counter.counts) == 60_000, sorted(set(counter.counts))[:5]
    assert _month_count_and_checksum(events, FAR, FAR_END) == before
    assert status()[0].staging == {}


@pytest.mark.slow
def test_rows_of_the_month_written_during_the_drain_end_up_exactly_as_written(events):
    """Inserts, updates and deletes of the month's rows while they are copied: each change is
    mirrored into a plain table in the same transaction, and the month must equal the mirror."""
    import random

    from django.db import transaction

    apply(plan(models_=["events.Event"], ahead=1))
    _fill_month(events, FAR, 20_000)
    parent, mirror = sql.qualified(events, TABLE), sql.qualified(events, "drain_mirror")
    execute = lambda statement, params=None: _run(events, statement, params)  # noqa: E731
    execute(f"CREATE TABLE {mirror} (id bigint PRIMARY KEY, payload jsonb)")
    try:
        execute(f"INSERT INTO {mirror} SELECT id, payload FROM {parent} WHERE occurred_at >= %s",
                [FAR])
        ids = [row[0] for row in _fetch(events, f"SELECT id FROM {mirror}")]
        streams = Streams(events)

        def in_one_transaction(statements) -> None:  # noqa: ANN001
            with transaction.atomic(), connection.cursor() as cursor:
                for statement, params in statements:
                    cursor.execute(statement, params)

        def insert() -> None:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    f"INSERT INTO {parent} (occurred_at, kind, payload) VALUES (%s, 'x', "
                    "'{\"new\": 1}') RETURNING id, payload", [FAR + dt.timedelta(days=3)]
                )
                new_id, payload = cursor.fetchone()
                cursor.execute(f"INSERT INTO {mirror} VALUES (%s, %s)", [new_id, payload])

        def update() -> None:
            target = random.choice(ids)
            payload = f'{{"changed": {random.randint(0, 10**6)}}}'
            in_one_transaction([
                (f"UPDATE {parent} SET payload = %s WHERE id = %s", [payload, target]),
                (f"UPDATE {mirror} SET payload = %s WHERE id = %s", [payload, target]),
            ])

        def delete() -> None:
            target = random.choice(ids)
            in_one_transaction([
                (f"DELETE FROM {parent} WHERE id = %s", [target]),
                (f"DELETE FROM {mirror} WHERE id = %s", [target]),
            ])

        streams.add("insert", insert)
        streams.add("update", update)
        streams.add("delete", delete)
        with override_settings(DATA_ARCH={"PARTITIONS": {"DRAIN_BATCH_SIZE": 500}}):
            with streams:
                time.sleep(0.1)
                result = apply(plan(models_=["events.Event"], ahead=3))
                time.sleep(0.1)
        assert getattr(result, "failures", []) == []
        assert streams.errors == []
        assert all(len(v) > 5 for v in streams.latencies.values())
        month = (
            f"SELECT md5(string_agg(id::text || ':' || payload::text, ',' ORDER BY id)), count(*) "
            f"FROM {{}} WHERE id IN (SELECT id FROM {parent} WHERE occurred_at >= %s) "
        )
        assert _fetch(events, month.format(parent), [FAR]) == _fetch(
            events,
            f"SELECT md5(string_agg(id::text || ':' || payload::text, ',' ORDER BY id)), count(*) "
            f"FROM {mirror}",
        )
    finally:
        execute(f"DROP TABLE IF EXISTS {mirror}")


def _run(schema: str, statement: str, params=None) -> None:  # noqa: ANN001
    with schema_context(schema), connection.cursor() as cursor:
        cursor.execute(statement, params)


def _fetch(schema: str, statement: str, params=None) -> list:  # noqa: ANN001
    with schema_context(schema), connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall()


class StepTimes(logging.Handler):
    """Collects the runner's per-step timings (its debug log) while the block runs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[float, str]] = []
        self.logger = logging.getLogger("data_arch.partitioning")

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("%s.%s: step of"):
            self.lines.append((record.args[-1], record.getMessage()))

    def __enter__(self) -> Self:
        self.level = self.logger.level
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level)

    def biggest(self) -> str:
        """The step of the most statements (the shared swap of a drain)."""
        return max(self.lines, key=lambda line: int(line[1].split("step of ")[1].split()[0]))[1]

    def longest(self, count: int) -> list[str]:
        return [line for _, line in sorted(self.lines, reverse=True)[:count]]


def _fill_months(schema: str, months: list[dt.datetime], rows: int) -> None:
    """``rows`` rows spread evenly over ``months``, loaded in one statement each."""
    per_month, extra = divmod(rows, len(months))
    with schema_context(schema), connection.cursor() as cursor:
        for number, start in enumerate(months):
            cursor.execute(
                f"INSERT INTO {sql.qualified(schema, TABLE)} (occurred_at, kind, payload) "
                "SELECT %s + (g %% 2419200) * interval '1 second', 'login', '{}' "
                "FROM generate_series(1, %s) g",
                [start, per_month + (number < extra)],
            )


@pytest.mark.slow
def test_a_million_rows_outside_the_window_never_stall_the_streams_beyond_the_bound(events):
    """Rows of past months still kept and of far-future months all sit in the default: each
    month's ATTACH would scan every one of them under lock. Draining them must keep every
    statement of the streams within LOCK_TIMEOUT_MS (plus a margin for a loaded machine)."""
    lock_timeout_ms, margin_ms = 100, 250
    current = month_start(dt.datetime.now(dt.UTC))
    apply(plan(models_=["events.Event"], ahead=1))
    outside = [add_months(current, -m) for m in range(1, 13)] + [
        add_months(current, m) for m in range(24, 36)
    ]
    loaded = time.perf_counter()
    _fill_months(events, outside, 1_000_000)
    loaded = time.perf_counter() - loaded
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {sql.qualified(events, TABLE + '_default')}")
        cursor.execute(f"SELECT count(*) FROM {sql.qualified(events, TABLE + '_default')}")
        assert cursor.fetchone()[0] == 1_000_000
    ids = [
        e.pk
        for e in Event.objects.bulk_create(
            Event(occurred_at=dt.datetime.now(dt.UTC), kind="login") for _ in range(50)
        )
    ]
    settings = {
        "PARTITIONS": {
            "LOCK_TIMEOUT_MS": lock_timeout_ms, "LOCK_RETRIES": 30, "DRAIN_BATCH_SIZE": 50_000,
        }
    }
    steps = StepTimes()
    started = time.perf_counter()
    with busy_streams(events, ids) as streams, override_settings(DATA_ARCH=settings), steps:
        time.sleep(0.2)
        result = apply(plan(models_=["events.Event"], ahead=3))
        time.sleep(0.2)
    took = time.perf_counter() - started
    print(f"longest maintenance steps: {steps.longest(3)}; shared swap: {steps.biggest()}")
    stalls = streams.max_stall()
    print(
        f"1 M out-of-window rows: loaded in {loaded:.1f} s, {len(result.done)} months created "
        f"in {took:.1f} s, {result.rows_moved} rows copied, {result.lock_retries} lock retries; "
        "longest statement: "
        + ", ".join(f"{name} {stall * 1000:.0f} ms" for name, stall in stalls.items())
    )
    assert getattr(result, "failures", []) == []
    assert len(result.done) == 24 + 2
    assert streams.errors == []
    assert all(len(v) > 20 for v in streams.latencies.values())
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {sql.qualified(events, TABLE + '_default')}")
        assert cursor.fetchone()[0] == 0
        cursor.execute(f"SELECT count(*) FROM {sql.qualified(events, TABLE)}")
        assert cursor.fetchone()[0] == 1_000_000 + 50 + sum(
            len(v) for k, v in streams.latencies.items() if k == "insert"
        )
    assert all(stall <= (lock_timeout_ms + margin_ms) / 1000 for stall in stalls.values()), stalls


def test_rows_of_other_months_arriving_during_a_shared_swap_are_kept(events):
    """The shared swap empties the default with TRUNCATE: rows that reach it meanwhile outside
    the months being drained (a month nobody planned yet) must survive it."""
    apply(plan(models_=["events.Event"], ahead=1))
    months = [add_months(FAR, i) for i in range(3)]
    _fill_months(events, months, 6_000)
    elsewhere = add_months(FAR, 40)
    written: list[int] = []
    default = sql.qualified(events, TABLE + "_default")

    def insert_elsewhere() -> None:
        # Once apply records strangers (before that, such rows make it swap month by month).
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = %s::regclass "
                "AND tgname LIKE %s)", [default, sql.stranger_pattern(TABLE + "_default")],
            )
            if cursor.fetchone()[0]:
                written.append(Event.objects.create(occurred_at=elsewhere, kind="login").pk)

    streams = Streams(events)
    streams.add("insert elsewhere", insert_elsewhere)
    the_plan = plan(models_=["events.Event"], ahead=1)  # before the other month's rows
    with override_settings(DATA_ARCH={"PARTITIONS": {"DRAIN_BATCH_SIZE": 200}}), streams:
        result = apply(the_plan)
        time.sleep(0.1)
    assert getattr(result, "failures", []) == []
    assert streams.errors == []
    assert len(written) > 10
    drained = {sql.partition_name(TABLE, m) for m in months}
    assert drained <= {label.rsplit(" ", 1)[1] for label in result.done}
    kept = set(
        Event.objects.filter(occurred_at=elsewhere).values_list("pk", flat=True)
    )
    assert kept == set(written)
    for start in months:
        assert _month_count_and_checksum(events, start, add_months(start, 1))[0] == 2_000


def test_a_recorder_left_by_a_killed_run_is_reported_and_dropped_once_silent(events):
    """A run killed between installing its recorder and its swap leaves the recorder on the
    default. status names it; the next apply that drains drops it once it has been silent
    for RECORDER_SILENCE_SECONDS, and leaves a younger one (a run that may be alive) alone."""
    apply(plan(models_=["events.Event"], ahead=1))
    default = TABLE + "_default"
    key = ["id", "occurred_at"]
    for token, beat in (("deadbeef", "1000"), ("0a1b2c3d", None)):
        _run(events, ";".join(
            sql.create_stranger_capture(events, default, token, key, "occurred_at", [(FAR, FAR_END)])
        ))
        _run(events, sql.recorder_heartbeat(events, default, token))
        if beat:
            _run(events, f"COMMENT ON TABLE {sql.quote(sql.strangers_name(default, token))} "
                         f"IS '{beat}'")
    try:
        from data_arch.partitioning import status

        problems = status()[0].problems
        assert sum("records rows for a drain" in p for p in problems) == 2
        _fill_month(events, FAR, 100)
        assert getattr(apply(plan(models_=["events.Event"], ahead=1)), "failures", []) == []
        from data_arch.partitioning import catalog

        assert catalog.recorders("default", events, default) == [
            sql.stranger_name(default, "0a1b2c3d")
        ]
    finally:
        _run(events, ";".join(sql.drop_stranger_capture(events, default, "0a1b2c3d")))
        _run(events, ";".join(sql.drop_stranger_capture(events, default, "deadbeef")))


def test_the_clean_up_of_a_shared_swap_killed_before_it_is_finished_by_the_next_apply(events):
    """Killed right after a shared swap committed: the months are attached but keep their
    bounds CHECK (a detached partition carrying it would later read as a staging table) and
    their change capture on the default. The next apply removes both."""
    apply(plan(models_=["events.Event"], ahead=1))
    default = TABLE + "_default"
    month = month_start(dt.datetime.now(dt.UTC))
    name = sql.partition_name(TABLE, month)
    _run(events, f"ALTER TABLE {sql.quote(name)} ADD CONSTRAINT "
                 f"{sql.quote(sql.constraint_name(name, '_bounds'))} CHECK (occurred_at IS NOT NULL)")
    _run(events, ";".join(sql.create_capture(
        events, default, name, ["id", "occurred_at"], "occurred_at", month, add_months(month, 1)
    )))
    from data_arch.partitioning import catalog

    assert catalog.swap_leftovers("default", events, TABLE) == ([name], [name])
    the_plan = plan(models_=["events.Event"], ahead=1)
    assert the_plan.step_labels() == [f"{events}.{TABLE}: clean_up {name}"]
    result = apply(the_plan)
    assert getattr(result, "failures", []) == []
    assert result.steps == the_plan.step_labels()
    assert catalog.swap_leftovers("default", events, TABLE) == ([], [])
    assert not catalog.has_trigger("default", events, default, sql.capture_name(name))
