"""Mirror the cache counters into Prometheus (``prometheus_client`` is imported only here).

from data_arch.caching.prometheus import install
install()  # e.g. in AppConfig.ready(); the metrics then appear on django-prometheus' /metrics
"""

from __future__ import annotations

from typing import Any

from data_arch.caching import metrics
from data_arch.extras import require

_installed: dict[int, Any] = {}


def install(registry: Any = None) -> Any:
    """Register the cache metrics in ``registry`` (default: the global one); idempotent."""
    client = require("prometheus_client", "data_arch.caching.prometheus")
    REGISTRY, Counter, Histogram = client.REGISTRY, client.Counter, client.Histogram  # noqa: N806

    registry = registry if registry is not None else REGISTRY
    if id(registry) in _installed:
        return _installed[id(registry)]
    events = Counter(
        "data_arch_cache_events_total",
        "Cache helper events (hit, l1_hit, miss, stale, early_refresh, load, lock_wait, "
        "store_skipped, bypass, error, invalidation) by cache alias and cached function.",
        ["alias", "name", "event"],
        registry=registry,
    )
    load_seconds = Histogram(
        "data_arch_cache_load_seconds",
        "Loader run time by cache alias and cached function.",
        ["alias", "name"],
        registry=registry,
    )
    lag_seconds = Histogram(
        "data_arch_cache_invalidation_lag_seconds",
        "Time from an invalidation's publish to its arrival in a process's L1.",
        ["alias"],
        registry=registry,
        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    )

    def listener(event: str, alias: str, name: str, value: float) -> None:
        if event == "invalidation_lag":
            lag_seconds.labels(alias).observe(value)
            return
        events.labels(alias, name, event).inc()
        if event == "load":
            load_seconds.labels(alias, name).observe(value)

    metrics.add_listener(listener)
    _installed[id(registry)] = listener
    return listener
