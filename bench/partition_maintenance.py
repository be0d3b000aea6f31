"""Partition maintenance under load: premaking 12 months while INSERT, UPDATE-by-pk and SELECT
streams run, with data_arch, django-postgres-extra, pg_partman and hand-written DDL.

    python bench/partition_maintenance.py [--quick]   # throwaway PostgreSQL (no replica)

Four tables with the same columns (``id, at, kind, payload``, primary key ``(id, at)``, an
index on ``at``), a default partition and the current month holding 20 000 rows (``--quick``:
5 000). On each, the next 12 months are created by:

* data_arch: ``apply(plan(ahead=12))`` -- per month ``CREATE TABLE (LIKE ...)`` + CHECK +
  ``ATTACH PARTITION`` in its own transaction under ``lock_timeout`` (``LOCK_TIMEOUT_MS``),
  after waiting, holding nothing, for long transactions on the table to end;
* django-postgres-extra 2.x: its ``PostgresPartitioningManager`` (what ``manage.py
  pgpartition`` runs) with ``PostgresCurrentTimePartitioningStrategy(months=1, count=13)``,
  the real library on a second alias whose ENGINE is ``psqlextra.backend``: one transaction of
  ``CREATE TABLE ... PARTITION OF`` statements;
* pg_partman 4.7 (Debian's ``postgresql-15-partman``; only with the system PostgreSQL 15):
  ``partman.create_parent(..., 'native', 'monthly', p_premake := 12)``;
* hand-written DDL: per month, in one transaction, ``CREATE TABLE (LIKE ...)`` + CHECK +
  ``ATTACH PARTITION`` + ``DROP CONSTRAINT``, no ``lock_timeout``.

Three client threads, each on its own connection, run ``INSERT`` (current month), ``UPDATE ...
WHERE id = %s`` and ``SELECT ... WHERE id = %s`` every 2 ms from 0.3 s before to 0.3 s after the
maintenance; their latencies give p50 / p99 / max. Each method runs twice: on a quiet table, and
while another session holds a 2 s read of the parent (``SELECT count(*)`` then ``pg_sleep(2)``
in one transaction). Methods run in turn (the order alternates between the two settings).

Then the wall time of maintaining 200 tenant schemas (``--quick``: 20), each with its own
partitioned table (a default, no month yet): data_arch's ``apply(plan(ahead=3))`` inside each
schema (``schema_context``, as ``partitions apply --all-tenants`` runs it per tenant) next to the
same four months per schema in hand-written DDL, schema by schema alternately.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import sys
import threading
import time
from typing import Self

from _common import (
    Report,
    arguments,
    connect,
    create_table,
    django_setup,
    drop_tables,
    event_model,
    percentiles,
)
from _common import services as bench_services

AHEAD = 12
TABLES = {"data_arch": "bench_pm_ours", "pgpartition": "bench_pm_extra",
          "pg_partman": "bench_pm_partman", "hand": "bench_pm_hand"}


def month_start(moment: dt.datetime, months: int = 0) -> dt.datetime:
    index = moment.year * 12 + moment.month - 1 + months
    return dt.datetime(index // 12, index % 12 + 1, 1, tzinfo=dt.UTC)


class Streams:
    """INSERT, UPDATE-by-pk and SELECT-by-pk, each in its own thread and connection."""

    def __init__(self, table: str, ids: int) -> None:
        self.table, self.ids = table, ids
        self.stop = threading.Event()
        self.samples: dict[str, list[float]] = {"insert": [], "update": [], "select": []}
        self.errors: dict[str, int] = dict.fromkeys(self.samples, 0)
        self.threads = [threading.Thread(target=self.run, args=(kind,), daemon=True)
                        for kind in self.samples]

    def run(self, kind: str) -> None:
        table = self.table
        statement = {
            "insert": f"INSERT INTO {table} (at, kind, payload) VALUES (now(), 'view', '')",
            "update": f"UPDATE {table} SET kind = 'seen' WHERE id = %s",
            "select": f"SELECT kind FROM {table} WHERE id = %s",
        }[kind]
        pick = random.Random(kind).randint
        with connect() as conn:
            while not self.stop.is_set():
                params = None if kind == "insert" else [pick(1, self.ids)]
                started = time.perf_counter()
                try:
                    conn.execute(statement, params)
                except Exception:  # noqa: BLE001 -- a failed statement is counted, not fatal
                    self.errors[kind] += 1
                self.samples[kind].append(time.perf_counter() - started)
                time.sleep(0.002)

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def summary(self) -> dict:
        every = [s for samples in self.samples.values() for s in samples]
        return {"all": percentiles(every),
                **{kind: percentiles(s) for kind, s in self.samples.items()},
                "errors": dict(self.errors)}


def hold_reader(table: str, holding: threading.Event) -> threading.Thread:
    def read() -> None:
        with connect() as conn, conn.transaction():
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            holding.set()
            conn.execute("SELECT pg_sleep(2)")

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def future_partitions(conn, table: str, after: dt.datetime) -> list[str]:
    conn.execute("SET TimeZone = 'UTC'")
    rows = conn.execute(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass", [table]
    ).fetchall()
    found = []
    for name, bound in rows:
        if bound != "DEFAULT" and bound.split("'")[1][:19] > after.strftime("%Y-%m-%d %H:%M:%S"):
            found.append(name)
    return sorted(found)


def hand_ddl(conn, schema: str, table: str, start: dt.datetime) -> None:
    """One month, the way a careful hand-written script does it."""
    end = month_start(start, 1)
    name = f"{table}_p{start:%Y_%m}"
    lower, upper = f"'{start:%Y-%m-%d} 00:00:00+00'", f"'{end:%Y-%m-%d} 00:00:00+00'"
    with conn.transaction():
        conn.execute(f"CREATE TABLE {schema}.{name} (LIKE {schema}.{table} INCLUDING DEFAULTS "
                     "INCLUDING CONSTRAINTS INCLUDING INDEXES)")
        conn.execute(f"ALTER TABLE {schema}.{name} ADD CONSTRAINT {name}_b CHECK "
                     f"(at IS NOT NULL AND at >= {lower} AND at < {upper})")
        conn.execute(f"ALTER TABLE {schema}.{table} ATTACH PARTITION {schema}.{name} "
                     f"FOR VALUES FROM ({lower}) TO ({upper})")
        conn.execute(f"ALTER TABLE {schema}.{name} DROP CONSTRAINT {name}_b")


def main() -> int:
    options = arguments(__doc__)
    rows = 5_000 if options.quick else 20_000
    schemas = 20 if options.quick else 200
    with bench_services(replica=False):
        django_setup()
        from django.conf import settings
        from django.db import connections, models

        # django-postgres-extra on a second alias with its own backend (its models refuse to
        # load unless some alias has it).
        settings.DATABASES["psqlextra"] = {**settings.DATABASES["default"],
                                           "ENGINE": "psqlextra.backend"}
        connections.settings["psqlextra"] = settings.DATABASES["psqlextra"]
        from django_tenants.utils import schema_context
        from psqlextra.models import PostgresPartitionedModel
        from psqlextra.partitioning import (
            PostgresCurrentTimePartitioningStrategy,
            PostgresPartitioningConfig,
            PostgresPartitioningManager,
            PostgresTimePartitionSize,
        )
        from psqlextra.types import PostgresPartitioningMethod

        from data_arch.conf import partition_settings
        from data_arch.partitioning import apply, plan

        lock_timeout_ms = partition_settings().lock_timeout_ms
        now = dt.datetime.now(dt.UTC)
        current = month_start(now)
        report = Report("partition_maintenance",
                        f"Premaking {AHEAD} months under INSERT/UPDATE/SELECT streams",
                        options.quick)

        with connect() as conn:
            partman = conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_partman'").fetchone()
            version = conn.execute("SHOW server_version_num").fetchone()[0]
            if partman:
                conn.execute("CREATE SCHEMA IF NOT EXISTS partman")
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman")
        methods = ["data_arch", "pgpartition", "pg_partman", "hand"]
        if not partman:
            methods.remove("pg_partman")
            report.skip("pg_partman", (
                "Debian packages pg_partman for the system PostgreSQL 15 only "
                f"(postgresql-15-partman); this server is {int(version) // 10000}"
                if int(version) // 10000 != 15 else
                "the extension is not installed (postgresql-15-partman; dev.py bench "
                "installs it when run as root)"))

        ours = event_model("MaintOurs", TABLES["data_arch"])
        hand = event_model("MaintHand", TABLES["hand"])
        extra = event_model("MaintExtraTable", TABLES["pgpartition"])
        partman_model = event_model("MaintPartman", TABLES["pg_partman"], default=False)
        made = [ours, hand, extra] + ([partman_model] if partman else [])
        for model in made:
            create_table(model)

        class ExtraEvent(PostgresPartitionedModel):
            at = models.DateTimeField()
            kind = models.CharField(max_length=16)
            payload = models.TextField()

            class PartitioningMeta:
                method = PostgresPartitioningMethod.RANGE
                key = ["at"]  # noqa: RUF012 -- psqlextra's option

            class Meta:
                app_label = "data_arch"
                db_table = TABLES["pgpartition"]
                managed = False

        extra_manager = PostgresPartitioningManager([PostgresPartitioningConfig(
            model=ExtraEvent,
            strategy=PostgresCurrentTimePartitioningStrategy(
                size=PostgresTimePartitionSize(months=1), count=AHEAD + 1, name_format="p%Y_%m"),
        )])
        # The current month, named as every method names it (so none recreates it).
        labels = [f"data_arch.{m.__name__}" for m in made]
        done = apply(plan(models_=labels, ahead=0))
        assert done.ok, done.to_dict()
        with connect() as conn:
            for table in TABLES.values():
                if table == TABLES["pg_partman"] and not partman:
                    continue
                conn.execute(
                    f"INSERT INTO {table} (id, at, kind, payload) SELECT g, %s::timestamptz + "
                    "g * interval '1 second', 'view', '' FROM generate_series(1, %s) g",
                    [current, rows])
                conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), %s)", [rows])
                conn.execute(f"VACUUM ANALYZE {table}")

        def reset(conn, method: str) -> None:
            table = TABLES[method]
            for name in future_partitions(conn, table, current):
                conn.execute(f"DROP TABLE {name}")
            if method == "pg_partman":
                conn.execute(f"DROP TABLE IF EXISTS {table}_default")
                conn.execute("DELETE FROM partman.part_config WHERE parent_table = %s",
                             [f"public.{table}"])
                conn.execute(f"DROP TABLE IF EXISTS partman.template_public_{table}")

        def run_method(conn, method: str) -> None:
            if method == "data_arch":
                result = apply(plan(models_=["data_arch.MaintOurs"], ahead=AHEAD))
                assert result.ok, result.to_dict()
            elif method == "pgpartition":
                extra_manager.plan(using="psqlextra").apply(using="psqlextra")
            elif method == "pg_partman":
                conn.execute("SET TimeZone = 'UTC'")  # month bounds at UTC midnight
                conn.execute(
                    "SELECT partman.create_parent(%s, 'at', 'native', 'monthly', "
                    "p_premake := %s, p_start_partition := %s)",
                    [f"public.{TABLES['pg_partman']}", AHEAD, current.strftime("%Y-%m-%d")])
            else:
                for month in range(1, AHEAD + 1):
                    hand_ddl(conn, "public", TABLES["hand"], month_start(now, month))

        figures: dict = {"lock_timeout_ms": lock_timeout_ms, "rows": rows}
        with connect() as conn:
            for setting in ("quiet", "reader"):
                order = methods if setting == "quiet" else list(reversed(methods))
                for method in order:
                    table = TABLES[method]
                    reset(conn, method)
                    with Streams(table, rows) as streams:
                        time.sleep(0.3)
                        reader = None
                        if setting == "reader":
                            holding = threading.Event()
                            reader = hold_reader(table, holding)
                            holding.wait(10)
                            time.sleep(0.05)
                        started = time.perf_counter()
                        run_method(conn, method)
                        wall = time.perf_counter() - started
                        if reader is not None:
                            reader.join(30)
                        time.sleep(0.3)
                    created = future_partitions(conn, table, current)
                    assert len(created) == AHEAD, (method, created)
                    figures.setdefault(setting, {})[method] = {
                        "wall_s": round(wall, 4), **streams.summary()}
                    print(f"{setting:6} {method:12} wall {wall:7.3f} s  streams "
                          f"{figures[setting][method]['all']}", flush=True)
            for method in methods:
                reset(conn, method)

        # Tenant schemas: data_arch and hand-written DDL, schema by schema alternately.
        tenant_model = event_model("MaintTenant", "bench_pm_tenant")
        tenant_label = "data_arch.MaintTenant"
        names = {kind: [f"bench_pm_{kind}_{n:04d}" for n in range(schemas)]
                 for kind in ("ours", "hand")}
        del tenant_model  # plan() finds it through the app registry
        with connect() as conn:
            started = time.perf_counter()
            for schema in names["ours"] + names["hand"]:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                conn.execute(f"CREATE SCHEMA {schema}")
                conn.execute(
                    f"CREATE TABLE {schema}.bench_pm_tenant (id bigint GENERATED BY DEFAULT AS "
                    "IDENTITY, at timestamptz NOT NULL, kind varchar(16) NOT NULL, payload text "
                    "NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at)")
                conn.execute(f"CREATE INDEX ON {schema}.bench_pm_tenant (at)")
                conn.execute(f"CREATE TABLE {schema}.bench_pm_tenant_default PARTITION OF "
                             f"{schema}.bench_pm_tenant DEFAULT")
            setup = time.perf_counter() - started
            seconds = {"data_arch": 0.0, "hand": 0.0}
            for ours_schema, hand_schema in zip(names["ours"], names["hand"], strict=True):
                started = time.perf_counter()
                with schema_context(ours_schema):
                    result = apply(plan(models_=[tenant_label], ahead=3))
                assert result.ok and len(result.done) == 4, result.to_dict()
                seconds["data_arch"] += time.perf_counter() - started
                started = time.perf_counter()
                for month in range(4):
                    hand_ddl(conn, hand_schema, "bench_pm_tenant", month_start(now, month))
                seconds["hand"] += time.perf_counter() - started
            for schema in names["ours"] + names["hand"]:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")
            if partman:
                conn.execute("DROP EXTENSION pg_partman")
                conn.execute("DROP SCHEMA partman CASCADE")
        figures["tenants"] = {"schemas": schemas, "months_each": 4,
                              "setup_s": round(setup, 2),
                              **{k: round(v, 3) for k, v in seconds.items()}}
        drop_tables(*TABLES.values())

    report.details = figures
    limit = lock_timeout_ms + 50
    names_ = {"pgpartition": "pgpartition (django-postgres-extra)",
              "pg_partman": "pg_partman create_parent", "hand": "hand LIKE + ATTACH"}
    for setting, label in (("reader", "with a 2 s reader on the parent"),
                           ("quiet", "quiet table")):
        ours_max = figures[setting]["data_arch"]["all"]["max"]
        report.add(f"worst stall of the streams, {label}", "ms", ours_max,
                   f"limit (lock_timeout {lock_timeout_ms} ms + 50 ms)", limit,
                   target=("<=", 1.0), target_text="≤ lock_timeout + 50 ms")
        for method in methods[1:]:
            theirs = figures[setting][method]["all"]
            errors = sum(figures[setting][method]["errors"].values())
            report.add(
                f"worst stall of the streams, {label}", "ms", ours_max, names_[method],
                theirs["max"],
                note=f"p99 {figures[setting]['data_arch']['all']['p99']} vs {theirs['p99']} ms"
                     + (f"; {errors} failed statements" if errors else ""),
            )
    report.add(f"wall time, {AHEAD} months, quiet table", "s",
               figures["quiet"]["data_arch"]["wall_s"], "hand LIKE + ATTACH",
               figures["quiet"]["hand"]["wall_s"], target=("<=", 1.1), target_text="≤ 1.1 ×",
               note="data_arch plans from the catalog, waits for quiet, takes the table's "
                    "advisory lock and its locks in DML order, per month")
    report.add(f"wall time, {schemas} tenant schemas × 4 months", "s", seconds["data_arch"],
               "hand LIKE + ATTACH", seconds["hand"], target=("<=", 1.1),
               target_text="≤ 1.1 ×")
    report.write(options.result)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
