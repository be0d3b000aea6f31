"""Cost of a /metrics scrape with many tenant schemas: data_arch's state collector (three
queries whatever the number of schemas) next to reading each schema's status the way a
per-tenant loop does (``partitioning.status()`` in every tenant context).

    python bench/metrics_scrape.py [--quick]     # 500 schemas (100 with --quick)

Each schema gets the example's partitioned ``events_event`` table with a default and 5 month
partitions, made with plain DDL (no migrations), so the setup takes seconds.
"""

from __future__ import annotations

import datetime as dt
import sys
import time

from _common import Report, arguments, django_setup
from _common import services as bench_services


def _schemas(cursor, count: int) -> list[str]:
    from data_arch.partitioning.months import add_months, month_start

    start = month_start(dt.datetime.now(dt.UTC))
    names = [f"scrape_{n:04d}" for n in range(count)]
    for name in names:
        cursor.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        cursor.execute(f"CREATE SCHEMA {name}")
        cursor.execute(
            f"CREATE TABLE {name}.events_event (id bigserial, occurred_at timestamptz NOT NULL,"
            " kind varchar(16), payload jsonb, PRIMARY KEY (id, occurred_at))"
            " PARTITION BY RANGE (occurred_at)"
        )
        cursor.execute(f"CREATE TABLE {name}.events_event_default PARTITION OF "
                       f"{name}.events_event DEFAULT")
        for month in range(-1, 4):
            lower, upper = add_months(start, month), add_months(start, month + 1)
            cursor.execute(
                f"CREATE TABLE {name}.events_event_p{lower:%Y_%m} PARTITION OF "
                f"{name}.events_event FOR VALUES FROM (%s) TO (%s)", [lower, upper])
    return names


def main() -> int:
    options = arguments(__doc__)
    count = 100 if options.quick else 500
    with bench_services(replica=False):
        django_setup()
        from django.core.management import call_command
        from django.db import connections

        from data_arch.partitioning import status
        from data_arch.prometheus import StateCollector

        call_command("migrate_schemas", "--shared", verbosity=0)
        with connections["default"].cursor() as cursor:
            started = time.perf_counter()
            names = _schemas(cursor, count)
            setup = time.perf_counter() - started

        collector = StateCollector(cache_seconds=0)
        list(collector.collect())  # warm the connection and the catalog cache
        runs = 5
        started = time.perf_counter()
        for _ in range(runs):
            families = list(collector.collect())
        ours = (time.perf_counter() - started) / runs
        ahead = next(f for f in families if f.name == "data_arch_partition_months_ahead")

        connection = connections["default"]
        started = time.perf_counter()
        for name in names:
            with connection.cursor() as cursor:
                cursor.execute(f"SET search_path TO {name}")
            status(models_=["events.Event"])
        loop = time.perf_counter() - started
        with connection.cursor() as cursor:
            cursor.execute("SET search_path TO public")
            for name in names:
                cursor.execute(f"DROP SCHEMA {name} CASCADE")

    report = {
        "schemas": count,
        "setup_seconds": round(setup, 2),
        "collector_seconds": round(ours, 4),
        "per_schema_status_seconds": round(loop, 3),
        "ratio": round(loop / ours, 1),
        "months_ahead": [s.value for s in ahead.samples],
    }
    print(f"Scrape with {count} tenant schemas (events_event: default + 5 months each)")
    print(f"  data_arch state collector        {ours * 1000:8.1f} ms per scrape")
    print(f"  status() per schema              {loop * 1000:8.1f} ms")
    result = Report("metrics_scrape", f"A /metrics scrape with {count} tenant schemas",
                    options.quick)
    result.details = report
    result.add("partition state of every tenant schema", "s", report["collector_seconds"],
               "partitioning.status() schema by schema", report["per_schema_status_seconds"],
               note="three catalog queries whatever the number of schemas")
    result.write(options.result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
