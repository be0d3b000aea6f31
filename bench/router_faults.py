"""The read-replica router side by side with django-multidb-router, same primary and replica.

    python bench/router_faults.py [--quick]   # starts a throwaway primary + streaming replica

1. Read latency (p50 / p99 / max, ms) with a healthy replica and with the replica's host frozen
   (postmaster SIGSTOP: a hung host, which accepts TCP and never answers), and failed reads.
   Replica aliases have ``connect_timeout = 2`` for both routers.
2. Write-then-read: a user writes, then reads the row in their next request. Share of those
   reads served by the replica, and reads that returned the pre-write value (stale). data_arch
   carries the write's WAL position (its cookie); django-multidb-router pins the user to the
   primary for ``MULTIDB_PINNING_SECONDS`` (its cookie).
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import time

from _common import Report, arguments, django_setup
from _common import services as bench_services


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "p50": round(statistics.median(ordered) * 1000, 2),
        "p99": round(p99 * 1000, 2),
        "max": round(ordered[-1] * 1000, 2),
    }


def _reads(read, count: int) -> dict:
    from django.db import connections

    elapsed, errors = [], 0
    for _ in range(count):
        started = time.perf_counter()
        try:
            read()
        except Exception:  # noqa: BLE001 -- a failed read is what is counted
            errors += 1
        elapsed.append(time.perf_counter() - started)
        connections.close_all()  # the end of a request (CONN_MAX_AGE = 0)
    return {**_ms(elapsed), "errors": errors, "reads": count, "total_s": round(sum(elapsed), 2)}


def main() -> int:
    options = arguments(__doc__)
    quick = options.quick

    with bench_services() as services:
        django_setup()
        from django.conf import settings
        from django.db import connections, models
        from django.test.utils import override_settings

        from data_arch.routing import reset_health, routing_context, token
        from data_arch.routing.state import token_from

        settings.DATABASES["replica"].setdefault("OPTIONS", {})["connect_timeout"] = 2
        settings.REPLICA_DATABASES = ["replica"]
        settings.MULTIDB_PINNING_SECONDS = 15

        class Item(models.Model):
            value = models.IntegerField()

            class Meta:
                app_label = "data_arch"
                db_table = "bench_router_item"

        with connections["default"].cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS bench_router_item")
            cursor.execute("CREATE TABLE bench_router_item (id serial PRIMARY KEY, value int)")
            cursor.execute("INSERT INTO bench_router_item (value) VALUES (0)")
        time.sleep(0.5)

        ours = {"DATABASE_ROUTERS": ["data_arch.routers.ReplicaRouter"],
                "DATA_ARCH": {"ROUTER": {"REPLICAS": ["replica"], "HEALTH_TTL": 5}}}
        theirs = {"DATABASE_ROUTERS": ["multidb.PinningReplicaRouter"]}
        reads = 60 if quick else 300
        frozen_reads_theirs = 3 if quick else 10
        report: dict = {"reads": reads}

        def read_ours():
            with routing_context():
                return Item.objects.get(pk=1).value

        def read_theirs():
            return Item.objects.get(pk=1).value

        pid = int((services.replica.datadir / "postmaster.pid").read_text().split()[0])
        for name, overrides, read, frozen_count in (
            ("data_arch", ours, read_ours, reads),
            ("django-multidb-router", theirs, read_theirs, frozen_reads_theirs),
        ):
            with override_settings(**overrides):
                reset_health()
                healthy = _reads(read, reads)
                os.kill(pid, signal.SIGSTOP)
                try:
                    frozen = _reads(read, frozen_count)
                finally:
                    os.kill(pid, signal.SIGCONT)
                reset_health()
            report[name] = {"healthy": healthy, "frozen": frozen}

        # Write-then-read: the next request of the writing user, and of another user.
        from multidb.pinning import pin_this_thread, unpin_this_thread

        rounds = 50 if quick else 300
        for name, overrides in (("data_arch", ours), ("django-multidb-router", theirs)):
            on_replica = stale = other_stale = 0
            with override_settings(**overrides):
                reset_health()
                for _ in range(rounds):
                    with routing_context() as state:
                        Item.objects.filter(pk=1).update(value=models.F("value") + 1)
                        expected = Item.objects.using("default").get(pk=1).value
                        cookie = token(state)
                    connections.close_all()
                    with routing_context():  # another user, no cookie
                        if Item.objects.get(pk=1).value != expected:
                            other_stale += 1
                    if name == "django-multidb-router":
                        pin_this_thread()  # its cookie pins the writer to the primary
                    try:
                        with routing_context(token_from(cookie)):
                            item = Item.objects.get(pk=1)
                    finally:
                        unpin_this_thread()
                    on_replica += item._state.db == "replica"
                    stale += item.value != expected
                    connections.close_all()
            report[name]["write_then_read"] = {
                "rounds": rounds, "writer_reads_on_replica": on_replica,
                "writer_stale": stale, "other_user_stale": other_stale,
            }

        with connections["default"].cursor() as cursor:
            cursor.execute("DROP TABLE bench_router_item")

    ours_r, theirs_r = report["data_arch"], report["django-multidb-router"]
    print(f"Read latency, ms ({reads} reads each; frozen: replica postmaster SIGSTOPped)")
    print(f"  {'':24} {'healthy p50/p99/max':>24} {'frozen p50/p99/max':>26} {'errors':>7}")
    for name, row in (("data_arch", ours_r), ("django-multidb-router", theirs_r)):
        h, f = row["healthy"], row["frozen"]
        print(f"  {name:24} {h['p50']:>8}/{h['p99']}/{h['max']:<10} "
              f"{f['p50']:>8}/{f['p99']}/{f['max']:<12} {f['errors']}/{f['reads']}")
    print(f"  frozen p50 ratio (multidb / data_arch): "
          f"{theirs_r['frozen']['p50'] / max(ours_r['frozen']['p50'], 0.001):.0f}x")
    print("Write-then-read (the writer's next request, and another user's)")
    for name, row in (("data_arch", ours_r), ("django-multidb-router", theirs_r)):
        w = row["write_then_read"]
        print(f"  {name:24} writer reads on replica {w['writer_reads_on_replica']}/{w['rounds']}"
              f", writer stale {w['writer_stale']}, other user stale {w['other_user_stale']}")
    result = Report("router_faults", "Read-replica router under a frozen replica, and read-your-writes", quick)
    result.details = report
    result.add(
        "read p50, replica host frozen", "ms", ours_r["frozen"]["p50"],
        "django-multidb-router", theirs_r["frozen"]["p50"],
        target=("<=", 0.1), target_text="≥ 10 × faster",
        note=f"failed reads {ours_r['frozen']['errors']} vs {theirs_r['frozen']['errors']}",
    )
    result.add(
        "read p50, healthy replica", "ms", ours_r["healthy"]["p50"],
        "django-multidb-router", theirs_r["healthy"]["p50"],
        target=("<=", 1.2), target_text="≤ 1.2 ×",
    )
    ours_w, theirs_w = ours_r["write_then_read"], theirs_r["write_then_read"]
    result.add(
        "writer's next reads served by the replica", "%",
        round(100 * ours_w["writer_reads_on_replica"] / ours_w["rounds"], 1),
        "django-multidb-router (15 s pin)",
        round(100 * theirs_w["writer_reads_on_replica"] / theirs_w["rounds"], 1),
        note=f"stale reads {ours_w['writer_stale']} vs {theirs_w['writer_stale']}",
    )
    result.write(options.result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
