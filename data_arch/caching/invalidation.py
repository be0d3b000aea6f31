"""Model-driven invalidation, in every process: a write to a cached model bumps its generation.

**Which models.** A model is *watched* once anything caches with ``models=[...]`` naming it.
For that to hold in every process -- a web worker that has not imported the cached function
yet, a Celery worker, a management command, a shell -- the set is built when the app is ready,
in each process: ``DATA_ARCH['CACHE']['MODELS']`` plus every model named by a ``@cached`` or
``@register_warmer`` found in the installed apps' ``cache`` and ``warmers`` modules (imported
by :func:`install`, like ``admin.py``). A model first watched later than that is reported by
``data_arch.W404`` and logged once: writes in processes that never import that code would not
invalidate it.

**Which writes.** Every ORM write goes through one of Django's three write compilers, so those
are the choke point (installed once, process-wide, by :func:`install`): ``save()``,
``create()``, ``delete()``, ``QuerySet.update()``/``delete()``, ``bulk_create()``,
``bulk_update()``, many-to-many writes and the ``on_delete=SET(...)``/``SET_NULL``/
``SET_DEFAULT`` and ``CASCADE`` work of a deletion -- including ``UpdateQuery.update_batch``
and ``DeleteQuery.delete_batch``, which send no signal -- and ``loaddata``. The check costs one
set lookup per write statement for models nobody watches. Raw SQL is not seen; call
:func:`data_arch.caching.invalidate_model` after it.

**When.** Bumps go through ``transaction.on_commit(using=...)``: nothing is invalidated before
the data is committed (a reader could otherwise re-cache the old rows), nothing at all on
rollback, and a transaction that writes the same model a thousand times bumps it once. Each
bump carries the primary's WAL position read after the commit (:mod:`.replicas`), read once
per transaction.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Hashable
from typing import Any

from django.db import connections, transaction

__all__ = ["install", "late_registrations", "on_commit", "watch", "watched"]

logger = logging.getLogger("data_arch.caching")

_watched: dict[str, set[str | None]] = {}
_lock = threading.Lock()
_installed = False
_ready = False
#: label -> where it was first watched, for models first watched after start-up.
_late: dict[str, str] = {}
_ATTR = "_data_arch_cache_pending"


def watched() -> dict[str, frozenset[str | None]]:
    """``{model label: cache aliases}`` of every model whose writes invalidate."""
    return {label: frozenset(aliases) for label, aliases in _watched.items()}


def late_registrations() -> dict[str, str]:
    """Models first watched after start-up, with the cached code that named them."""
    return dict(_late)


def watch(label: str, alias: str | None = None, where: str = "") -> None:
    """Invalidate ``models=[label]`` cache entries on every write to that model."""
    label = label.lower()
    aliases = _watched.get(label)
    if aliases is not None and alias in aliases:
        return
    with _lock:
        if _ready and label not in _watched and label not in _late:
            _late[label] = where or "a get_or_load() call"
            logger.warning(
                "cache invalidation for %s was registered after start-up (by %s): writes in "
                "processes that never import it will not invalidate it; list it in "
                "DATA_ARCH['CACHE']['MODELS'] or define the cached code in an app's cache.py "
                "(data_arch.W404)", label, _late[label],
            )
        _watched.setdefault(label, set()).add(alias)
        _labels.clear()


#: model -> the watched labels its writes bump (itself, its concrete model, its parents);
#: emptied whenever a model starts being watched.
_labels: dict[type, list[str]] = {}


def _watched_labels(model: type) -> list[str]:
    found = _labels.get(model)
    if found is None:
        meta = model._meta
        labels = [meta.label_lower]
        if meta.concrete_model is not model:
            labels.append(meta.concrete_model._meta.label_lower)
        labels.extend(parent._meta.label_lower for parent in meta.get_parent_list())
        found = _labels[model] = [label for label in dict.fromkeys(labels) if label in _watched]
    return found


def model_written(model: type, using: str) -> None:
    """Schedule the bump of ``model``'s generation (and its concrete parents') on commit."""
    from data_arch.caching.engine import cache_settings, engine
    from data_arch.caching.keys import current_namespace

    labels = _watched_labels(model)
    if not labels:
        return
    namespace = current_namespace(cache_settings().prefix, using)
    for label in labels:
        key = namespace.model_generation(label)
        for alias in _watched[label]:
            target = engine(alias)
            on_commit(target.bump, [key], using, (target.alias, key))


def on_commit(
    bump: Callable[[list[str], dict[str, str]], Any], keys: list[str], using: str, key: Hashable
) -> None:
    """Run ``bump(keys, positions)`` after the current transaction on ``using`` commits, once
    per ``key`` and transaction; ``positions`` is the primary's WAL position after the commit,
    read once for all of the transaction's bumps."""
    from data_arch.caching import replicas

    connection = connections[using]
    if not connection.in_atomic_block:
        bump(keys, replicas.capture(using))
        return
    # Django rebuilds run_on_commit when a transaction or a savepoint is rolled back, so
    # tying the "already scheduled" set to that list's identity forgets exactly the callbacks
    # the rollback discarded.
    state = getattr(connection, _ATTR, None)
    if state is None or state[0] is not connection.run_on_commit:
        state = (connection.run_on_commit, set(), {})
        setattr(connection, _ATTR, state)
    pending, captured = state[1], state[2]
    if key in pending:
        return
    pending.add(key)

    def run() -> None:
        pending.discard(key)
        if "positions" not in captured:
            captured["positions"] = replicas.capture(using)
        bump(keys, captured["positions"])

    transaction.on_commit(run, using=using)


# --------------------------------------------------------------------------- the choke point


def _wrap(compiler: type) -> None:
    original = compiler.execute_sql
    if getattr(original, "_data_arch_original", None) is not None:
        return

    @functools.wraps(original)
    def execute_sql(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if _watched:
            model = self.query.model
            if model is not None and _watched_labels(model):
                model_written(model, self.using)
        return result

    execute_sql._data_arch_original = original  # type: ignore[attr-defined]
    compiler.execute_sql = execute_sql


def _install_hooks() -> None:
    global _installed
    if _installed:
        return
    from django.db.models.sql import compiler

    for cls in (compiler.SQLInsertCompiler, compiler.SQLUpdateCompiler, compiler.SQLDeleteCompiler):
        _wrap(cls)
    _installed = True


def install() -> None:
    """From ``DataArchConfig.ready()``: the write hooks, the settings' models, the models of
    every app's ``cache`` and ``warmers`` modules; what is watched from then on is late."""
    global _ready
    from django.core.signals import setting_changed
    from django.utils.module_loading import autodiscover_modules

    from data_arch import conf
    from data_arch.caching import api

    _install_hooks()
    setting_changed.connect(api.settings_changed, dispatch_uid="data_arch.caching.settings")
    try:
        labels = conf.cache_settings().models
    except conf.SettingError:
        labels = ()  # reported by data_arch.E001
    for label in labels:
        watch(label, None, "DATA_ARCH['CACHE']['MODELS']")
    autodiscover_modules("cache", "warmers")
    _ready = True
