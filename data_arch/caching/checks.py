"""System checks for the cache helpers (ids data_arch.E400-E449 / W400-W449)."""

from __future__ import annotations

from typing import Any

from django.core import checks

from data_arch import conf


@checks.register(checks.Tags.caches)
def check_cache(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E400 alias not django-redis; E401 CACHE.MODELS names an unknown model; W401 pickle
    serializer; W402 no socket timeouts; W403 a sharded/sentinel client; W404 a model first
    cached after start-up (writes in other processes would not invalidate it)."""
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
    messages.extend(_model_messages(cache.models))
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


def _model_messages(models: tuple[str, ...]) -> list[checks.CheckMessage]:
    from django.apps import apps

    from data_arch.caching.invalidation import late_registrations

    messages: list[checks.CheckMessage] = []
    for label in models:
        try:
            apps.get_model(label)
        except LookupError:
            messages.append(
                checks.Error(
                    f"DATA_ARCH['CACHE']['MODELS'] names {label!r}, which is not an installed "
                    "model.",
                    hint="Use 'app_label.ModelName' of a model in INSTALLED_APPS.",
                    id="data_arch.E401",
                )
            )
    for label, where in sorted(late_registrations().items()):
        messages.append(
            checks.Warning(
                f"{where} caches with models=[{label!r}], but {label} was not known when the app "
                "started: a process that writes it without importing that code (a Celery "
                "worker, a management command) will not invalidate the cached values.",
                hint="Add it to DATA_ARCH['CACHE']['MODELS'], or define the cached function in "
                "an app's cache.py or warmers.py (imported at start-up in every process).",
                id="data_arch.W404",
            )
        )
    return messages
