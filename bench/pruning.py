"""Partition pruning: a one-month range query on a partitioned table next to the same rows in
one table with the same index.

    python bench/pruning.py [--quick]   # throwaway PostgreSQL (no replica needed)

10 M rows (``--quick``: 1 M) spread evenly over the 12 months of 2025, inserted in time order,
in a table partitioned monthly by data_arch and in a plain table; both have an index on
``at`` (and the primary key). The query counts one month's rows by kind:

    SELECT kind, count(*) FROM t WHERE at >= '2025-06-01' AND at < '2025-07-01' GROUP BY kind

Each table is queried alternately (``EXPLAIN (ANALYZE, BUFFERS)``), 5 times (``--quick``: 3);
reported are the median execution time, the shared buffers the last (warm) run touched (hit +
read) and the partitions the plan scanned; the details keep every run's figures. The server
has ``shared_buffers = 64MB``.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import sys

from _common import (
    Report,
    arguments,
    connect,
    create_table,
    django_setup,
    drop_tables,
    event_model,
    tree_size,
)
from _common import services as bench_services

YEAR = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
MONTH = (dt.datetime(2025, 6, 1, tzinfo=dt.UTC), dt.datetime(2025, 7, 1, tzinfo=dt.UTC))
QUERY = "SELECT kind, count(*) FROM {table} WHERE at >= %s AND at < %s GROUP BY kind"


def fill(conn, table: str, rows: int) -> None:
    step_us = 365 * 24 * 3600 * 10**6 // rows
    conn.execute(
        f"INSERT INTO {table} (id, at, kind, payload) SELECT g, %s::timestamptz + g::bigint * %s * "
        "interval '1 microsecond', (ARRAY['view','click','login','order'])[1 + g %% 4], '' "
        "FROM generate_series(0, %s - 1) g", [YEAR, step_us, rows])
    conn.execute(f"VACUUM ANALYZE {table}")


def explain(conn, table: str) -> dict:
    statement = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + QUERY.format(table=table)
    (result,) = conn.execute(statement, MONTH).fetchone()
    top = (json.loads(result) if isinstance(result, str) else result)[0]
    scanned = set()

    def walk(node: dict) -> None:
        if "Relation Name" in node:
            scanned.add(node["Relation Name"])
        for child in node.get("Plans", []):
            walk(child)

    walk(top["Plan"])
    return {
        "ms": round(top["Execution Time"], 3),
        "hit": top["Plan"].get("Shared Hit Blocks", 0),
        "read": top["Plan"].get("Shared Read Blocks", 0),
        "relations": sorted(scanned),
    }


def main() -> int:
    options = arguments(__doc__)
    rows = 1_000_000 if options.quick else 10_000_000
    runs = 3 if options.quick else 5
    with bench_services(replica=False):
        django_setup()
        from data_arch.partitioning import apply, plan

        ours = event_model("PruningOurs", "bench_prune_ours")
        flat = event_model("PruningFlat", "bench_prune_flat", partitioned=False)
        for model in (ours, flat):
            create_table(model)
        made = apply(plan(models_=["data_arch.PruningOurs"], ahead=11, now=YEAR))
        assert made.ok and len(made.done) == 12, made.to_dict()
        with connect() as conn:
            for table in ("bench_prune_ours", "bench_prune_flat"):
                fill(conn, table, rows)
            sizes = {t: tree_size(conn, t) for t in ("bench_prune_ours", "bench_prune_flat")}
            conn.execute("CHECKPOINT")
            samples: dict[str, list[dict]] = {"bench_prune_ours": [], "bench_prune_flat": []}
            for _ in range(runs):
                for table, taken in samples.items():
                    taken.append(explain(conn, table))
            (matched,) = conn.execute(
                "SELECT count(*) FROM bench_prune_flat WHERE at >= %s AND at < %s", MONTH
            ).fetchone()
        drop_tables("bench_prune_ours", "bench_prune_flat")

    def summary(table: str) -> dict:
        runs_ = samples[table]
        return {"median_ms": round(statistics.median(r["ms"] for r in runs_), 3),
                "first": runs_[0], "last": runs_[-1], "all_ms": [r["ms"] for r in runs_],
                "size_bytes": sizes[table]}

    ours_s, flat_s = summary("bench_prune_ours"), summary("bench_prune_flat")
    report = Report("pruning", f"One month out of 12 ({matched:,} of {rows:,} rows)", options.quick)
    report.details = {"rows": rows, "rows_in_month": matched, "runs": runs,
                      "data_arch": ours_s, "unpartitioned": flat_s}
    touched = [r for r in ours_s["last"]["relations"] if r != "bench_prune_ours"]
    report.add("one-month query, median execution time", "ms", ours_s["median_ms"],
               "one table, same index", flat_s["median_ms"],
               note=f"partitions scanned: {', '.join(touched)}")
    report.add("shared buffers touched (hit + read), warm", "blocks",
               ours_s["last"]["hit"] + ours_s["last"]["read"], "one table, same index",
               flat_s["last"]["hit"] + flat_s["last"]["read"])
    report.write(options.result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
