"""Named cache warmers: functions a project registers to fill its caches ahead of traffic.

A warmer is a function of no arguments that calls cached functions (or ``get_or_load``); it
runs inside a tenant's context, so what it fills lands in that tenant's namespace. Warmers are
registered with ``@register_warmer("name")`` in an app's ``warmers.py`` (imported on demand, like
``admin.py``) or anywhere else that is imported.
"""

from __future__ import annotations

import dataclasses
import logging
import reprlib
import time
from collections.abc import Callable, Iterable
from typing import Any

from django.utils.module_loading import autodiscover_modules

from data_arch.tenancy import current_tenant

__all__ = [
    "WarmerError",
    "WarmerResult",
    "register_warmer",
    "registered_warmers",
    "run_warmers",
    "warm_tenants",
]

logger = logging.getLogger("data_arch.caching")

_registry: dict[str, Callable[[], Any]] = {}
_discovered = False


class WarmerError(LookupError):
    """An unknown or duplicate warmer name."""


@dataclasses.dataclass(frozen=True)
class WarmerResult:
    warmer: str
    tenant: str | None
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def register_warmer(name: str, func: Callable[[], Any] | None = None) -> Any:
    """Register ``func`` as the warmer ``name``; usable as ``@register_warmer("name")``."""
    if not isinstance(name, str) or not name.strip():
        raise WarmerError(f"a warmer needs a non-empty name, got {name!r}")

    def add(function: Callable[[], Any]) -> Callable[[], Any]:
        if not callable(function):
            raise TypeError(f"warmer {name!r} must be callable, got {function!r}")
        existing = _registry.get(name)
        if (
            existing is not None
            and existing is not function
            and (
                getattr(existing, "__qualname__", None) != getattr(function, "__qualname__", None)
                or getattr(existing, "__module__", None) != getattr(function, "__module__", None)
            )
        ):
            raise WarmerError(
                f"a warmer named {name!r} is already registered ({existing.__module__}."
                f"{existing.__qualname__}); pick another name"
            )
        _registry[name] = function
        return function

    return add(func) if func is not None else add


def unregister_warmer(name: str) -> None:
    _registry.pop(name, None)


def registered_warmers() -> dict[str, Callable[[], Any]]:
    """Every registered warmer by name (each installed app's ``warmers`` module imported first)."""
    global _discovered
    if not _discovered:
        autodiscover_modules("warmers")
        _discovered = True
    return dict(sorted(_registry.items()))


def select(names: Iterable[str] | None = None) -> dict[str, Callable[[], Any]]:
    """The warmers named ``names`` (all when None); WarmerError naming any unknown one."""
    available = registered_warmers()
    if names is None:
        return available
    names = list(names)
    unknown = [name for name in names if name not in available]
    if unknown:
        raise WarmerError(
            f"unknown warmer(s) {', '.join(map(reprlib.repr, unknown))}; registered: "
            f"{', '.join(map(repr, available)) or 'none'}"
        )
    return {name: available[name] for name in names}


def run_warmers(
    names: Iterable[str] | None = None,
    on_error: Callable[[str, Exception], Any] | None = None,
) -> list[WarmerResult]:
    """Run the selected warmers in the current tenant's context; a failure doesn't stop the rest.
    ``on_error(name, exception)`` is called for each failure (a caller that tells a Redis or a
    database away from a broken warmer needs the exception, not only its text)."""
    selected = select(names)
    tenant = current_tenant()
    key = tenant.key if tenant is not None else None
    results = []
    for name, function in selected.items():
        started = time.perf_counter()
        error = None
        try:
            function()
        except Exception as exc:
            logger.exception("cache warmer %r failed for tenant %s", name, key or "(shared)")
            error = f"{type(exc).__name__}: {exc}"
            if on_error is not None:
                on_error(name, exc)
        results.append(WarmerResult(name, key, time.perf_counter() - started, error))
    return results


def warm_tenants(
    tenant: str | None = None,
    all_tenants: bool = False,
    warmers: list[str] | None = None,
    lease_seconds: float = 900,
) -> list[WarmerResult] | None:
    """Run warmers for one tenant schema, every tenant, or (neither) the shared namespace.

    Guarded by a lease per selection, so a slow run and the next scheduled one never overlap;
    returns None when another run holds it.
    """
    from data_arch.caching.engine import engine
    from data_arch.tenancy import iter_tenants, resolve_tenant, tenant_context

    select(warmers)  # unknown names fail before any work
    if tenant and all_tenants:
        raise ValueError("pass tenant= or all_tenants=True, not both")
    scope = "all" if all_tenants else (tenant or "shared")
    with engine().lease(f"warm:{scope}:{','.join(warmers or ['*'])}", lease_seconds) as acquired:
        if not acquired:
            logger.info("cache warming for %s is already running; skipped", scope)
            return None
        if not (tenant or all_tenants):
            return run_warmers(warmers)
        tenants = list(iter_tenants()) if all_tenants else [resolve_tenant(tenant)]
        results: list[WarmerResult] = []
        for item in tenants:
            with tenant_context(item):
                results.extend(run_warmers(warmers))
        return results
