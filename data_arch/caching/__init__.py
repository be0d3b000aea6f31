"""Cache-aside helpers on a django-redis cache: tenant-namespaced, O(1) invalidation,
stampede-proof, an optional coherent L1, fail-open, and named warmers.

    from data_arch.caching import cached, get_or_load, invalidate_tag

    @cached(timeout=60, models=[Order])
    def revenue(customer_id): ...

Everything here is safe to import without Celery; the warming task lives in
``data_arch.caching.tasks``.
"""

from data_arch.caching import metrics
from data_arch.caching.api import (
    cached,
    get_or_load,
    invalidate_model,
    invalidate_tag,
    invalidate_tenant,
    namespace,
)
from data_arch.caching.engine import CacheAliasError, CacheAside, engine, reset_engines
from data_arch.caching.keys import CacheKeyError, Namespace
from data_arch.caching.serializers import CacheSerializationError
from data_arch.caching.warmers import (
    WarmerError,
    WarmerResult,
    register_warmer,
    registered_warmers,
    run_warmers,
    warm_tenants,
)

__all__ = [
    "CacheAliasError",
    "CacheAside",
    "CacheKeyError",
    "CacheSerializationError",
    "Namespace",
    "WarmerError",
    "WarmerResult",
    "cached",
    "engine",
    "get_or_load",
    "invalidate_model",
    "invalidate_tag",
    "invalidate_tenant",
    "metrics",
    "namespace",
    "register_warmer",
    "registered_warmers",
    "reset_engines",
    "run_warmers",
    "warm_tenants",
]
