"""Partition maintenance of the example project under load and real faults, through its own
``manage.py partitions apply`` run as separate processes: twenty at once while a long
transaction holds the table, and one killed with SIGKILL in the middle of a drain."""

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Self

import pytest
from django.db import connection, connections, transaction
from django_tenants.utils import schema_context

from data_arch.partitioning import sql, status
from data_arch.partitioning.months import add_months, month_start
from tests.partitioning.conftest import TABLE
from tests.partitioning.test_busy_table import (
    ROOT,
    Streams,
    _database_url,
    _fill_month,
    hold_reader,
)

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def replica_replays_the_load(events):
    """These scenarios write a lot of WAL: let the replica catch up before the next test."""
    yield
    from data_arch.testing.pytest_plugin import replica_caught_up

    replica_caught_up(timeout=120)


def manage(tmp_path: Path, partitions: dict | None = None) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of the example project's ``manage.py`` on the test
    database, with ``DATA_ARCH['PARTITIONS']`` set to ``partitions``."""
    module = f"scenario_settings_{os.getpid()}"
    (tmp_path / f"{module}.py").write_text(
        "from tests.settings import *  # noqa: F403\n"
        f"DATA_ARCH = {{**DATA_ARCH, 'PARTITIONS': {partitions or {}!r}}}  # noqa: F405\n"
    )
    url = _database_url()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": module,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "DATABASE_URL": url,
        "REPLICA_URL": _database_url("replica"),
    }
    return [sys.executable, str(ROOT / "manage.py"), "partitions"], env


def catalog_of(schema: str) -> list[tuple]:
    """Everything maintenance makes in ``schema``: its tables and bounds, the default's
    triggers, leftover capture tables and functions. Names are compared, not oids."""
    with schema_context(schema), connection.cursor() as cursor:
        cursor.execute("SET TimeZone = 'UTC'")
        cursor.execute(
            "SELECT c.relname, c.relkind, c.relispartition, "
            "coalesce(pg_get_expr(c.relpartbound, c.oid), '') FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
            "AND c.relname LIKE 'events_event%%' AND c.relkind IN ('r', 'p', 'f') ORDER BY 1",
            [schema],
        )
        tables = cursor.fetchall()
        cursor.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal "
            "ORDER BY 1",
            [sql.qualified(schema, TABLE + "_default")],
        )
        triggers = cursor.fetchall()
        cursor.execute(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %s ORDER BY 1",
            [schema],
        )
        functions = cursor.fetchall()
        cursor.execute("RESET TimeZone")
    return [*tables, *triggers, *functions]


def month_rows(schema: str, start: dt.datetime, end: dt.datetime) -> tuple[int, str]:
    with schema_context(schema), connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*), md5(string_agg(occurred_at::text || ':' || payload::text, ',' "
            f"ORDER BY occurred_at, payload::text)) FROM {sql.qualified(schema, TABLE)} "
            "WHERE occurred_at >= %s AND occurred_at < %s",
            [start, end],
        )
        return cursor.fetchone()


TRACEBACK = re.compile(r"Traceback \(most recent call last\)")
#: What a run that lost the race may say: another run held the table, or a lock never came.
LOCK_REPORT = re.compile(
    r"another run holds the maintenance lock|lock timeout|canceling statement due to lock"
)


def test_twenty_applies_at_once_and_a_long_transaction_end_like_one_run(events, tmp_path):
    """Scenario 4. Reference: one apply on tenant_b. Then, on tenant_a with the same rows, a
    transaction holds the parent for 3 s while twenty ``manage.py partitions apply`` start
    at once. tenant_a must end exactly as tenant_b (same partitions, same bounds, nothing
    left over, same rows), and every run that did not finish says why in one line about a
    lock -- no traceback."""
    current = month_start(dt.datetime.now(dt.UTC))
    far, past = add_months(current, 30), add_months(current, -4)
    command, env = manage(tmp_path)
    for schema in ("tenant_b", "tenant_a"):
        _fill_month(schema, far, 3_000)
        _fill_month(schema, past, 2_000)
    one = subprocess.run(
        [*command, "apply", "--tenant", "tenant_b", "--yes"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert one.returncode == 0, one.stderr
    reference = catalog_of("tenant_b")

    holding = threading.Event()
    reader = hold_reader("tenant_a", 3.0, holding)
    assert holding.wait(10)
    started = time.monotonic()
    runs = [
        subprocess.Popen(
            [*command, "apply", "--tenant", "tenant_a", "--yes"], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(20)
    ]
    outputs = [run.communicate(timeout=600) for run in runs]
    wall = time.monotonic() - started
    reader.join()
    tracebacks = sum(1 for _, err in outputs if TRACEBACK.search(err))
    failed = [(run.returncode, err) for run, (_, err) in zip(runs, outputs) if run.returncode]
    print(
        f"scenario 4: 20 applies at once behind a 3 s transaction on the parent, "
        f"{len(runs) - len(failed)} exited 0, {len(failed)} reported a lock, "
        f"{tracebacks} tracebacks, wall {wall:.1f} s"
    )
    assert tracebacks == 0, [err for _, err in outputs if TRACEBACK.search(err)][:1]
    for code, err in failed:
        assert code == 1, err
        reports = [line for line in err.splitlines() if line.startswith("failed: ")]
        assert reports and all(LOCK_REPORT.search(line) for line in reports), err
    assert catalog_of("tenant_a") == reference
    for start in (far, past):
        end = add_months(start, 1)
        assert month_rows("tenant_a", start, end) == month_rows("tenant_b", start, end)
    [report] = _status("tenant_a")
    [one_run] = _status("tenant_b")
    assert report.default_rows == 0 and report.staging == {}
    assert report.problems == one_run.problems  # the gaps between the months with rows


def _status(schema: str) -> list:
    with schema_context(schema):
        return status(models_=["events.Event"])


class FarWriter:
    """Inserts rows into months beyond the last partition, each also into a plain mirror
    table in the same transaction: what was written, as committed."""

    def __init__(self, schema: str, months: list[dt.datetime], mirror: str) -> None:
        self.schema, self.months, self.mirror = schema, months, mirror
        self.streams = Streams(schema)
        counter = iter(range(10**9))
        self.streams.add("insert beyond the last partition", lambda: self.write(next(counter)))

    def write(self, number: int) -> None:
        moment = self.months[number % len(self.months)] + dt.timedelta(hours=number % 500)
        payload = f'{{"w": {number}}}'
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {sql.quote(TABLE)} (occurred_at, kind, payload) "
                "VALUES (%s, 'login', %s)",
                [moment, payload],
            )
            cursor.execute(
                f"INSERT INTO {self.mirror} (occurred_at, payload) VALUES (%s, %s)",
                [moment, payload],
            )


class TotalCounter:
    """Counts the rows beyond ``since`` through the parent every 10 ms. Only inserts happen
    there, so a count lower than the one before is a row that went invisible."""

    def __init__(self, schema: str, since: dt.datetime) -> None:
        self.counts: list[int] = []
        self.waits: list[float] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()

        def run() -> None:
            with schema_context(schema), connection.cursor() as cursor:
                while not self.stop.is_set():
                    started = time.perf_counter()
                    try:
                        cursor.execute(
                            f"SELECT count(*) FROM {sql.quote(TABLE)} WHERE occurred_at >= %s",
                            [since],
                        )
                        self.counts.append(cursor.fetchone()[0])
                    except Exception as exc:  # noqa: BLE001 -- asserted on
                        self.errors.append(exc)
                    self.waits.append(time.perf_counter() - started)
                    time.sleep(0.01)
            connections.close_all()

        self.thread = threading.Thread(target=run, name="total counter")

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def drops(self) -> list[tuple[int, int]]:
        return [(a, b) for a, b in zip(self.counts, self.counts[1:]) if b < a]


def test_apply_killed_during_a_drain_under_writes_beyond_the_last_partition(events, tmp_path):
    """Scenario 5. Rows keep arriving beyond the last partition (so into the default) while
    ``manage.py partitions apply`` drains them; it is killed with SIGKILL in the middle of
    the copy and run again, the writes still going. The months then hold exactly the rows
    written (count and checksum against a mirror written in the same transactions), and a
    reader counting them through the parent never saw the count go down."""
    current = month_start(dt.datetime.now(dt.UTC))
    months = [add_months(current, 6), add_months(current, 7)]
    mirror = sql.qualified(events, "scenario_mirror")
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {mirror} (occurred_at timestamptz, payload jsonb)")
    try:
        for start in months:
            _fill_month(events, start, 40_000)
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {mirror} SELECT occurred_at, payload FROM {sql.quote(TABLE)}"
            )
        command, env = manage(tmp_path, {"DRAIN_BATCH_SIZE": 500})
        apply_cmd = [*command, "apply", "--tenant", events, "--yes"]
        staging = [sql.qualified(events, sql.partition_name(TABLE, m)) for m in months]
        writer = FarWriter(events, months, mirror)
        with TotalCounter(events, months[0]) as counter, writer.streams:
            child = subprocess.Popen(apply_cmd, cwd=ROOT, env=env)
            try:
                copied = _wait_for_copied(staging, 4_000, child)
                os.kill(child.pid, signal.SIGKILL)
                child.wait(10)
            finally:
                if child.poll() is None:
                    child.kill()
            time.sleep(0.3)  # writes go on into the half-drained table
            killed_after = copied
            rerun = subprocess.run(
                apply_cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                check=False,
            )
            time.sleep(0.3)
        assert rerun.returncode == 0, rerun.stderr
        assert counter.errors == [] and writer.streams.errors == []
        assert len(counter.counts) > 20
        written = len(writer.streams.latencies["insert beyond the last partition"])
        longest = max(counter.waits)
        print(
            f"scenario 5: killed after {killed_after} rows copied, {written} rows written "
            f"during the drains, {len(counter.counts)} counts, 0 drops seen "
            f"{'(none)' if not counter.drops() else counter.drops()[:3]}, "
            f"longest count {longest * 1000:.0f} ms"
        )
        assert counter.drops() == []
        with schema_context(events), connection.cursor() as cursor:
            for start in months:
                end = add_months(start, 1)
                cursor.execute(
                    f"SELECT count(*), md5(string_agg(occurred_at::text || ':' || payload::text, "
                    f"',' ORDER BY occurred_at, payload::text)) FROM {mirror} "
                    "WHERE occurred_at >= %s AND occurred_at < %s",
                    [start, end],
                )
                assert month_rows(events, start, end) == cursor.fetchone()
        [report] = _status(events)
        assert report.staging == {} and report.default_rows == 0
        # The killed run's recorder is still there (young: its run might be alive), and said.
        assert sum("records rows for a drain" in p for p in report.problems) == 1
        assert {sql.partition_name(TABLE, m) for m in months} <= {
            p.name for p in report.partitions
        }
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {mirror}")


def _wait_for_copied(staging: list[str], rows: int, child: subprocess.Popen) -> int:
    """Wait until the staging tables hold ``rows`` rows between them, the apply still running."""
    deadline = time.monotonic() + 120
    copied = 0
    with connection.cursor() as cursor:
        while time.monotonic() < deadline and copied < rows:
            time.sleep(0.02)
            copied = 0
            for name in staging:
                cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
                if cursor.fetchone()[0]:
                    cursor.execute(f"SELECT count(*) FROM {name}")
                    copied += cursor.fetchone()[0]
    assert child.poll() is None, "apply finished before it could be killed"
    assert copied >= rows, f"only {copied} rows copied in 120 s"
    return copied
