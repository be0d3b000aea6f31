"""The public cache-aside API: ``get_or_load``, ``@cached`` and the invalidation functions."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections

from data_arch.caching import invalidation
from data_arch.caching.engine import Spec, cache_settings, check_alias, engine
from data_arch.caching.keys import CacheKeyError, Namespace, argument_digest, safe_part
from data_arch.tenancy.context import Tenant, as_tenant, current_tenant

__all__ = [
    "cached",
    "get_or_load",
    "invalidate_model",
    "invalidate_tag",
    "invalidate_tenant",
    "namespace",
]

F = TypeVar("F", bound=Callable[..., Any])
SHARED: Any = None  # pass tenant=SHARED to address the shared (no tenant) namespace explicitly


def _tenant_key(tenant: Any = ...) -> str | None:
    """The namespace's tenant key: the given tenant, else the current one, else None (shared).

    With django-tenants, a request whose schema was set by its middleware but not through
    :func:`data_arch.tenant_context` still gets that schema's namespace, so reads and the
    model-driven invalidations of writes in that schema agree.
    """
    if tenant is not ...:
        return None if tenant is None else as_tenant(tenant).key
    active = current_tenant()
    if active is not None:
        return active.key
    schema = getattr(connections[DEFAULT_DB_ALIAS], "schema_name", None)
    if schema and schema != _public_schema():
        return Tenant(pk=None, schema_name=schema).key
    return None


def _public_schema() -> str:
    from django.conf import settings

    return getattr(settings, "PUBLIC_SCHEMA_NAME", "public")


def namespace(tenant: Any = ...) -> Namespace:
    """The cache namespace of ``tenant`` (default: current tenant; ``None``: shared)."""
    return Namespace(cache_settings().prefix, _tenant_key(tenant))


def _check_timeout(what: str, value: Any, *, allow_none: bool = True) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, got {value!r}")
    if value <= 0:
        raise ValueError(
            f"{what} must be > 0 seconds, got {value!r} (to stop caching, don't cache; to drop "
            "cached values, invalidate them)"
        )
    return float(value)


def _model_labels(models: Iterable[Any]) -> tuple[str, ...]:
    labels = []
    for model in models:
        if isinstance(model, str):
            if model.count(".") != 1 or not all(model.split(".")):
                raise ValueError(
                    f"models= takes model classes or 'app_label.ModelName', got {model!r}"
                )
            labels.append(model.lower())
        elif hasattr(model, "_meta"):
            labels.append(model._meta.label_lower)
        else:
            raise TypeError(f"models= takes model classes or 'app_label.ModelName', got {model!r}")
    return tuple(labels)


def _tags(tags: Iterable[Any]) -> tuple[str, ...]:
    if isinstance(tags, str):
        raise TypeError(f"tags= takes a list of strings, got the string {tags!r}")
    out = []
    for tag in tags:
        if not isinstance(tag, str) or not tag:
            raise TypeError(f"tags must be non-empty strings, got {tag!r}")
        out.append(tag)
    return tuple(out)


def _negative(
    negative: Any, negative_timeout: Any
) -> tuple[tuple[type[BaseException], ...], float | None]:
    types = (negative,) if isinstance(negative, type) else tuple(negative)
    for item in types:
        if not (isinstance(item, type) and issubclass(item, Exception)):
            raise TypeError(f"negative= takes exception classes, got {item!r}")
    timeout = _check_timeout("negative_timeout", negative_timeout)
    if types and timeout is None:
        raise ValueError("negative= needs negative_timeout= (seconds to remember the failure)")
    return types, timeout


def _spec(
    name: str,
    timeout: Any,
    models: Any,
    tags: Any,
    stale_ttl: Any,
    negative: Any,
    negative_timeout: Any,
) -> Spec:
    types, neg_timeout = _negative(negative, negative_timeout)
    if stale_ttl is not None and (
        isinstance(stale_ttl, bool) or not isinstance(stale_ttl, (int, float)) or stale_ttl < 0
    ):
        raise ValueError(f"stale_ttl must be >= 0 seconds, got {stale_ttl!r}")
    return Spec(
        name=name,
        timeout=_check_timeout("timeout", timeout) or 0.0,
        models=_model_labels(models),
        tags=_tags(tags),
        stale_ttl=stale_ttl,
        negative=types,
        negative_timeout=neg_timeout,
    )


def get_or_load(
    key: Any,
    loader: Callable[[], Any],
    timeout: float | None = None,
    *,
    models: Iterable[Any] = (),
    tags: Iterable[str] = (),
    stale_ttl: float | None = None,
    negative: Any = (),
    negative_timeout: float | None = None,
    tenant: Any = ...,
    alias: str | None = None,
) -> Any:
    """The cached value of ``key`` in the current tenant's namespace, loading it on a miss.

    ``key`` is a string or a tuple of plain values; its first element (or the string) is also
    the name used in metrics. ``models``/``tags`` list what invalidates the value besides its
    tenant's namespace. ``None`` and falsy values are cached like any other.
    """
    if not callable(loader):
        raise TypeError(f"loader must be callable, got {loader!r}")
    if alias is not None:
        check_alias(alias)
    name = (
        key
        if isinstance(key, str)
        else (
            key[0] if isinstance(key, tuple) and key and isinstance(key[0], str) else "get_or_load"
        )
    )
    timeout = cache_settings().timeout if timeout is None else timeout
    spec = _spec(safe_part(name), timeout, models, tags, stale_ttl, negative, negative_timeout)
    for label in spec.models:
        invalidation.watch(label, alias)
    return engine(alias).get_or_load(namespace(tenant), argument_digest(key), spec, loader)


def cached(
    timeout: float | None = None,
    *,
    key: Callable[..., Any] | None = None,
    models: Iterable[Any] = (),
    tags: Iterable[str] = (),
    stale_ttl: float | None = None,
    negative: Any = (),
    negative_timeout: float | None = None,
    name: str | None = None,
    alias: str | None = None,
) -> Callable[[F], F]:
    """Cache a function's (or method's) result per arguments, tenant-namespaced.

    ``key`` maps the call's arguments to the plain values that identify the result (default:
    all arguments, bound to the signature so ``f(1)`` and ``f(x=1)`` share an entry; a model
    instance counts as its primary key). Arguments are validated here, at definition time, so a
    bad TTL, alias, model or tag fails on import rather than on the first request.
    """
    if callable(timeout) and not isinstance(timeout, (int, float)):
        raise TypeError("use @cached() or @cached(timeout), not bare @cached")
    _check_timeout("timeout", timeout)
    if key is not None and not callable(key):
        raise TypeError(f"key= must be a function of the call's arguments, got {key!r}")
    if alias is not None:
        check_alias(alias)
    labels = _model_labels(models)
    spec_args = (labels, _tags(tags), stale_ttl, negative, negative_timeout)
    _spec("check", timeout or 1, *spec_args)  # validate now; the real spec is built per call

    def decorate(func: F) -> F:
        if not callable(func):
            raise TypeError(f"@cached decorates functions, got {func!r}")
        if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
            raise TypeError(
                f"@cached cannot cache the async function {func.__qualname__}: it would cache the "
                "coroutine, not its result; cache a sync helper it awaits via sync_to_async"
            )
        if isinstance(func, (classmethod, staticmethod)):
            raise TypeError("put @cached below @classmethod/@staticmethod, next to the function")
        label = name or f"{func.__module__}.{func.__qualname__}"
        signature = inspect.signature(func)
        for model_label in labels:
            invalidation.watch(model_label, alias)

        def digest(args: tuple, kwargs: dict) -> str:
            if key is not None:
                try:
                    parts = key(*args, **kwargs)
                except Exception as exc:
                    raise CacheKeyError(
                        f"the key function of {label} raised {type(exc).__name__}: {exc}"
                    ) from exc
                return argument_digest(parts, f"{label} key")
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{label}(): {exc}") from None
            bound.apply_defaults()
            return argument_digest(dict(bound.arguments), f"{label}() argument")

        fixed = _spec(safe_part(label), timeout or 1, *spec_args)

        def spec() -> Spec:
            if timeout is not None:
                return fixed
            return dataclasses.replace(fixed, timeout=float(cache_settings().timeout))

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return engine(alias).get_or_load(
                namespace(), digest(args, kwargs), spec(), lambda: func(*args, **kwargs)
            )

        def invalidate(*args: Any, **kwargs: Any) -> None:
            """Drop the cached result of this call (current tenant's namespace)."""
            engine(alias).delete([namespace().value_key(safe_part(label), digest(args, kwargs))])

        wrapper.invalidate = invalidate  # type: ignore[attr-defined]
        wrapper.cache_name = label  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


# --------------------------------------------------------------------------- invalidation


def _schedule(generation_keys: list[str], alias: str | None, using: str | None) -> None:
    target = engine(alias)
    invalidation.on_commit(
        lambda: target.bump(generation_keys),
        using or DEFAULT_DB_ALIAS,
        key=(target.alias, tuple(generation_keys)),
    )


def invalidate_tenant(
    tenant: Any = ..., *, alias: str | None = None, using: str | None = None
) -> None:
    """Invalidate every cached value of ``tenant`` (default: current; None: shared), on commit."""
    _schedule([namespace(tenant).tenant_generation()], alias, using)


def invalidate_model(
    model: Any, tenant: Any = ..., *, alias: str | None = None, using: str | None = None
) -> None:
    """Invalidate values cached with ``models=[model]`` in ``tenant``'s namespace, on commit."""
    (label,) = _model_labels([model])
    _schedule([namespace(tenant).model_generation(label)], alias, using)


def invalidate_tag(
    tag: str, tenant: Any = ..., *, alias: str | None = None, using: str | None = None
) -> None:
    """Invalidate values cached with ``tags=[tag]`` in ``tenant``'s namespace, on commit."""
    (tag,) = _tags([tag])
    _schedule([namespace(tenant).tag_generation(tag)], alias, using)
