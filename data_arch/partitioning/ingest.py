"""Bulk ingest with ``COPY ... FROM STDIN``: many rows per second into a (partitioned) table.

:func:`copy_rows` sends rows through psycopg 3's ``cursor.copy()`` on the primary, in one
transaction, and keeps the promises the ORM's write paths keep:

* tenant-checked: a row-level tenant model's rows are written for the current tenant only
  (a row without a tenant gets it; a row of another tenant is refused, and with no tenant
  active nothing is written). The COPY runs through tenancy's guard on ``cursor.copy()``
  (:func:`data_arch.tenancy.rls.install_copy_guard`), so the tenant's RLS setting and
  search_path hold for it. PostgreSQL refuses ``COPY FROM`` into a table whose Row-Level
  Security applies to the role, so there the rows are copied into a temporary table and moved
  with one ``INSERT ... SELECT``, which the policy's ``WITH CHECK`` judges row by row;
* partition-aware: each row's partition key is checked against the partitions in the catalog.
  A row outside every partition goes to the default partition (``partitions apply`` moves it
  later), or, for a table without one (``MonthlyPartitioning(default=False)``), the call is
  refused naming the value, and nothing is written;
* routed: ``using`` defaults to the router's write alias; afterwards the routing context
  knows it wrote (reads follow the write), and cached querysets of the model are invalidated
  on commit, as for ``bulk_create()``.

Unlike ``bulk_create()`` it does not return primary keys, send signals or call ``save()``.
"""

from __future__ import annotations

import bisect
import datetime as dt
import logging
import operator
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.conf import settings
from django.db import NotSupportedError, connections, models, router, transaction
from django.utils import timezone

from data_arch.partitioning import catalog
from data_arch.partitioning.declaration import partitioning_of
from data_arch.partitioning.plan import PartitionError
from data_arch.tenancy.context import CrossTenantError
from data_arch.tenancy.registry import TENANT_FIELD

__all__ = ["copy_rows"]

logger = logging.getLogger("data_arch.partitioning")

Row = models.Model | Mapping[str, Any] | Sequence[Any]


def copy_rows(
    model_or_queryset: type[models.Model] | models.QuerySet,
    rows: Iterable[Row],
    *,
    fields: Sequence[str] | None = None,
    using: str | None = None,
) -> int:
    """Write ``rows`` with ``COPY ... FROM STDIN``; return how many were written.

    ``rows`` are model instances, mappings of field name (or attname) to value, or -- with
    ``fields`` -- sequences of values in that order. ``fields`` (names or attnames) defaults
    to every concrete column but an auto-incremented primary key (the sequence numbers the
    rows) and generated columns; a column left out of ``fields`` and a missing mapping key take
    the field's default, as ``save()`` would (``auto_now``/``auto_now_add``: now). All rows
    are written, or none.
    """
    # Model classes are defined while apps load; this module may be imported before that.
    from data_arch.tenancy.models import is_tenant_model, tenant_pk_for

    if isinstance(model_or_queryset, models.QuerySet):
        model = model_or_queryset.model
        using = using or model_or_queryset._db
    else:
        model = model_or_queryset
    alias = using or router.db_for_write(model)
    connection = connections[alias]
    if connection.vendor != "postgresql":
        raise NotSupportedError(f"copy_rows() needs PostgreSQL; {alias!r} is {connection.vendor}")
    chosen = _fields(model, fields)
    given = len(chosen)
    if fields is not None:
        # Columns left out get what save() would give them: their Python default.
        chosen += [
            f for f in _fields(model, None)
            if f not in chosen and (f.has_default() or getattr(f, "auto_now_add", False)
                                    or getattr(f, "auto_now", False))
        ]
    tenant_at, tenant_pk, tenant_field = None, None, None
    if is_tenant_model(model):
        tenant_pk = tenant_pk_for(model)  # NoTenantError when no tenant is active
        tenant_field = model._meta.get_field(TENANT_FIELD)
        if model._meta.pk in chosen and model._meta.pk is not tenant_field:
            raise CrossTenantError(
                f"copy_rows() gives {model._meta.label} rows new ids from the sequence: leave "
                f"{model._meta.pk.name!r} out of fields (ids are unique across tenants)"
            )
        if tenant_field not in chosen:
            chosen.append(tenant_field)
        tenant_at = chosen.index(tenant_field)
    table = model._meta.db_table
    bounds = None
    declared = partitioning_of(model)
    key_at = None
    if declared is not None:
        key_field = model._meta.get_field(declared.field)
        if key_field not in chosen:
            raise PartitionError(
                f"copy_rows() into {model._meta.label} must write its partition key "
                f"{key_field.name!r}: add it to fields"
            )
        key_at = chosen.index(key_field)
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in chosen)
    names = [f.name for f in chosen]
    convert = _Converter(model, chosen, given, names, connection)
    count = to_default = 0
    with transaction.atomic(using=alias):
        if declared is not None:
            schema = catalog.current_schema(alias)
            found = catalog.ranges(alias, schema, table)
            if found is None:
                raise PartitionError(
                    f"{model._meta.label}: no partitioned table {table!r} in schema {schema!r}"
                )
            bounds = _Bounds(*found)
        with connection.cursor() as cursor:
            cursor.execute("SELECT row_security_active(%s::regclass)", [quote(table)])
            (secured,) = cursor.fetchone()
            target = quote(table)
            if secured:
                # PostgreSQL refuses COPY FROM into a table whose policies apply to this role
                # ("COPY FROM not supported with row-level security"): copy into a temporary
                # table, then one INSERT ... SELECT, which the policy's WITH CHECK sees.
                target = quote(f"data_arch_copy_{uuid.uuid4().hex[:12]}")
                cursor.execute(
                    f"CREATE TEMPORARY TABLE {target} ON COMMIT DROP AS "
                    f"SELECT {columns} FROM {quote(table)} WITH NO DATA"
                )
        with connection.cursor() as cursor, cursor.copy(
            f"COPY {target} ({columns}) FROM STDIN"
        ) as copy:
            for row in rows:
                values = convert(row)
                if tenant_at is not None:
                    own = values[tenant_at]
                    if own is None:
                        values[tenant_at] = tenant_pk
                        if isinstance(row, model):
                            setattr(row, tenant_field.attname, tenant_pk)
                    elif tenant_field.target_field.to_python(own) != tenant_pk:
                        raise CrossTenantError(
                            f"a {model._meta.label} row of tenant {own!r} was given to copy_rows() "
                            f"while tenant {tenant_pk!r} is active; nothing was written"
                        )
                if bounds is not None and not bounds.holds(values[key_at]):
                    if not bounds.default:
                        raise PartitionError(
                            f"no partition of {schema}.{table} holds {names[key_at]} = "
                            f"{values[key_at]!r} and the table has no default partition; create "
                            "its month (manage.py partitions apply --ahead N); nothing was written"
                        )
                    to_default += 1
                copy.write_row(values)
                count += 1
        if secured:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"INSERT INTO {quote(table)} ({columns}) SELECT {columns} FROM {target}"
                )
                cursor.execute(f"DROP TABLE {target}")
        _written(model, alias)
    if to_default:
        logger.warning(
            "copy_rows(): %d %s row(s) went to the default partition of %s; "
            "`manage.py partitions apply` moves them into their months",
            to_default, model._meta.label, table,
        )
    return count


def _fields(model: type[models.Model], fields: Sequence[str] | None) -> list[models.Field]:
    meta = model._meta
    if fields is None:
        return [
            f for f in meta.concrete_fields
            if not getattr(f, "generated", False) and not (f.primary_key and f.db_returning)
        ]
    chosen = []
    for name in fields:
        try:
            field = meta.get_field(name)
        except Exception:  # noqa: BLE001 -- FieldDoesNotExist, reported with the model's label
            raise ValueError(f"copy_rows(): {meta.label} has no field {name!r}") from None
        if not getattr(field, "concrete", False) or getattr(field, "generated", False):
            raise ValueError(f"copy_rows(): {meta.label}.{name} is not a column copy can write")
        chosen.append(field)
    return chosen


#: Python types a column of this internal type takes exactly as they are: the ORM's
#: conversion (``get_db_prep_save``) would return them unchanged, so it is skipped for them.
_AS_IS: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("CharField", "TextField", "SlugField", "EmailField", "URLField"), (str,)),
    **dict.fromkeys(
        ("IntegerField", "BigIntegerField", "SmallIntegerField", "PositiveIntegerField",
         "PositiveBigIntegerField", "PositiveSmallIntegerField", "AutoField", "BigAutoField",
         "SmallAutoField"),
        (int,),
    ),
    "BooleanField": (bool,),
    "FloatField": (float,),
}


class _Converter:
    """Turns one row into the values COPY sends, as ``save()`` would prepare them."""

    def __init__(
        self, model: type[models.Model], chosen: list[models.Field], given: int,
        names: list[str], connection: Any,
    ) -> None:
        self.model, self.chosen, self.given, self.names = model, chosen, given, names
        self.connection = connection
        self.as_is = [self._as_is(f) for f in chosen]
        # An aware datetime is what DateTimeField's conversion returns for one (USE_TZ).
        self.aware = [
            settings.USE_TZ
            and (f.target_field if f.is_relation else f).get_internal_type() == "DateTimeField"
            for f in chosen
        ]
        # A plain attribute read where pre_save() is one (no auto_now, no file to commit).
        self.getters = [
            operator.attrgetter(f.attname) if self._plain_pre_save(f) else None for f in chosen
        ]

    @staticmethod
    def _as_is(field: models.Field) -> tuple[type, ...]:
        target = field.target_field if field.is_relation else field
        return _AS_IS.get(target.get_internal_type(), ())

    @staticmethod
    def _plain_pre_save(field: models.Field) -> bool:
        pre_save = type(field).pre_save
        if pre_save is models.Field.pre_save:
            return True
        return (
            pre_save in (models.DateField.pre_save, models.DateTimeField.pre_save)
            and not field.auto_now and not field.auto_now_add
        )

    def __call__(self, row: Row) -> list[Any]:
        chosen, model = self.chosen, self.model
        if isinstance(row, model):
            raw = [
                getter(row) if getter is not None else f.pre_save(row, True)
                for f, getter in zip(chosen, self.getters, strict=True)
            ]
        elif isinstance(row, Mapping):
            raw = []
            for f in chosen:
                if f.name in row:
                    raw.append(row[f.name])
                elif f.attname in row:
                    raw.append(row[f.attname])
                else:
                    raw.append(_default(f))
        elif isinstance(row, Sequence) and not isinstance(row, str | bytes):
            if len(row) != self.given:
                raise ValueError(
                    f"copy_rows(): a row has {len(row)} value(s) for {self.given} field(s) "
                    f"{self.names[: self.given]}"
                )
            raw = [*row, *(_default(f) for f in chosen[self.given:])]
        else:
            raise TypeError(
                f"copy_rows(): rows must be {model._meta.label} instances, mappings or "
                f"sequences, got {type(row).__name__}"
            )
        connection = self.connection
        return [
            v if (type(v) in as_is or (aware and type(v) is dt.datetime and v.tzinfo is not None))
            else f.get_db_prep_save(v, connection)
            for f, v, as_is, aware in zip(chosen, raw, self.as_is, self.aware, strict=True)
        ]


def _default(field: models.Field) -> Any:
    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        return timezone.now()
    return field.get_default()


class _Bounds:
    """Which ranged partition holds a key: a binary search over the catalog's bounds."""

    def __init__(self, ranged: list[catalog.Partition], default: bool) -> None:
        low = dt.datetime.min.replace(tzinfo=dt.UTC)
        self.starts = [p.start or low for p in ranged]
        self.ends = [p.end for p in ranged]
        self.default = default

    def holds(self, value: Any) -> bool:
        if not isinstance(value, dt.datetime):
            return False
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        at = bisect.bisect_right(self.starts, value) - 1
        if at < 0:
            return False
        end = self.ends[at]
        return end is None or value < end


def _written(model: type[models.Model], alias: str) -> None:
    """What the ORM's write paths do after a write that no execute wrapper or compiler saw."""
    # COPY reaches neither the routing write watcher (an execute wrapper) nor the cache's
    # write compilers, so both are told here.
    from data_arch.caching.invalidation import model_written
    from data_arch.routing.sets import role_of
    from data_arch.routing.state import current_state

    if role_of(alias) == "primary":
        current_state(create=True).note_write(alias)
    model_written(model, alias)
