"""Cache-aside side by side: django-redis' own API versus data_arch.caching, same Redis, same run.

    python bench/cache_aside.py            # starts a throwaway PostgreSQL + replica + Redis
    python bench/cache_aside.py --quick    # fewer rounds

1. Hit cost of a small dict: django-redis ``cache.get`` vs ``get_or_load`` from Redis (plain,
   and with ``models`` + ``tags``) vs the L1, and the same through ``@cached``. Rounds of each
   are interleaved and the medians compared, so a machine whose load drifts during the run
   (a shared CI box) moves every column alike. Targets: a Redis hit <= 1.15 x ``cache.get``;
   an L1 hit <= 6 us and >= 20 x faster than a Redis hit.
2. Stampede: 64 callers in 4 processes ask for one cold key whose loader takes 100 ms (django-
   redis ``cache.get_or_set`` vs ``get_or_load``): loader runs, and the callers' p99 latency
   against one load.
3. Slow loaders: 8 callers (2 processes x 4 threads) of a loader taking 1 x and 3 x
   ``LOCK_TIMEOUT``: loader runs, and how late the waiters got the value and how many Redis
   round trips they made while waiting.
4. Fills after a write (why loads run under the bump's WAL position rather than on the
   primary): a fill right after a committed write and one 50 ms later, under the position
   (the shipped behaviour) versus ``use_primary()``: latency and where the rows came from.

Misses of a target are printed as misses; the exit status is 0 either way.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import statistics
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUICK = "--quick" in sys.argv
VALUE = {"orders": 1234, "revenue_cents": 987654, "by_status": [["open", 3], ["paid", 9]]}
FORK = multiprocessing.get_context("fork")


def _child():
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    from data_arch.caching import reset_engines

    reset_engines()


def _redis():
    from django_redis import get_redis_connection

    return get_redis_connection("default")


def _verdict(ok: bool) -> str:
    return "target met" if ok else "TARGET MISSED"


# --------------------------------------------------------------------------- 1. hit cost


def interleaved(functions: dict, rounds: int, calls: dict) -> dict:
    """Median microseconds per call of each ``(engine, function)`` over interleaved rounds."""
    samples: dict = {name: [] for name in functions}
    for target, function in functions.values():
        with default_engine(target):
            function()
    for _ in range(rounds):
        for name, (target, function) in functions.items():
            n = calls[name]
            with default_engine(target):
                started = time.perf_counter()
                for _ in range(n):
                    function()
                samples[name].append((time.perf_counter() - started) / n * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


@contextmanager
def default_engine(target):
    engine_module = sys.modules["data_arch.caching.engine"]
    saved = engine_module._engines.get("")
    engine_module._engines[""] = target
    try:
        yield
    finally:
        if saved is None:
            engine_module._engines.pop("", None)
        else:
            engine_module._engines[""] = saved


def hit_cost() -> None:
    from django.conf import settings
    from django.core.cache import cache
    from django.test import override_settings

    from data_arch.caching import CacheAside, cached, engine, get_or_load, reset_engines

    reset_engines()
    cache.set("bench:hot", VALUE, 600)
    plain_engine = engine()
    with override_settings(
        DATA_ARCH={**settings.DATA_ARCH, "CACHE": {**settings.DATA_ARCH["CACHE"], "L1": True}}
    ):
        l1_engine = CacheAside(plain_engine.alias)
    l1_engine.wait_for_l1()
    load = lambda: VALUE  # noqa: E731

    @cached(600)
    def report(n):
        return VALUE

    functions = {
        "cache.get": (plain_engine, lambda: cache.get("bench:hot")),
        "redis": (plain_engine, lambda: get_or_load("bench:a", load, 600)),
        "redis+models+tags": (plain_engine, lambda: get_or_load(
            "bench:b", load, 600, models=["auth.User", "auth.Group"], tags=["reports"])),
        "redis @cached": (plain_engine, lambda: report(1)),
        "l1": (l1_engine, lambda: get_or_load("bench:c", load, 600)),
        "l1 @cached": (l1_engine, lambda: report(2)),
    }
    redis_calls, l1_calls = (50, 1000) if QUICK else (100, 2000)
    calls = {name: (l1_calls if name.startswith("l1") else redis_calls) for name in functions}
    us = interleaved(functions, 20 if QUICK else 100, calls)
    base = us["cache.get"]
    print("Hit cost, small dict, loopback Redis, one process (medians of interleaved rounds)")
    print(f"  django-redis cache.get            {base:7.1f} us")
    for name, label in (
        ("redis", "get_or_load from Redis"),
        ("redis+models+tags", "  ... with models= and tags="),
        ("redis @cached", "@cached from Redis"),
    ):
        ratio = us[name] / base
        print(f"  {label:32s}  {us[name]:7.1f} us   {ratio:.2f} x cache.get   "
              f"({_verdict(ratio <= 1.15)}: <= 1.15 x)")
    for name, label in (("l1", "get_or_load from the L1"), ("l1 @cached", "@cached from the L1")):
        faster = us["redis"] / us[name]
        print(f"  {label:32s}  {us[name]:7.2f} us   {faster:.0f} x faster than a Redis hit   "
              f"({_verdict(us[name] <= 6 and faster >= 20)}: <= 6 us, >= 20 x)")
    l1_engine.close()
    reset_engines()


# --------------------------------------------------------------------------- 2. stampede


def _stampede_child(kind, threads, seconds, barrier, results):
    _child()
    from django.core.cache import cache

    from data_arch.caching import get_or_load

    def loader():
        _redis().incr("bench:loads")
        time.sleep(seconds)
        return VALUE

    latencies, lock = [], threading.Lock()

    def request():
        barrier.wait()
        started = time.perf_counter()
        if kind == "django-redis":
            cache.get_or_set("bench:cold", loader, 60)
        else:
            get_or_load("bench:cold", loader, 60)
        with lock:
            latencies.append(time.perf_counter() - started)

    workers = [threading.Thread(target=request) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put(latencies)


def run_callers(kind, processes, threads, seconds, key="bench:cold"):
    from django.core.cache import cache

    cache.clear()
    _redis().delete("bench:loads")
    barrier, results = FORK.Barrier(processes * threads), FORK.Queue()
    children = [
        FORK.Process(target=_stampede_child, args=(kind, threads, seconds, barrier, results))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    latencies = [value for _ in children for value in results.get(timeout=300)]
    for child in children:
        child.join(30)
    return int(_redis().get("bench:loads") or 0), latencies


def p99(values):
    return sorted(values)[max(0, int(len(values) * 0.99) - 1)]


def stampede() -> None:
    processes, threads, seconds = 4, 16, 0.1
    print(f"Stampede: {processes} processes x {threads} threads, one cold key, loader "
          f"{seconds * 1000:.0f} ms")
    for kind, label in (("django-redis", "django-redis cache.get_or_set"),
                        ("data_arch", "data_arch get_or_load")):
        loads, latencies = run_callers(kind, processes, threads, seconds)
        print(f"  {label:30s} loader ran {loads:3d} times; caller p99 {p99(latencies) * 1000:6.1f}"
              f" ms = {p99(latencies) / seconds:.2f} x one load")


# --------------------------------------------------------------------------- 3. slow loaders


def _slow_child(seconds, barrier, results):
    _child()
    from data_arch.caching import get_or_load

    done = {}

    def loader():
        _redis().incr("bench:loads")
        time.sleep(seconds)
        done["at"] = time.time()
        _redis().set("bench:loaded_at", repr(done["at"]))
        return "slow"

    out, lock = [], threading.Lock()

    def request():
        barrier.wait()
        get_or_load("bench:slow", loader, 60)
        with lock:
            out.append(time.time())

    workers = [threading.Thread(target=request) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put(out)


def _round_trips():
    stats = _redis().info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "mget"))


def slow_loaders() -> None:
    from django.conf import settings
    from django.core.cache import cache
    from django.test import override_settings

    lock_timeout = 1.0
    print(f"Slow loaders: 8 callers (2 processes x 4 threads), LOCK_TIMEOUT {lock_timeout:.0f} s")
    with override_settings(DATA_ARCH={**settings.DATA_ARCH, "CACHE": {
            **settings.DATA_ARCH["CACHE"], "LOCK_TIMEOUT": lock_timeout}}):
        for multiple in (1, 3):
            cache.clear()
            _redis().delete("bench:loads")
            before = _round_trips()
            barrier, results = FORK.Barrier(8), FORK.Queue()
            children = [FORK.Process(target=_slow_child,
                                     args=(multiple * lock_timeout, barrier, results))
                        for _ in range(2)]
            for child in children:
                child.start()
            returned = [t for _ in children for t in results.get(timeout=120)]
            for child in children:
                child.join(30)
            trips = _round_trips() - before
            loaded_at = float(_redis().get("bench:loaded_at"))
            lag = sorted((t - loaded_at) * 1000 for t in returned)
            runs = int(_redis().get("bench:loads"))
            print(f"  loader {multiple} x LOCK_TIMEOUT: ran {runs} time(s); the 8 callers had the "
                  f"value {lag[0]:.1f}-{lag[-1]:.1f} ms after the loader returned; "
                  f"{trips} Redis round trips in all")


# --------------------------------------------------------------------------- 4. fills


def fills() -> None:
    from django.db import connections

    from data_arch.caching import get_or_load, invalidate_tag, reset_engines
    from data_arch.routing import (
        read_alias,
        reset_health,
        router_sets,
        routing_context,
        use_primary,
    )

    reset_engines()
    reset_health()
    with connections["default"].cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_rows (id serial PRIMARY KEY, v int)")
        cursor.execute("TRUNCATE bench_rows")
    time.sleep(0.5)  # let the replica replay the table
    rset = router_sets()[0]
    seen = {}

    def loader():
        alias = read_alias(rset)
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT count(*) FROM bench_rows")
            (count,) = cursor.fetchone()
        seen["alias"] = alias
        return count

    n = 40 if QUICK else 150
    print(f"Fills after a write ({n} writes each; a write is one INSERT + invalidate_tag)")
    for delay in (0.0, 0.05):
        for mode in ("position", "use_primary"):
            latencies, on_replica, stale = [], 0, 0
            for i in range(n):
                with routing_context():
                    with connections["default"].cursor() as cursor:
                        cursor.execute("INSERT INTO bench_rows (v) VALUES (%s)", [i])
                    invalidate_tag("rows")
                    with connections["default"].cursor() as cursor:
                        cursor.execute("SELECT count(*) FROM bench_rows")
                        (expected,) = cursor.fetchone()
                time.sleep(delay)
                with routing_context():
                    started = time.perf_counter()
                    if mode == "use_primary":
                        with use_primary():
                            value = get_or_load(("fill", mode), loader, 60, tags=["rows"])
                    else:
                        value = get_or_load(("fill", mode), loader, 60, tags=["rows"])
                    latencies.append(time.perf_counter() - started)
                on_replica += seen["alias"] != rset.primary
                stale += value < expected
            print(f"  {delay * 1000:3.0f} ms after the write, {mode:11s}: fill median "
                  f"{statistics.median(latencies) * 1000:5.2f} ms, p99 "
                  f"{p99(latencies) * 1000:5.2f} ms; {on_replica * 100 // n:3d}% from the "
                  f"replica; {stale} stale")
    with connections["default"].cursor() as cursor:
        cursor.execute("DROP TABLE bench_rows")


def main() -> None:
    from harness.services import start_services

    with start_services() as services:
        os.environ.update(services.environ())
        os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
        import django

        django.setup()
        hit_cost()
        if "--hits" in sys.argv:
            return
        stampede()
        slow_loaders()
        if services.has_streaming_replica:
            fills()
        else:
            print("Fills after a write: skipped (no streaming replica)")


if __name__ == "__main__":
    main()
