"""A warmer the maintenance tests drive through a real worker: it says when it starts and
ends (in Redis, with its pid), sleeps as long as Redis tells it, and fails for one tenant."""

import os
import sys
import time

from data_arch.caching import register_warmer
from data_arch.tenancy import current_tenant

KEY = "tests:maintenance"


def probe_warmer() -> None:
    from django_redis import get_redis_connection

    redis = get_redis_connection("default")
    if redis.get(f"{KEY}:enabled") is None:
        return  # only when a test asks for it: other tests' warming stays instant
    tenant = current_tenant()
    key = str(tenant.schema_name or tenant.pk) if tenant else ""
    redis.rpush(f"{KEY}:started", f"{os.getpid()}:{key}")
    redis.set(f"{KEY}:pid", os.getpid())
    time.sleep(float(redis.get(f"{KEY}:sleep") or 0))
    if key and key == (redis.get(f"{KEY}:broken") or b"").decode():
        raise RuntimeError(f"warmer broken for {key}")
    redis.rpush(f"{KEY}:finished", key)


# Registered in Celery worker processes only: the test process's own warmer tests count the
# example project's warmers.
if "worker" in sys.argv:
    register_warmer("probe_warmer", probe_warmer)
