"""The read-replica router side by side with django-multidb-router and with no router.

    python bench/router_faults.py [--quick]   # starts a throwaway primary + streaming replica

1. Routing cost per query: ``db_for_read`` alone (the decision and its state bookkeeping, in a
   request whose replica is already chosen, connection open), a new request's routing state
   with its first ``db_for_read`` (data_arch: ``routing_context()``; django-multidb-router: the
   unpinning its middleware does), and an ORM ``.get()`` by primary
   key on an open connection; data_arch's ``ReplicaRouter`` vs django-multidb-router's
   ``PinningReplicaRouter`` vs no router (the same ``.get()`` sent to the replica with
   ``using()``). The variants run interleaved in rounds, medians compared. The alternatives run
   without data_arch's execute wrappers (as in a project without data_arch); data_arch's reads
   carry them (write detection, read retry, the tenant setting).
2. Read latency (p50 / p99 / max, ms) of requests that connect (``CONN_MAX_AGE = 0``) with a
   healthy replica -- the two routers alternating read by read -- and with the replica's host
   frozen (postmaster SIGSTOP: a hung host, which accepts TCP and never answers), and failed
   reads. Replica aliases have ``connect_timeout = 2`` for both routers.
3. Write-then-read: 10 users send requests back to back through each router's own middleware,
   one in five a write (a POST that increments the user's row, then reads it back); every
   request reads the user's row, and a user's cookies go with their next requests (expiring as
   a browser would). Share of the reads in requests that wrote nothing served by the replica,
   and stale reads (a user reading a value older than their own last write). data_arch carries
   the write's WAL position in its cookie; django-multidb-router pins a user who wrote to the
   primary for ``MULTIDB_PINNING_SECONDS`` (15). Its unpinned ``ReplicaRouter`` runs the same
   workload to show the stale reads that pin exists to prevent. The workload runs twice: on the
   replica as it is (replay within a millisecond or so here), and with the replica applying
   each commit 50 ms late (``recovery_min_apply_delay``).
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import sys
import time
from contextlib import contextmanager

from _common import Report, arguments, django_setup
from _common import services as bench_services

USERS = 10
LAG_MS = 50


def replay_delay(ms: int | None) -> None:
    """Make the standby apply each commit ``ms`` after it (``recovery_min_apply_delay``)."""
    import psycopg

    with psycopg.connect(os.environ["REPLICA_URL"], autocommit=True) as connection:
        if ms is None:
            connection.execute("ALTER SYSTEM RESET recovery_min_apply_delay")
        else:
            connection.execute(f"ALTER SYSTEM SET recovery_min_apply_delay = '{int(ms)}ms'")
        connection.execute("SELECT pg_reload_conf()")
    time.sleep(0.5)


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "p50": round(statistics.median(ordered) * 1000, 2),
        "p99": round(p99 * 1000, 2),
        "max": round(ordered[-1] * 1000, 2),
    }


@contextmanager
def without_data_arch_wrappers(active: bool = True):
    """Connections as a project without data_arch has them: no data_arch execute wrappers."""
    from django.db import connections
    from django.db.backends.signals import connection_created

    from data_arch import wiring

    if not active:
        yield
        return
    connection_created.disconnect(dispatch_uid="data_arch.wiring.wrappers")
    for connection in connections.all():
        connection.execute_wrappers[:] = [
            w for w in connection.execute_wrappers if w not in wiring.WRAPPERS
        ]
    try:
        yield
    finally:
        connection_created.connect(
            wiring._on_connection_created, weak=False, dispatch_uid="data_arch.wiring.wrappers"
        )
        for connection in connections.all():
            if connection.connection is not None:
                wiring.install_wrappers(connection)


class Variant:
    """One way of routing: the routers it installs and how a request starts."""

    def __init__(self, name: str, routers: list, ours: bool = False, using: str | None = None):
        self.name, self.routers, self.ours, self.using = name, routers, ours, using

    @contextmanager
    def active(self):
        from django.db import router

        saved = router.routers
        router.routers = self.routers
        try:
            with without_data_arch_wrappers(not self.ours):
                yield
        finally:
            router.routers = saved

    @contextmanager
    def request(self):
        from multidb.pinning import unpin_this_thread

        from data_arch.routing import routing_context

        if self.ours:
            with routing_context():
                yield
        else:
            unpin_this_thread()
            yield


def routing_cost(Item, variants: list[Variant], quick: bool) -> dict:
    """Median microseconds per ``db_for_read`` and per ORM ``.get()``, interleaved rounds."""
    from django.db import connections, router

    rounds = 10 if quick else 60
    decisions, gets = (500, 20) if quick else (2000, 50)
    decide: dict[str, list[float]] = {v.name: [] for v in variants}
    fresh: dict[str, list[float]] = {v.name: [] for v in variants}
    get: dict[str, list[float]] = {v.name: [] for v in variants}
    for round_number in range(rounds + 1):  # the first round warms up and is dropped
        for variant in variants:
            with variant.active(), variant.request():
                manager = Item.objects.using(variant.using) if variant.using else Item.objects
                manager.get(pk=1)  # connects and, for data_arch, chooses the replica
                started = time.perf_counter()
                for _ in range(decisions):
                    router.db_for_read(Item)
                decided = (time.perf_counter() - started) / decisions
                started = time.perf_counter()
                for _ in range(decisions // 5):
                    with variant.request():  # a new request: its state, its first decision
                        router.db_for_read(Item)
                opened = (time.perf_counter() - started) / (decisions // 5)
                started = time.perf_counter()
                for _ in range(gets):
                    manager.get(pk=1)
                got = (time.perf_counter() - started) / gets
            if round_number:
                decide[variant.name].append(decided * 1e6)
                fresh[variant.name].append(opened * 1e6)
                get[variant.name].append(got * 1e6)
    connections.close_all()
    return {
        "rounds": rounds, "decisions_per_round": decisions, "gets_per_round": gets,
        "db_for_read_us": {k: round(statistics.median(v), 3) for k, v in decide.items()},
        "request_and_first_read_us": {k: round(statistics.median(v), 3)
                                      for k, v in fresh.items()},
        "orm_get_us": {k: round(statistics.median(v), 2) for k, v in get.items()},
    }


def healthy_reads(Item, variants: list[Variant], count: int) -> dict:
    """Reads that each connect (a request with CONN_MAX_AGE = 0), alternating variants."""
    from django.db import connections

    elapsed: dict[str, list[float]] = {v.name: [] for v in variants}
    errors = dict.fromkeys(elapsed, 0)
    for _ in range(count):
        for variant in variants:
            with variant.active():
                started = time.perf_counter()
                try:
                    with variant.request():
                        Item.objects.get(pk=1)
                except Exception:  # noqa: BLE001 -- a failed read is what is counted
                    errors[variant.name] += 1
                elapsed[variant.name].append(time.perf_counter() - started)
                connections.close_all()
    return {name: {**_ms(values), "errors": errors[name], "reads": count}
            for name, values in elapsed.items()}


def frozen_reads(Item, variant: Variant, count: int) -> dict:
    from django.db import connections

    elapsed, errors = [], 0
    with variant.active():
        for _ in range(count):
            started = time.perf_counter()
            try:
                with variant.request():
                    Item.objects.get(pk=1)
            except Exception:  # noqa: BLE001 -- a failed read is what is counted
                errors += 1
            elapsed.append(time.perf_counter() - started)
            connections.close_all()
    return {**_ms(elapsed), "errors": errors, "reads": count, "total_s": round(sum(elapsed), 2)}


def write_then_read(Item, variant: Variant, middleware, requests: int, seed: int) -> dict:
    """USERS users, back-to-back requests through ``middleware``; one in five writes."""
    from django.db import connections, models
    from django.http import HttpResponse
    from django.test import RequestFactory

    factory = RequestFactory()
    jars: list[dict[str, tuple[str, float]]] = [{} for _ in range(USERS)]
    written = [0] * USERS
    seen: dict = {}

    def view(request):
        user = int(request.GET["user"])
        if request.method == "POST":
            Item.objects.filter(pk=user + 1).update(value=models.F("value") + 1)
        item = Item.objects.get(pk=user + 1)
        seen["db"], seen["value"] = item._state.db, item.value
        return HttpResponse("ok")

    handler = middleware(view) if middleware else view
    chooser = random.Random(seed)
    reads = on_replica = stale = 0
    after_write_on_replica = writes = 0
    latency: dict[str, list[float]] = {"GET": [], "POST": []}
    with variant.active():
        for _ in range(requests):
            user = chooser.randrange(USERS)
            method = "POST" if chooser.random() < 0.2 else "GET"
            now = time.time()
            jar = {k: v for k, v in jars[user].items() if v[1] > now}
            if method == "POST":
                request = factory.post(f"/?user={user}")
            else:
                request = factory.get("/", {"user": user})
            request.COOKIES = {name: value for name, (value, _) in jar.items()}
            started = time.perf_counter()
            if middleware is not None:
                response = handler(request)
            else:
                with variant.request():
                    response = handler(request)
            latency[method].append(time.perf_counter() - started)
            connections.close_all()  # the end of a request (CONN_MAX_AGE = 0)
            for name, morsel in response.cookies.items():
                max_age = float(morsel["max-age"] or 0)
                jar[name] = (morsel.value, time.time() + max_age)
            jars[user] = jar
            if method == "POST":
                writes += 1
                written[user] += 1
                after_write_on_replica += seen["db"] == "replica"
            else:
                reads += 1
                on_replica += seen["db"] == "replica"
            stale += seen["value"] < written[user]
    with connections["default"].cursor() as cursor:  # every user's row back to 0 for the next
        cursor.execute("UPDATE bench_router_item SET value = 0")
    time.sleep(0.2)
    return {
        "requests": requests, "users": USERS, "writes": writes, "reads_without_own_write": reads,
        "of_those_on_replica": on_replica,
        "replica_share_pct": round(100 * on_replica / max(reads, 1), 1),
        "reads_after_own_write_on_replica": after_write_on_replica,
        "stale_reads": stale,
        "get_ms": _ms(latency["GET"]), "post_ms": _ms(latency["POST"]) if latency["POST"] else None,
    }


def main() -> int:
    options = arguments(__doc__)
    quick = options.quick

    with bench_services() as services:
        django_setup()
        from django.conf import settings
        from django.db import connections, models
        from django.test.utils import override_settings
        from multidb import PinningReplicaRouter, ReplicaRouter
        from multidb.middleware import PinningRouterMiddleware

        from data_arch.routers import ReplicaRouter as DataArchRouter
        from data_arch.routing import ReplicaRoutingMiddleware, reset_health

        settings.DATABASES["replica"].setdefault("OPTIONS", {})["connect_timeout"] = 2
        settings.REPLICA_DATABASES = ["replica"]
        settings.MULTIDB_PINNING_SECONDS = 15
        whole_run = override_settings(
            DATA_ARCH={**settings.DATA_ARCH,
                       "ROUTER": {"REPLICAS": ["replica"], "HEALTH_TTL": 5}},
        )
        whole_run.enable()

        class Item(models.Model):
            value = models.IntegerField()

            class Meta:
                app_label = "data_arch"
                db_table = "bench_router_item"

        with connections["default"].cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS bench_router_item")
            cursor.execute("CREATE TABLE bench_router_item (id serial PRIMARY KEY, value int)")
            cursor.execute("INSERT INTO bench_router_item (value) "
                           "SELECT 0 FROM generate_series(1, %s)", [USERS])
        time.sleep(0.5)

        ours = Variant("data_arch", [DataArchRouter()], ours=True)
        theirs = Variant("django-multidb-router", [PinningReplicaRouter()])
        no_router = Variant("no router", [], using="replica")
        report: dict = {}

        reset_health()
        report["routing_cost"] = cost = routing_cost(Item, [ours, theirs, no_router], quick)
        print("Routing cost per query, median us (interleaved rounds, connection open)")
        for name in (ours.name, theirs.name, no_router.name):
            print(f"  {name:24} db_for_read {cost['db_for_read_us'][name]:8.2f}   new request "
                  f"+ first {cost['request_and_first_read_us'][name]:8.2f}   "
                  f"ORM .get() {cost['orm_get_us'][name]:8.1f}")

        reads = 40 if quick else 300
        reset_health()
        healthy = healthy_reads(Item, [ours, theirs], reads)
        pid = int((services.replica.datadir / "postmaster.pid").read_text().split()[0]) \
            if services.replica is not None else None
        frozen: dict = {}
        if pid is not None:
            for variant, count in ((ours, reads), (theirs, 3 if quick else 10)):
                reset_health()
                os.kill(pid, signal.SIGSTOP)
                try:
                    frozen[variant.name] = frozen_reads(Item, variant, count)
                finally:
                    os.kill(pid, signal.SIGCONT)
                reset_health()
        report["healthy"], report["frozen"] = healthy, frozen

        requests = 100 if quick else 600
        routers = (
            (ours, ReplicaRoutingMiddleware),
            (theirs, PinningRouterMiddleware),
            (Variant("django-multidb-router, no pin", [ReplicaRouter()]), None),
        )
        workload: dict = {}
        for variant, middleware in routers:
            reset_health()
            workload[variant.name] = write_then_read(Item, variant, middleware, requests, seed=24)
        report["write_then_read"] = workload
        lagged: dict = {}
        if services.replica is not None:
            replay_delay(LAG_MS)
            try:
                for variant, middleware in routers:
                    reset_health()
                    lagged[variant.name] = write_then_read(Item, variant, middleware, requests,
                                                           seed=24)
            finally:
                replay_delay(None)
            report[f"write_then_read_replica_{LAG_MS}ms_behind"] = lagged

        with connections["default"].cursor() as cursor:
            cursor.execute("DROP TABLE bench_router_item")
        print(f"Read latency, ms ({reads} reads each, alternating; frozen: replica postmaster "
              "SIGSTOPped)")
        for name in (ours.name, theirs.name):
            h = healthy[name]
            line = f"  {name:24} healthy {h['p50']}/{h['p99']}/{h['max']}"
            if name in frozen:
                f = frozen[name]
                line += f"   frozen {f['p50']}/{f['p99']}/{f['max']}  failed {f['errors']}/{f['reads']}"
            print(line)
        print(f"Write-then-read ({requests} requests of {USERS} users, one in five a write)")
        for name, w in workload.items():
            print(f"  {name:32} reads without an own write on the replica "
                  f"{w['of_those_on_replica']}/{w['reads_without_own_write']} "
                  f"({w['replica_share_pct']} %), stale {w['stale_reads']}")

        result = Report("router_faults", "Read-replica router: routing cost, a frozen replica, "
                        "read-your-writes", quick)
        result.details = report
        for what, key, unit in (("db_for_read", "db_for_read_us", "us"),
                                ("a request's routing state + its first db_for_read",
                                 "request_and_first_read_us", "us"),
                                ("ORM .get() by pk, open connection", "orm_get_us", "us")):
            figures = cost[key]
            result.add(f"routing cost: {what}", unit, figures[ours.name],
                       "django-multidb-router", figures[theirs.name],
                       note="data_arch's statements carry its execute wrappers (the tenant "
                            "setting is sent with each)" if key == "orm_get_us" else "")
            result.add(f"routing cost: {what}", unit, figures[ours.name],
                       "no router", figures[no_router.name])
        row = result.add(
            "read p50, healthy replica (each read connects; alternating)", "ms",
            healthy[ours.name]["p50"], "django-multidb-router", healthy[theirs.name]["p50"],
            target=("<=", 1.2), target_text="≤ 1.2 ×",
        )
        if not row.met:
            row.note = (f"data_arch's read also checks the replica's connection and health, and its "
                        f"statements carry the tenant setting; db_for_read "
                        f"{cost['db_for_read_us'][ours.name]:.0f} us vs "
                        f"{cost['db_for_read_us'][theirs.name]:.1f} us")
        if frozen:
            result.add(
                "read p50, replica host frozen", "ms", frozen[ours.name]["p50"],
                "django-multidb-router", frozen[theirs.name]["p50"],
                target=("<=", 0.1), target_text="≥ 10 × faster",
                note=f"failed reads {frozen[ours.name]['errors']}/{frozen[ours.name]['reads']} vs "
                     f"{frozen[theirs.name]['errors']}/{frozen[theirs.name]['reads']}",
            )
        else:
            result.skip("read latency with the replica host frozen",
                        "the replica was not started here (REPLICA_URL given), so it cannot be frozen")
        mine, pinning = workload[ours.name], workload[theirs.name]
        unpinned = workload["django-multidb-router, no pin"]
        result.add(
            "write-then-read: reads in requests that wrote nothing, served by the replica", "%",
            mine["replica_share_pct"], "django-multidb-router (15 s pin)",
            pinning["replica_share_pct"], target_text="≥ 90 %",
            met=mine["replica_share_pct"] >= 90,
        )
        for name, other in (("django-multidb-router (15 s pin)", pinning),
                            ("django-multidb-router ReplicaRouter (no pin)", unpinned)):
            result.add(
                "write-then-read: stale reads (older than the user's own last write)", "reads",
                mine["stale_reads"], name, other["stale_reads"], target_text="0",
                met=mine["stale_reads"] == 0,
            )
        if lagged:
            print(f"The same with the replica applying each commit {LAG_MS} ms late")
            for name, w in lagged.items():
                print(f"  {name:32} reads without an own write on the replica "
                      f"{w['of_those_on_replica']}/{w['reads_without_own_write']} "
                      f"({w['replica_share_pct']} %), stale {w['stale_reads']}")
            mine, pinning = lagged[ours.name], lagged[theirs.name]
            unpinned = lagged["django-multidb-router, no pin"]
            result.add(
                f"write-then-read, replica {LAG_MS} ms behind: reads in requests that wrote nothing, "
                "served by the replica", "%", mine["replica_share_pct"],
                "django-multidb-router (15 s pin)", pinning["replica_share_pct"],
                note="a user's read before the replica has their last write goes to the primary",
            )
            for name, other in (("django-multidb-router (15 s pin)", pinning),
                                ("django-multidb-router ReplicaRouter (no pin)", unpinned)):
                result.add(
                    f"write-then-read, replica {LAG_MS} ms behind: stale reads", "reads",
                    mine["stale_reads"], name, other["stale_reads"], target_text="0",
                    met=mine["stale_reads"] == 0,
                )
        else:
            result.skip(f"write-then-read with the replica {LAG_MS} ms behind",
                        "the replica was not started here (REPLICA_URL given)")
        result.write(options.result)
        whole_run.disable()
    return 0


if __name__ == "__main__":
    sys.exit(main())
