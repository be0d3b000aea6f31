"""A data_arch backfill (lag cap, adaptive batches, durable cursor) side by side with the loop a
team would otherwise write: fixed keyset batches of 5000 rows, committed one after another.

    python bench/backfills.py [--rows N] [--quick]   # starts a throwaway primary + streaming replica

Each run increments a counter column of every row of a 1 M-row table (``--rows``; ``--quick``:
100 k), after a VACUUM and a CHECKPOINT so both start alike. Reported per run: seconds, rows/s
and the largest replica lag sampled every 10 ms (bytes of WAL not yet replayed), in two settings:

1. a healthy replica: the cost of the throttle (throughput ratio data_arch / fixed loop);
2. replay delayed by 1 s (``recovery_min_apply_delay``, as a busy or distant replica lags):
   the fixed loop's lag against data_arch's with ``MAX_LAG_BYTES`` = 8 MiB.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from _common import Report, arguments, django_setup
from _common import services as bench_services

TABLE = "bench_backfill"
COUNT = "UPDATE {table} SET n = n + 1 WHERE id = ANY(%(keys)s)"


class LagSampler(threading.Thread):
    def __init__(self, primary_url: str, replica_url: str) -> None:
        super().__init__(daemon=True)
        self.urls = (primary_url, replica_url)
        self.samples: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.urls[0], autocommit=True) as primary, \
                psycopg.connect(self.urls[1], autocommit=True) as replica:
            while not self.stop.is_set():
                (position,) = primary.execute("SELECT pg_current_wal_lsn()").fetchone()
                (lag,) = replica.execute("SELECT %s::pg_lsn - pg_last_wal_replay_lsn()",
                                         [position]).fetchone()
                self.samples.append(int(lag))
                time.sleep(0.01)


def main() -> int:
    options = arguments(__doc__, extra=lambda parser: parser.add_argument(
        "--rows", type=int, help="rows in the table (default 1 M; --quick: 100 k)"))
    rows = options.rows or (100_000 if options.quick else 1_000_000)
    with bench_services():
        django_setup()
        import psycopg
        from django.conf import settings
        from django.db import connections, transaction
        from django.test.utils import override_settings

        from data_arch.backfills import register_backfill, run
        from data_arch.backfills.models import BackfillCursor

        primary_url, replica_url = os.environ["DATABASE_URL"], os.environ["REPLICA_URL"]
        connection = connections["default"]
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('data_arch_backfill')")
            if cursor.fetchone()[0] is None:
                with connection.schema_editor() as editor:
                    editor.create_model(BackfillCursor)
            cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
            cursor.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, n int NOT NULL "
                           "DEFAULT 0, pad text NOT NULL DEFAULT 'xxxxxxxxxxxxxxxx')")
            cursor.execute(f"INSERT INTO {TABLE} (id) SELECT generate_series(1, %s)", [rows])
        register_backfill("bench.counter", table=TABLE, batch_sql_or_callable=COUNT)

        def prepare() -> None:
            with psycopg.connect(primary_url, autocommit=True) as conn:
                conn.execute(f"VACUUM ANALYZE {TABLE}")
                conn.execute("CHECKPOINT")
            from data_arch.testing.pytest_plugin import replica_caught_up

            replica_caught_up("default", "replica", timeout=120)

        def measured(work) -> dict:
            prepare()
            sampler = LagSampler(primary_url, replica_url)
            sampler.start()
            started = time.perf_counter()
            work()
            seconds = time.perf_counter() - started
            sampler.stop.set()
            sampler.join(10)
            return {"seconds": round(seconds, 2), "rows_per_s": round(rows / seconds),
                    "max_lag_bytes": max(sampler.samples or [0])}

        def fixed_loop(batch: int = 5000) -> None:
            last = 0
            with connection.cursor() as cursor:
                while True:
                    with transaction.atomic(using="default"):
                        cursor.execute(f"SELECT id FROM {TABLE} WHERE id > %s ORDER BY id "
                                       "LIMIT %s", [last, batch])
                        keys = [row[0] for row in cursor.fetchall()]
                        if not keys:
                            return
                        cursor.execute(COUNT.replace("{table}", TABLE), {"keys": keys})
                    last = keys[-1]

        def backfill(cap: int) -> dict:
            BackfillCursor.objects.using("default").filter(name="bench.counter").delete()
            values = {"MAX_LAG_BYTES": cap, "BATCH_SIZE": 5000}
            result: dict = {}
            with override_settings(DATA_ARCH={**settings.DATA_ARCH, "BACKFILLS": values}):
                def work() -> None:
                    [progress] = run("bench.counter")
                    result.update(throttled_s=round(progress.throttled_seconds, 2),
                                  last_batch_size=progress.batch_size, batches=progress.batches)
                report = measured(work)
            return {**report, **result}

        def delay(value: str | None) -> None:
            with psycopg.connect(replica_url, autocommit=True) as replica:
                if value is None:
                    replica.execute("ALTER SYSTEM RESET recovery_min_apply_delay")
                else:
                    replica.execute(f"ALTER SYSTEM SET recovery_min_apply_delay = '{value}'")
                replica.execute("SELECT pg_reload_conf()")

        report: dict = {"rows": rows}
        healthy_loop = measured(fixed_loop)
        healthy_backfill = backfill(64 * 1024 * 1024)
        report["healthy_replica"] = {
            "fixed_loop": healthy_loop, "data_arch_cap_64MiB": healthy_backfill,
            "throughput_ratio": round(healthy_backfill["rows_per_s"] / healthy_loop["rows_per_s"], 2),
        }
        cap = 8 * 1024 * 1024
        delay("1s")
        try:
            delayed_loop = measured(fixed_loop)
            delayed_backfill = backfill(cap)
        finally:
            delay(None)
        report["replay_delayed_1s"] = {
            "fixed_loop": delayed_loop, "data_arch_cap_8MiB": delayed_backfill,
            "cap_bytes": cap,
            "throughput_ratio": round(delayed_backfill["rows_per_s"] / delayed_loop["rows_per_s"], 2),
        }
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE {TABLE}")
    healthy, delayed = report["healthy_replica"], report["replay_delayed_1s"]
    result = Report("backfills", f"A backfill of {rows:,} rows next to a fixed batch loop",
                    options.quick)
    result.details = report
    result.add("rows per second, healthy replica", "rows/s",
               healthy["data_arch_cap_64MiB"]["rows_per_s"], "fixed 5000-row loop",
               healthy["fixed_loop"]["rows_per_s"],
               note="the throttle's cost: replica lag probes and the durable cursor row")
    result.add("max replica lag, replay delayed 1 s", "bytes",
               delayed["data_arch_cap_8MiB"]["max_lag_bytes"], "the cap (MAX_LAG_BYTES)",
               delayed["cap_bytes"], target=("<=", 1.0), target_text="≤ the cap",
               note=f"fixed loop: {delayed['fixed_loop']['max_lag_bytes']:,} bytes")
    result.add("rows per second, replay delayed 1 s", "rows/s",
               delayed["data_arch_cap_8MiB"]["rows_per_s"], "fixed 5000-row loop",
               delayed["fixed_loop"]["rows_per_s"],
               note="held under the cap: each batch takes at most half the room left below "
                    "90% of it")
    result.write(options.result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
