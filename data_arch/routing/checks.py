"""System checks for the read-replica router (data_arch.E300-E349 / W300-W349)."""

from __future__ import annotations

from typing import Any

from django.core import checks

from data_arch import conf

ROUTER_PATH = "data_arch.routers.ReplicaRouter"
ROUTER_PATHS = (ROUTER_PATH, "data_arch.routing.ReplicaRouter", "data_arch.routing.router.ReplicaRouter")
MIDDLEWARE_PATHS = (
    "data_arch.routing.ReplicaRoutingMiddleware",
    "data_arch.routing.middleware.ReplicaRoutingMiddleware",
)


def _router_config() -> conf.RouterSettings | None:
    try:
        return conf.router_settings()
    except conf.SettingError:
        return None  # reported as data_arch.E001


@checks.register(checks.Tags.database)
def check_replicas_are_standbys(app_configs: Any = None, databases: Any = None, **kwargs: Any):
    """E303: a replica alias reaches a server that is not a standby (run with --database)."""
    config = _router_config()
    if config is None or not databases:
        return []
    from data_arch.routing import health
    from data_arch.routing.sets import router_sets

    errors = []
    for rset in router_sets():
        for alias in rset.replicas:
            if alias not in databases:
                continue
            result = health.probe(alias, rset.primary)
            if "not a standby" in result.reason:
                errors.append(checks.Error(
                    f"DATABASES[{alias!r}] is listed as a replica but its server is not in "
                    "recovery (pg_is_in_recovery() is false)",
                    hint="Point the alias at a streaming standby, or remove it from REPLICAS; "
                    "the router skips it meanwhile.",
                    id="data_arch.E303",
                ))
    return errors


@checks.register(checks.Tags.compatibility)
def check_router(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from django.conf import settings

    config = _router_config()
    if config is None:
        return []
    messages: list[checks.CheckMessage] = []
    routers = [r if isinstance(r, str) else f"{type(r).__module__}.{type(r).__name__}"
               for r in getattr(settings, "DATABASE_ROUTERS", [])]
    replicas = [*config.replicas, *(r for s in config.sets for r in s["replicas"])]
    installed = any(path in routers for path in ROUTER_PATHS)
    if replicas and not installed:
        messages.append(checks.Error(
            f"DATA_ARCH['ROUTER'] lists replicas ({', '.join(replicas)}) but {ROUTER_PATH!r} "
            "is not in DATABASE_ROUTERS, so no read ever reaches them",
            hint=f"Add {ROUTER_PATH!r} to DATABASE_ROUTERS (after django-tenants' router).",
            id="data_arch.E300",
        ))
    if installed and "django_tenants.routers.TenantSyncRouter" in routers:
        ours = next(i for i, r in enumerate(routers) if r.endswith("ReplicaRouter"))
        if ours < routers.index("django_tenants.routers.TenantSyncRouter"):
            messages.append(checks.Warning(
                "ReplicaRouter is listed before django-tenants' TenantSyncRouter",
                hint="List TenantSyncRouter first so it decides which schema migrates an app.",
                id="data_arch.W301",
            ))
    for alias in replicas:
        test = settings.DATABASES.get(alias, {}).get("TEST", {}) or {}
        if not test.get("MIRROR"):
            messages.append(checks.Warning(
                f"replica alias {alias!r} has no TEST['MIRROR']: the test runner would create "
                "a separate test database on it, which a read-only standby refuses",
                hint=f"Set DATABASES[{alias!r}]['TEST'] = {{'MIRROR': {config.primary!r}}}.",
                id="data_arch.W302",
            ))
    if 0 < config.sticky_seconds < config.max_lag_seconds:
        messages.append(checks.Warning(
            f"STICKY_SECONDS ({config.sticky_seconds:g}) is shorter than MAX_LAG_SECONDS "
            f"({config.max_lag_seconds:g}): after the token expires, a user may read from a "
            "replica that has not yet replayed their write",
            hint="Make STICKY_SECONDS >= MAX_LAG_SECONDS.",
            id="data_arch.W304",
        ))
    middleware = getattr(settings, "MIDDLEWARE", []) or []
    if installed and replicas and not any(path in middleware for path in MIDDLEWARE_PATHS):
        messages.append(checks.Warning(
            "ReplicaRoutingMiddleware is not in MIDDLEWARE: a user's next request may read "
            "from a replica that has not replayed their previous request's write",
            hint="Add 'data_arch.routing.ReplicaRoutingMiddleware' to MIDDLEWARE.",
            id="data_arch.W305",
        ))
    if replicas and config.health_ttl <= config.probe_timeout:
        messages.append(checks.Warning(
            f"HEALTH_TTL ({config.health_ttl:g}s) is not longer than PROBE_TIMEOUT "
            f"({config.probe_timeout}s): a healthy replica is re-probed about as often as a "
            "probe may take, so a hanging replica is probed nearly all the time",
            hint="Make HEALTH_TTL several times PROBE_TIMEOUT (e.g. 10s with the default 2s).",
            id="data_arch.W306",
        ))
    if installed:
        routed = {config.primary, *(s["primary"] for s in config.sets)}
        for alias in sorted(routed):
            if settings.DATABASES.get(alias, {}).get("ATOMIC_REQUESTS"):
                messages.append(checks.Warning(
                    f"DATABASES[{alias!r}]['ATOMIC_REQUESTS'] is True: every view runs inside "
                    f"atomic() on {alias!r}, and reads inside a transaction on the primary go to "
                    "the primary, so no view read ever reaches a replica",
                    hint="Turn ATOMIC_REQUESTS off and use transaction.atomic() where a view "
                    "writes, or accept that views read the primary (see the README).",
                    id="data_arch.W307",
                ))
    return messages
