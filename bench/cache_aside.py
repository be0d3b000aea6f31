"""Cache-aside side by side: django-redis' own API versus data_arch.caching, same Redis, same run.

    python bench/cache_aside.py            # starts a throwaway Redis + PostgreSQL, prints a table

1. Stampede: 4 processes x 8 threads ask for one cold key whose loader takes 200 ms;
   how many times does the loader run?  (django-redis ``cache.get_or_set`` vs ``get_or_load``)
2. Hit cost: microseconds per read of a small dict (``cache.get`` vs ``get_or_load`` from Redis
   vs ``get_or_load`` from the L1).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROCESSES, THREADS, LOAD_SECONDS = 4, 8, 0.2
VALUE = {"orders": 1234, "revenue_cents": 987654, "by_status": [["open", 3], ["paid", 9]]}


def _loader():
    from django_redis import get_redis_connection

    get_redis_connection("default").incr("bench:loads")
    time.sleep(LOAD_SECONDS)
    return VALUE


def _stampede_child(kind, barrier, done):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from django.core.cache import cache

    from data_arch.caching import get_or_load, reset_engines

    reset_engines()

    def request():
        barrier.wait()
        if kind == "django-redis get_or_set":
            cache.get_or_set("bench:cold", _loader, 60)
        else:
            get_or_load("bench:cold", _loader, 60)

    threads = [threading.Thread(target=request) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.put(1)


def stampede(kind):
    from django.core.cache import cache
    from django_redis import get_redis_connection

    cache.clear()
    get_redis_connection("default").delete("bench:loads")
    ctx = multiprocessing.get_context("fork")
    barrier, done = ctx.Barrier(PROCESSES * THREADS), ctx.Queue()
    children = [
        ctx.Process(target=_stampede_child, args=(kind, barrier, done)) for _ in range(PROCESSES)
    ]
    for child in children:
        child.start()
    for _ in children:
        done.get(timeout=120)
    for child in children:
        child.join(30)
    return int(get_redis_connection("default").get("bench:loads") or 0)


def per_read_us(read, n=3000):
    read()
    started = time.perf_counter()
    for _ in range(n):
        read()
    return (time.perf_counter() - started) / n * 1e6


def main():
    from harness.services import start_services

    with start_services(replica=False) as services:
        os.environ.update(services.environ())
        os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
        import django

        django.setup()
        from django.conf import settings
        from django.core.cache import cache
        from django.test import override_settings

        from data_arch.caching import engine, get_or_load, reset_engines

        print(
            f"Stampede: {PROCESSES} processes x {THREADS} threads, one cold key, loader "
            f"{LOAD_SECONDS * 1000:.0f} ms"
        )
        baseline = stampede("django-redis get_or_set")
        ours = stampede("data_arch get_or_load")
        print(f"  django-redis cache.get_or_set   loader ran {baseline:3d} times")
        print(f"  data_arch get_or_load           loader ran {ours:3d} times")
        print(f"  ratio                           {baseline / max(ours, 1):.0f}x fewer loads")

        cache.set("bench:hot", VALUE, 60)
        plain = per_read_us(lambda: cache.get("bench:hot"))
        redis_hit = per_read_us(lambda: get_or_load("bench:hot2", lambda: VALUE, 60))
        with override_settings(
            DATA_ARCH={**settings.DATA_ARCH, "CACHE": {**settings.DATA_ARCH["CACHE"], "L1": True}}
        ):
            reset_engines()
            engine().wait_for_l1()
            l1_hit = per_read_us(lambda: get_or_load("bench:hot3", lambda: VALUE, 60))
            reset_engines()
        print("Hit cost (small dict, loopback Redis, one process)")
        print(f"  django-redis cache.get          {plain:7.1f} us")
        print(
            f"  data_arch get_or_load (Redis)   {redis_hit:7.1f} us   "
            f"({redis_hit / plain:.2f}x the time of cache.get)"
        )
        print(
            f"  data_arch get_or_load (L1)      {l1_hit:7.1f} us   "
            f"({l1_hit / plain:.2f}x the time of cache.get)"
        )


if __name__ == "__main__":
    main()
