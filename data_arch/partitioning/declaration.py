"""How a model declares monthly RANGE partitioning: one entry in ``Meta.constraints``.

A constraint is the one model option Django already serializes into migrations, diffs in the
autodetector and hands to the schema editor while it writes ``CREATE TABLE``. So plain
``makemigrations`` records the declaration with the model, and ``migrate`` creates the
partitioned parent (see :mod:`data_arch.partitioning.schema`).

    class Event(models.Model):
        occurred_at = models.DateTimeField()

        class Meta:
            constraints = [MonthlyPartitioning(field="occurred_at", ahead=3, retain=13)]

The constraint itself is the primary key ``(pk column, partition key)`` PostgreSQL requires; if
the schema editor hook were missing, ``CREATE TABLE`` would fail on two primary keys rather than
silently create an unpartitioned table.
"""

from __future__ import annotations

from typing import Any

from django.db import NotSupportedError, models
from django.db.models.constraints import BaseConstraint

__all__ = ["MonthlyPartitioning", "partitioned_models", "partitioning_of"]

MODES = ("drop", "detach", "archive")


class MonthlyPartitioning(BaseConstraint):
    """RANGE partitioning by UTC calendar month on a datetime ``field``.

    ``ahead``, ``retain`` and ``mode`` override ``DATA_ARCH["PARTITIONS"]`` for this model;
    ``None`` means "use the setting". ``default=False`` creates no DEFAULT partition: rows
    outside every partition are then rejected, but retention may ``DETACH ... CONCURRENTLY``.
    """

    def __init__(
        self,
        *,
        field: str,
        ahead: int | None = None,
        retain: int | None = None,
        mode: str | None = None,
        default: bool = True,
        name: str | None = None,
    ) -> None:
        if not isinstance(field, str) or not field:
            raise ValueError(f"MonthlyPartitioning(field=...) must name a field, got {field!r}")
        for label, value, low in (("ahead", ahead, 0), ("retain", retain, 1)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < low
            ):
                raise ValueError(
                    f"MonthlyPartitioning({label}=...) must be an int >= {low}, got {value!r}"
                )
        if mode is not None and mode not in MODES:
            raise ValueError(f"MonthlyPartitioning(mode=...) must be one of {MODES}, got {mode!r}")
        self.field = field
        self.ahead = ahead
        self.retain = retain
        self.mode = mode
        self.default = default
        super().__init__(name=name or f"partitioned_by_{field}")

    # The primary key PostgreSQL demands on a partitioned table: it must contain the key. A
    # row-level tenant model's also leads with the tenant column, as every key of a row-level
    # table does (TenantKeys cannot rewrite it later: a partitioned table's key keeps the
    # partition key).
    def _columns(self, model: type[models.Model]) -> list[str]:
        pk = model._meta.pk.column
        key = model._meta.get_field(self.field).column
        columns = [pk] if pk == key else [pk, key]
        tenant = _tenant_column(model)
        if tenant is not None and tenant not in columns:
            columns.insert(0, tenant)
        return columns

    def constraint_sql(self, model, schema_editor):  # type: ignore[no-untyped-def]
        columns = ", ".join(schema_editor.quote_name(c) for c in self._columns(model))
        return f"CONSTRAINT {schema_editor.quote_name(self.name)} PRIMARY KEY ({columns})"

    def create_sql(self, model, schema_editor):  # type: ignore[no-untyped-def]
        table = schema_editor.quote_name(model._meta.db_table)
        return f"ALTER TABLE {table} ADD {self.constraint_sql(model, schema_editor)}"

    def remove_sql(self, model, schema_editor):  # type: ignore[no-untyped-def]
        raise NotSupportedError(
            f"{model._meta.label}: PostgreSQL cannot turn a partitioned table back into a plain "
            "one; create a new model and copy the rows instead of removing MonthlyPartitioning"
        )

    def validate(self, model, instance, exclude=None, using=None):  # type: ignore[no-untyped-def]
        # The primary key is unique by construction (identity column); nothing to check in Python.
        return None

    def deconstruct(self) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        path, args, kwargs = super().deconstruct()
        path = "data_arch.partitioning.MonthlyPartitioning"
        kwargs["field"] = self.field
        for key in ("ahead", "retain", "mode"):
            if getattr(self, key) is not None:
                kwargs[key] = getattr(self, key)
        if not self.default:
            kwargs["default"] = False
        return path, args, kwargs

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MonthlyPartitioning):
            return self.deconstruct() == other.deconstruct()
        return NotImplemented

    def __hash__(self) -> int:
        return hash((type(self), self.name, self.field))


def _tenant_column(model: type[models.Model]) -> str | None:
    """The tenant column of a row-level tenant model (historical models from migrations
    included), else None."""
    from django.core.exceptions import FieldDoesNotExist

    from data_arch.tenancy.registry import TENANT_FIELD, tenant_model_label

    label = tenant_model_label()
    if not label:
        return None
    try:
        field = model._meta.get_field(TENANT_FIELD)
    except FieldDoesNotExist:
        return None
    remote = getattr(field, "remote_field", None)
    if remote is None:
        return None
    target = remote.model if isinstance(remote.model, str) else remote.model._meta.label
    return field.column if target.lower() == label.lower() else None


def partitioning_of(model: type[models.Model]) -> MonthlyPartitioning | None:
    """The model's :class:`MonthlyPartitioning`, or None when its table is not partitioned."""
    for constraint in model._meta.constraints:
        if isinstance(constraint, MonthlyPartitioning):
            return constraint
    return None


def partitioned_models() -> list[type[models.Model]]:
    from django.apps import apps

    return [
        m
        for m in apps.get_models()
        if partitioning_of(m) is not None and not m._meta.proxy and m._meta.managed
    ]
