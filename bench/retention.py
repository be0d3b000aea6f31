"""Retention: removing one old month, data_arch's partition drop next to DELETE (+ VACUUM).

    python bench/retention.py [--quick]   # throwaway PostgreSQL (no replica needed)

Three tables hold the same rows (``id, at, kind, payload``, an index on ``at``): one month of
1 M rows (``--quick``: 200 k) inserted first, then a quarter of that in the next month.

* data_arch: the table is partitioned by data_arch (``MonthlyPartitioning``, retention mode
  ``drop``); ``plan(retain=1)`` + ``apply()`` removes the old month (DETACH, then DROP, each
  in its own short transaction under ``lock_timeout``, after waiting for quiet);
* the same partitioning, a bare ``ALTER TABLE ... DETACH PARTITION`` + ``DROP TABLE`` (the
  limit: nothing is faster);
* the same rows unpartitioned (primary key on ``id``, index on ``at``): ``DELETE ... WHERE at
  in the month``, then ``VACUUM``.

Per method: seconds, WAL bytes written (``pg_current_wal_lsn()`` before and after), and bytes
freed (the table's relations, and ``pg_database_size``). A CHECKPOINT precedes each, so each
starts with clean buffers.
"""

from __future__ import annotations

import datetime as dt
import sys
import time

from _common import (
    Report,
    arguments,
    connect,
    create_table,
    database_size,
    django_setup,
    drop_tables,
    event_model,
    tree_size,
    wal_position,
)
from _common import services as bench_services

OLD, KEPT, NEXT = (dt.datetime(2026, m, 1, tzinfo=dt.UTC) for m in (1, 2, 3))
FILL = (
    "INSERT INTO {table} (id, at, kind, payload) "
    "SELECT g, %(start)s::timestamptz + (g - %(first)s) * %(step)s * interval '1 microsecond', "
    "(ARRAY['view','click','login','order'])[1 + g %% 4], md5(g::text) || md5((g * 7)::text) "
    "FROM generate_series(%(first)s::bigint, %(last)s::bigint) g"
)


def fill(conn, table: str, old_rows: int) -> None:
    month_us = 31 * 24 * 3600 * 10**6
    kept_rows = old_rows // 4
    for start, first, count in ((OLD, 1, old_rows), (KEPT, old_rows + 1, kept_rows)):
        conn.execute(FILL.format(table=table), {
            "start": start, "first": first, "last": first + count - 1,
            "step": month_us // count if start == OLD else (28 * 24 * 3600 * 10**6) // count,
        })
    conn.execute(f"VACUUM ANALYZE {table}")


def measured(conn, table: str, work) -> dict:
    conn.execute("CHECKPOINT")
    size, database, wal = tree_size(conn, table), database_size(conn), wal_position(conn)
    started = time.perf_counter()
    parts = work()
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 4),
        "wal_bytes": wal_position(conn) - wal,
        "freed_bytes": size - tree_size(conn, table),
        "database_freed_bytes": database - database_size(conn),
        **(parts or {}),
    }


def main() -> int:
    options = arguments(__doc__)
    old_rows = 200_000 if options.quick else 1_000_000
    with bench_services(replica=False):
        django_setup()
        from data_arch.partitioning import apply, plan

        ours = event_model("RetentionOurs", "bench_ret_ours")
        bare = event_model("RetentionBare", "bench_ret_bare")
        flat = event_model("RetentionFlat", "bench_ret_flat", partitioned=False)
        labels = [f"data_arch.{m.__name__}" for m in (ours, bare)]
        for model in (ours, bare, flat):
            create_table(model)
        # January, February and March 2026, made by data_arch for both partitioned tables.
        made = apply(plan(models_=labels, ahead=2, now=OLD + dt.timedelta(days=3)))
        assert made.ok, made.failures
        with connect() as conn:
            for model in (ours, bare, flat):
                fill(conn, model._meta.db_table, old_rows)
            counts = {
                m._meta.db_table: conn.execute(
                    f"SELECT count(*) FROM {m._meta.db_table} WHERE at >= %s AND at < %s",
                    [OLD, KEPT]).fetchone()[0]
                for m in (ours, bare, flat)
            }
            assert len(set(counts.values())) == 1, counts
            now = NEXT + dt.timedelta(days=1)  # retain 1 month: January ends before the cutoff

            def data_arch() -> dict:
                started = time.perf_counter()
                the_plan = plan(models_=[labels[0]], ahead=0, retain=1, now=now)
                planned = time.perf_counter() - started
                kinds = [a.kind for t in the_plan.tables for a in t.actions]
                assert kinds == ["drop"], kinds
                result = apply(the_plan)
                assert result.ok and result.done, result.to_dict()
                return {"plan_seconds": round(planned, 4),
                        "apply_seconds": round(time.perf_counter() - started - planned, 4)}

            def detach_drop() -> None:
                conn.execute("ALTER TABLE bench_ret_bare DETACH PARTITION bench_ret_bare_p2026_01")
                conn.execute("DROP TABLE bench_ret_bare_p2026_01")

            def delete() -> dict:
                deleted = conn.execute("DELETE FROM bench_ret_flat WHERE at >= %s AND at < %s",
                                       [OLD, KEPT]).rowcount
                return {"deleted": deleted}

            figures = {
                "data_arch": measured(conn, "bench_ret_ours", data_arch),
                "detach_drop": measured(conn, "bench_ret_bare", detach_drop),
                "delete": measured(conn, "bench_ret_flat", delete),
                "vacuum": measured(conn, "bench_ret_flat", lambda: conn.execute(
                    "VACUUM bench_ret_flat") and None),
            }
            for name, model in (("data_arch", ours), ("detach_drop", bare), ("delete", flat)):
                left = conn.execute(f"SELECT count(*) FROM {model._meta.db_table}").fetchone()[0]
                figures[name]["rows_left"] = left
        drop_tables("bench_ret_ours", "bench_ret_bare", "bench_ret_flat")

        ours_f, bare_f = figures["data_arch"], figures["detach_drop"]
        delete_f, vacuum_f = figures["delete"], figures["vacuum"]
        delete_vacuum = {
            "seconds": delete_f["seconds"] + vacuum_f["seconds"],
            "wal_bytes": delete_f["wal_bytes"] + vacuum_f["wal_bytes"],
            "freed_bytes": delete_f["freed_bytes"] + vacuum_f["freed_bytes"],
        }
        report = Report("retention", f"Removing one month of {old_rows:,} rows", options.quick)
        report.details = {"rows_removed": counts["bench_ret_ours"], "rows_kept": old_rows // 4,
                          **figures}
        split = (f"plan {ours_f['plan_seconds'] * 1000:.1f} ms + apply "
                 f"{ours_f['apply_seconds'] * 1000:.1f} ms")
        report.add("time to remove the month", "s", ours_f["seconds"], "DELETE",
                   delete_f["seconds"], target=("<=", 0.1), target_text="≥ 10 × faster",
                   note=split)
        report.add("time to remove the month", "s", ours_f["seconds"], "DELETE + VACUUM",
                   delete_vacuum["seconds"], target=("<=", 0.04), target_text="≥ 25 × faster")
        report.add(
            "time to remove the month", "s", ours_f["seconds"], "bare DETACH + DROP",
            bare_f["seconds"], target=("<=", 1.5), target_text="≤ 1.5 ×",
            note="data_arch also reads the catalog to plan, waits for quiet and takes "
                 "lock_timeout + an advisory lock per step",
        )
        report.add("WAL written", "bytes", ours_f["wal_bytes"], "DELETE + VACUUM",
                   delete_vacuum["wal_bytes"],
                   note=f"bare DETACH + DROP: {bare_f['wal_bytes']:,} bytes")
        report.add(
            "space freed (table, indexes, partitions)", "bytes", ours_f["freed_bytes"],
            "DELETE + VACUUM", delete_vacuum["freed_bytes"],
            note="DELETE leaves dead rows; VACUUM makes the space reusable inside the table "
                 "but gives none back (only VACUUM FULL, which locks the table, would)",
        )
        report.write(options.result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
