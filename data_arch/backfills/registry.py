"""Registered backfills: what to walk (a queryset, a model or a table), by which key, doing what.

A backfill is registered with :func:`register_backfill` in an app's ``backfills.py`` (imported
on demand, like ``admin.py``), in a module listed in ``DATA_ARCH["BACKFILLS"]["MODULES"]``, or
anywhere else that is imported before it runs.
"""

from __future__ import annotations

import dataclasses
import importlib
import reprlib
from collections.abc import Callable
from typing import Any

from django.utils.module_loading import autodiscover_modules

__all__ = ["Backfill", "BackfillError", "get_backfill", "register_backfill", "registered_backfills"]


class BackfillError(LookupError):
    """A backfill is unknown, malformed, or cannot run in its current state."""


@dataclasses.dataclass(frozen=True)
class Backfill:
    name: str
    #: A QuerySet, a model class, an ``"app_label.Model"`` label or None (then ``table``).
    source: Any
    #: The keyset column: unique and indexed (checked before the first batch).
    key: str
    #: SQL run per batch (placeholders below) or a callable ``f(batch) -> rows or None``.
    batch: str | Callable[[Any], Any]
    table: str | None = None
    #: Database alias; None: the router's write database for the model (or ``"default"``).
    using: str | None = None
    #: Run once per tenant (``--tenant`` / ``--all-tenants``) rather than once.
    per_tenant: bool = False
    batch_size: int | None = None
    description: str = ""

    def queryset(self) -> Any:
        """The QuerySet walked, or None for a table backfill."""
        source = self.source
        if source is None:
            return None
        if isinstance(source, str):
            from django.apps import apps

            try:
                source = apps.get_model(source)
            except (LookupError, ValueError) as exc:
                raise BackfillError(f"backfill {self.name!r}: unknown model {source!r} ({exc})") from None
        if hasattr(source, "_default_manager"):
            return source._default_manager.all()
        return source.all()

    def table_name(self) -> str:
        if self.table is not None:
            return self.table
        return self.queryset().model._meta.db_table


_registry: dict[str, Backfill] = {}
_discovered = False


def register_backfill(
    name: str,
    *,
    queryset_or_model: Any = None,
    table: str | None = None,
    key: str = "id",
    batch_sql_or_callable: str | Callable[[Any], Any],
    using: str | None = None,
    per_tenant: bool = False,
    batch_size: int | None = None,
    description: str = "",
) -> Backfill:
    """Register the backfill ``name``.

    Give either ``queryset_or_model`` (a QuerySet, a model or ``"app_label.Model"``: its rows
    are walked in ``key`` order) or ``table`` (a table name in the current schema). Per batch,
    SQL gets ``%(first)s`` / ``%(last)s`` (the batch's first and last key, inclusive) and
    ``%(keys)s`` (the array of its keys), and ``{table}`` is replaced by the quoted table (the
    partition, for a partitioned table); a callable gets a :class:`~data_arch.backfills.runner.Batch`.
    Either runs in the transaction that advances the cursor.
    """
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise BackfillError(f"a backfill needs a non-empty name of at most 200 characters, got {name!r}")
    if (queryset_or_model is None) == (table is None):
        raise BackfillError(
            f"backfill {name!r}: pass exactly one of queryset_or_model= and table=")
    if not isinstance(key, str) or not key:
        raise BackfillError(f"backfill {name!r}: key must be a column name, got {key!r}")
    if not (callable(batch_sql_or_callable) or (
            isinstance(batch_sql_or_callable, str) and batch_sql_or_callable.strip())):
        raise BackfillError(
            f"backfill {name!r}: batch_sql_or_callable must be SQL text or a callable, "
            f"got {batch_sql_or_callable!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise BackfillError(f"backfill {name!r}: batch_size must be >= 1, got {batch_size!r}")
    backfill = Backfill(name, queryset_or_model, key, batch_sql_or_callable, table, using,
                        per_tenant, batch_size, description)
    existing = _registry.get(name)
    if existing is not None and _origin(existing) != _origin(backfill):
        raise BackfillError(f"a backfill named {name!r} is already registered; pick another name")
    _registry[name] = backfill
    return backfill


def _origin(backfill: Backfill) -> tuple[Any, ...]:
    batch = backfill.batch
    if callable(batch):
        batch = (getattr(batch, "__module__", None), getattr(batch, "__qualname__", None))
    return (batch, backfill.table, backfill.key)


def unregister_backfill(name: str) -> None:
    _registry.pop(name, None)


def discover() -> None:
    global _discovered
    if _discovered:
        return
    from data_arch import conf

    autodiscover_modules("backfills")
    for module in conf.backfill_settings().modules:
        importlib.import_module(module)
    _discovered = True


def registered_backfills() -> dict[str, Backfill]:
    """Every registered backfill by name (apps' ``backfills`` modules imported first)."""
    discover()
    return dict(sorted(_registry.items()))


def get_backfill(name: str) -> Backfill:
    """The backfill ``name``; BackfillError naming the registered ones when unknown."""
    available = registered_backfills()
    try:
        return available[name]
    except KeyError:
        raise BackfillError(
            f"unknown backfill {reprlib.repr(name)}; registered: "
            f"{', '.join(map(repr, available)) or 'none'}"
        ) from None
