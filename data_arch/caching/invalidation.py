"""Model-driven invalidation: every write path of a watched model bumps its generation on commit.

``post_save``/``post_delete`` cover ``Model.save()``/``delete()``. Django sends no signal for
``QuerySet.update()``, ``bulk_create()``, ``bulk_update()`` or a fast ``delete()``, so the first
time a model is watched those ``QuerySet`` methods are wrapped (once, process-wide): after the
original runs, a watched model's generation is scheduled for bumping. The wrapper costs one set
lookup for models nobody watches.

Bumps go through ``transaction.on_commit(using=...)``: nothing is invalidated before the data is
committed (a reader could otherwise re-cache the old rows), nothing at all on rollback, and a
transaction that writes the same model a thousand times bumps its generation once.

Raw SQL is not seen; call :func:`data_arch.caching.invalidate_model` after it.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Hashable
from typing import Any

from django.db import connections, transaction
from django.db.models import signals
from django.db.models.query import QuerySet

__all__ = ["on_commit", "watch", "watched"]

_watched: dict[str, set[str | None]] = {}
_lock = threading.Lock()
_installed = False
_ATTR = "_data_arch_cache_pending"


def watched() -> dict[str, frozenset[str | None]]:
    """``{model label: cache aliases}`` of every model whose writes invalidate."""
    return {label: frozenset(aliases) for label, aliases in _watched.items()}


def watch(label: str, alias: str | None = None) -> None:
    """Invalidate ``models=[label]`` cache entries on every write to that model."""
    label = label.lower()
    aliases = _watched.get(label)
    if aliases is not None and alias in aliases:
        return
    with _lock:
        first = label not in _watched
        _watched.setdefault(label, set()).add(alias)
        _install()
    if first:
        # Per-model receivers (a lazy "app_label.model" sender): a receiver for every sender
        # would stop Django from fast-deleting unrelated models.
        for signal in (signals.post_save, signals.post_delete):
            signal.connect(
                _on_signal, sender=label, weak=False, dispatch_uid=f"data_arch.caching.{label}"
            )


def on_commit(callback: Callable[[], Any], using: str, key: Hashable) -> None:
    """``transaction.on_commit`` that runs one ``key`` once per transaction."""
    connection = connections[using]
    if not connection.in_atomic_block:
        callback()
        return
    # Django rebuilds run_on_commit when a transaction or a savepoint is rolled back, so
    # tying the "already scheduled" set to that list's identity forgets exactly the callbacks
    # the rollback discarded.
    state = getattr(connection, _ATTR, None)
    if state is None or state[0] is not connection.run_on_commit:
        state = (connection.run_on_commit, set())
        setattr(connection, _ATTR, state)
    pending = state[1]
    if key in pending:
        return
    pending.add(key)

    def run() -> None:
        pending.discard(key)
        callback()

    transaction.on_commit(run, using=using)


def _namespace_for_write(using: str):
    from django.conf import settings

    from data_arch.caching.engine import cache_settings
    from data_arch.caching.keys import Namespace
    from data_arch.tenancy.context import current_tenant

    tenant = current_tenant()
    if tenant is not None:
        return Namespace(cache_settings().prefix, tenant.key)
    schema = getattr(connections[using], "schema_name", None)
    if schema and schema != getattr(settings, "PUBLIC_SCHEMA_NAME", "public"):
        from data_arch.tenancy.context import Tenant

        return Namespace(cache_settings().prefix, Tenant(pk=None, schema_name=schema).key)
    return Namespace(cache_settings().prefix, None)


def model_written(model: type, using: str) -> None:
    """Schedule the bump of ``model``'s generation (and its concrete parents') on commit."""
    from data_arch.caching.engine import engine

    related = (model, model._meta.concrete_model, *model._meta.get_parent_list())
    labels = list(dict.fromkeys(m._meta.label_lower for m in related))
    labels = [label for label in labels if label in _watched]
    if not labels:
        return
    namespace = _namespace_for_write(using)
    for label in labels:
        key = namespace.model_generation(label)
        for alias in _watched[label]:
            target = engine(alias)
            on_commit(functools.partial(target.bump, [key]), using, (target.alias, key))


def _on_signal(sender: type, using: str = "default", **kwargs: Any) -> None:
    if kwargs.get("raw"):
        return  # loaddata: fixtures are not application writes
    model_written(sender, using)


def _wrap(method_name: str) -> None:
    original = getattr(QuerySet, method_name)

    @functools.wraps(original)
    def wrapper(self: QuerySet, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        meta = self.model._meta
        if (
            meta.label_lower in _watched
            or meta.concrete_model._meta.label_lower in _watched
            or any(parent._meta.label_lower in _watched for parent in meta.get_parent_list())
        ):
            using = (
                args[0] if method_name == "_raw_delete" and args else kwargs.get("using", self.db)
            )
            model_written(self.model, using)
        return result

    wrapper._data_arch_original = original  # type: ignore[attr-defined]
    setattr(QuerySet, method_name, wrapper)


def _install() -> None:
    global _installed
    if _installed:
        return
    for method_name in ("update", "bulk_create", "bulk_update", "delete", "_raw_delete"):
        _wrap(method_name)
    _installed = True
