"""System checks for the cache helpers (ids data_arch.E400-E449 / W400-W449)."""

from __future__ import annotations

from typing import Any

from django.core import checks

from data_arch import conf


@checks.register(checks.Tags.caches)
def check_cache(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E400 alias not django-redis; W401 pickle serializer; W402 no socket timeouts;
    W403 L1 on a cache without pub/sub-capable client."""
    from django.conf import settings

    try:
        cache = conf.cache_settings()
    except conf.SettingError:
        return []  # reported as data_arch.E001
    messages: list[checks.CheckMessage] = []
    config = settings.CACHES.get(cache.alias, {})
    backend = config.get("BACKEND", "")
    if not backend.startswith("django_redis."):
        messages.append(
            checks.Error(
                f"DATA_ARCH['CACHE']['ALIAS'] is {cache.alias!r}, whose BACKEND is {backend!r}; "
                "the cache helpers need a django-redis cache.",
                hint="Set CACHES[alias]['BACKEND'] = 'django_redis.cache.RedisCache' or point "
                "DATA_ARCH['CACHE']['ALIAS'] at a django-redis alias.",
                id="data_arch.E400",
            )
        )
        return messages
    if cache.serializer == "pickle":
        messages.append(
            checks.Warning(
                "DATA_ARCH['CACHE']['SERIALIZER'] is 'pickle': whoever can write to Redis can run "
                "code in every process that reads the cache.",
                hint="Use the default 'json' serializer unless Redis is reachable only by trusted "
                "clients and you cache values JSON cannot hold.",
                id="data_arch.W401",
            )
        )
    options = config.get("OPTIONS", {}) or {}
    missing = [
        name for name in ("SOCKET_TIMEOUT", "SOCKET_CONNECT_TIMEOUT") if not options.get(name)
    ]
    if missing and cache.fail_open:
        messages.append(
            checks.Warning(
                f"CACHES[{cache.alias!r}]['OPTIONS'] has no {' or '.join(missing)}: a Redis that "
                "hangs instead of refusing connections stalls every request, so failing open "
                "cannot help.",
                hint="Set e.g. 'SOCKET_CONNECT_TIMEOUT': 0.5 and 'SOCKET_TIMEOUT': 0.5 (seconds).",
                id="data_arch.W402",
            )
        )
    if (
        config.get("OPTIONS", {})
        .get("CLIENT_CLASS", "")
        .endswith(("ShardClient", "SentinelClient"))
    ):
        messages.append(
            checks.Warning(
                f"CACHES[{cache.alias!r}] uses {options['CLIENT_CLASS']}; the cache helpers talk "
                "to one Redis (or a Redis Cluster client given to CacheAside) and ignore "
                "sharding.",
                hint="Use django_redis.client.DefaultClient for the helpers' alias.",
                id="data_arch.W403",
            )
        )
    return messages
