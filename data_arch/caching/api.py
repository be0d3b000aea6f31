"""The public cache-aside API: ``get_or_load``, ``@cached`` and the invalidation functions.

Every argument is validated once per call site and key: a call is resolved to a memoised
:class:`~data_arch.caching.engine.Call` (its spec and argument digest), so a hit costs a few
dictionary lookups before the L1 or the one Redis round trip.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS

from data_arch.caching import invalidation
from data_arch.caching.engine import Call, Spec, _engines, cache_settings, check_alias, engine
from data_arch.caching.keys import (
    FLAT_TYPES,
    CacheKeyError,
    Namespace,
    argument_digest,
    current_namespace,
    flat_signature,
    forget_namespaces,
    namespace_for,
    safe_part,
)
from data_arch.tenancy.context import as_tenant

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

#: Resolved calls by (key, its types, options...); every decorated function's memo is here too.
_calls: dict[Any, Call] = {}
_memos: list[dict[Any, Any]] = [_calls]
_MEMO_MAX = 50_000
_NO_ARGUMENTS = ((), ())  # the memo key of a call without arguments: (args, their types)


def settings_changed(setting: str, **kwargs: Any) -> None:
    """``setting_changed`` receiver: specs, namespaces and engines depend on the settings."""
    if setting in ("DATA_ARCH", "CACHES", "PUBLIC_SCHEMA_NAME"):
        from data_arch.caching.engine import reset_engines

        for memo in _memos:
            memo.clear()
        forget_namespaces()
        reset_engines()


def namespace(tenant: Any = ...) -> Namespace:
    """The cache namespace of ``tenant`` (default: current tenant; ``None``: shared)."""
    prefix = cache_settings().prefix
    if tenant is ...:
        return current_namespace(prefix)
    return namespace_for(prefix, None if tenant is None else as_tenant(tenant))


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
    if value > 365 * 86400:
        raise ValueError(f"{what} must be at most a year (31536000 seconds), got {value!r}")
    return float(value)


def _model_labels(models: Iterable[Any], where: str = "models=") -> tuple[str, ...]:
    if isinstance(models, str):
        raise TypeError(f"{where} takes a list of models, got the string {models!r}")
    from django.apps import apps

    labels = []
    for model in models:
        if isinstance(model, str):
            if model.count(".") != 1 or not all(model.split(".")):
                raise ValueError(
                    f"{where} takes model classes or 'app_label.ModelName', got {model!r}"
                )
            if apps.ready:
                try:
                    apps.get_model(model)
                except LookupError:
                    raise ValueError(f"{where} names {model!r}, which is not an installed model")
            labels.append(model.lower())
        elif hasattr(model, "_meta"):
            labels.append(model._meta.label_lower)
        else:
            raise TypeError(f"{where} takes model classes or 'app_label.ModelName', got {model!r}")
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
    name: str, timeout: Any, models: Any, tags: Any, stale_ttl: Any, negative: Any,
    negative_timeout: Any,
) -> Spec:
    types, neg_timeout = _negative(negative, negative_timeout)
    if stale_ttl is not None and (
        isinstance(stale_ttl, bool) or not isinstance(stale_ttl, (int, float))
        or not 0 <= stale_ttl <= 365 * 86400
    ):
        raise ValueError(f"stale_ttl must be between 0 and 31536000 seconds, got {stale_ttl!r}")
    if timeout is None:
        timeout = cache_settings().timeout
    return Spec(
        name=name,
        timeout=_check_timeout("timeout", timeout) or 0.0,
        models=_model_labels(models),
        tags=_tags(tags),
        stale_ttl=stale_ttl,
        negative=types,
        negative_timeout=neg_timeout,
    )


def _hashable(value: Any) -> Any:
    if type(value) is tuple:
        return value
    if type(value) is list:
        return tuple(value)
    return value


def _name_of(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, tuple) and key and isinstance(key[0], str):
        return key[0]
    return "get_or_load"


def _resolve(memo_key: Any, key: Any, timeout: Any, models: Any, tags: Any, stale_ttl: Any,
             negative: Any, negative_timeout: Any, alias: str | None) -> Call:
    spec = _spec(safe_part(_name_of(key)), timeout, models, tags, stale_ttl, negative,
                 negative_timeout)
    for label in spec.models:
        invalidation.watch(label, alias, f"get_or_load({_name_of(key)!r})")
    call = Call(spec, argument_digest(key))
    if memo_key is not None:
        if len(_calls) > _MEMO_MAX:
            _calls.clear()
        _calls[memo_key] = call
    return call


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
    kind = type(key)
    if kind is tuple:
        signature = tuple(map(type, key))
        if not FLAT_TYPES.issuperset(signature):
            signature = None
    else:
        signature = kind if kind in FLAT_TYPES else None
    call = None
    memo_key = None
    if signature is not None:
        if type(models) is list:
            models = tuple(models)
        if type(tags) is list:
            tags = tuple(tags)
        memo_key = (key, signature, timeout, models, tags, stale_ttl, negative,
                    negative_timeout, alias)
        try:
            call = _calls.get(memo_key)
        except TypeError:  # an unhashable option: validated (and refused or used) below
            memo_key = None
    if call is None:
        if alias is not None:
            check_alias(alias)
        call = _resolve(memo_key, key, timeout, models, tags, stale_ttl, negative,
                        negative_timeout, alias)
        if not callable(loader):
            raise TypeError(f"loader must be callable, got {loader!r}")
    target = _engines.get(alias or "") or engine(alias)
    if tenant is ...:
        space = current_namespace(target.prefix)
    else:
        space = namespace_for(target.prefix, None if tenant is None else as_tenant(tenant))
    return target.get_or_load(space, call, loader)


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
    bad TTL, alias, model or tag fails on import rather than on the first request. The models
    are watched from here on; define cached code in an app's ``cache`` or ``warmers`` module
    (or list its models in ``CACHE.MODELS``) so every process knows them from start-up.
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
            invalidation.watch(model_label, alias, label)
        memo: dict[Any, Call] = {}
        specs: list[Spec] = []  # the spec, built on first use (TIMEOUT may come from settings)
        _memos.extend((memo, specs))

        def spec() -> Spec:
            if not specs:
                specs.append(_spec(safe_part(label), timeout, *spec_args))
            return specs[0]

        def resolve(args: tuple, kwargs: dict) -> Call:
            if key is not None:
                try:
                    parts = key(*args, **kwargs)
                except Exception as exc:
                    raise CacheKeyError(
                        f"the key function of {label} raised {type(exc).__name__}: {exc}"
                    ) from exc
                where = f"{label} key"
            elif not kwargs:
                parts, where = args, ""
            else:
                parts, where = None, ""
            flat = flat_signature(parts) if parts is not None else None
            memo_key = (parts, flat) if flat is not None else None
            if memo_key is not None:
                found = memo.get(memo_key)
                if found is not None:
                    return found
            if key is not None:
                digest = argument_digest(parts, where)
            else:
                try:
                    bound = signature.bind(*args, **kwargs)
                except TypeError as exc:
                    raise TypeError(f"{label}(): {exc}") from None
                bound.apply_defaults()
                digest = argument_digest(dict(bound.arguments), f"{label}() argument")
            call = Call(spec(), digest)
            if memo_key is not None:
                if len(memo) > _MEMO_MAX:
                    memo.clear()
                memo[memo_key] = call
            return call

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            call = None
            if not kwargs and key is None:
                if not args:
                    call = memo.get(_NO_ARGUMENTS)
                else:
                    types = tuple(map(type, args))
                    if FLAT_TYPES.issuperset(types):
                        call = memo.get((args, types))
            if call is None:
                call = resolve(args, kwargs)
            target = _engines.get(alias or "") or engine(alias)
            return target.get_or_load(
                current_namespace(target.prefix), call, lambda: func(*args, **kwargs)
            )

        def invalidate(*args: Any, **kwargs: Any) -> None:
            """Drop the cached result of this call (current tenant's namespace), on commit,
            beating any load of it already in flight."""
            call = resolve(args, kwargs)
            target = engine(alias)
            keys = target.keys_for(current_namespace(target.prefix), call)
            invalidation.on_commit(
                lambda _keys, positions: target.invalidate_values([keys.value], positions),
                [keys.value], DEFAULT_DB_ALIAS, (target.alias, keys.value),
            )

        wrapper.invalidate = invalidate  # type: ignore[attr-defined]
        wrapper.cache_name = label  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


# --------------------------------------------------------------------------- invalidation


def _schedule(generation_keys: list[str], alias: str | None, using: str | None) -> None:
    target = engine(alias)
    invalidation.on_commit(
        target.bump, generation_keys, using or DEFAULT_DB_ALIAS,
        (target.alias, tuple(generation_keys)),
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
    (label,) = _model_labels([model], "invalidate_model()")
    _schedule([namespace(tenant).model_generation(label)], alias, using)


def invalidate_tag(
    tag: str, tenant: Any = ..., *, alias: str | None = None, using: str | None = None
) -> None:
    """Invalidate values cached with ``tags=[tag]`` in ``tenant``'s namespace, on commit."""
    (tag,) = _tags([tag])
    _schedule([namespace(tenant).tag_generation(tag)], alias, using)

