"""What PostgreSQL says about a partitioned table: partitions and bounds, default rows, indexes.

Bounds are parsed from ``pg_get_expr(relpartbound)`` with the session TimeZone set to UTC for
the reading transaction; partition names are never interpreted.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import re

from django.db import connections, transaction

from data_arch.partitioning import sql

__all__ = ["Partition", "TableState", "read_table"]

_BOUND_RE = re.compile(r"FOR VALUES FROM \((.+)\) TO \((.+)\)\s*$")


@dataclasses.dataclass(frozen=True)
class Partition:
    name: str
    start: dt.datetime | None  # None: MINVALUE
    end: dt.datetime | None  # None: MAXVALUE
    is_default: bool = False
    size_bytes: int = 0
    estimated_rows: int = 0


@dataclasses.dataclass(frozen=True)
class TableState:
    schema: str
    table: str
    partitioned: bool
    partitions: tuple[Partition, ...]
    default: Partition | None
    default_rows: int
    #: partitioned indexes on the parent that some partition lacks: {index: [partitions]}
    index_drift: dict[str, list[str]]
    #: indexes declared on the model that the parent does not have
    missing_indexes: list[str]

    @property
    def ranged(self) -> list[Partition]:
        return sorted(
            (p for p in self.partitions if not p.is_default),
            key=lambda p: p.start or dt.datetime.min.replace(tzinfo=dt.UTC),
        )

    def gaps_and_overlaps(self) -> list[str]:
        problems = []
        ranged = self.ranged
        for previous, current in itertools.pairwise(ranged):
            if previous.end is None or current.start is None:
                continue
            if current.start > previous.end:
                problems.append(
                    f"gap: no partition covers {previous.end:%Y-%m-%d} .. {current.start:%Y-%m-%d}"
                )
            elif current.start < previous.end:
                problems.append(f"overlap: {previous.name} and {current.name}")
        return problems


def _parse_bound(text: str) -> dt.datetime | None:
    text = text.strip()
    if text.upper() == "MINVALUE" or text.upper() == "MAXVALUE":
        return None
    value = dt.datetime.fromisoformat(text.strip("'"))
    if value.tzinfo is None:  # a timestamp without time zone column: read as UTC
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def parse_bounds(expression: str) -> tuple[bool, dt.datetime | None, dt.datetime | None]:
    if expression.strip() == "DEFAULT":
        return True, None, None
    match = _BOUND_RE.match(expression.strip())
    if not match:
        raise ValueError(f"unexpected partition bound {expression!r}")
    return False, _parse_bound(match.group(1)), _parse_bound(match.group(2))


def current_schema(using: str) -> str:
    connection = connections[using]
    schema = getattr(connection, "schema_name", None)
    if schema:
        return schema
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        return cursor.fetchone()[0]


def table_oid(using: str, schema: str, table: str) -> tuple[int, bool] | None:
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT c.oid, c.relkind = 'p' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
            [schema, table],
        )
        row = cursor.fetchone()
    return (row[0], row[1]) if row else None


def read_table(
    using: str, schema: str, table: str, column: str, declared_indexes: list[str] | None = None
) -> TableState | None:
    """The catalog's view of ``schema.table``; None when the table does not exist there."""
    found = table_oid(using, schema, table)
    if found is None:
        return None
    oid, partitioned = found
    partitions: list[Partition] = []
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        cursor.execute("SELECT set_config('TimeZone', 'UTC', true)")
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), pg_total_relation_size(c.oid), "
            "GREATEST(c.reltuples, 0)::bigint FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s",
            [oid],
        )
        for name, bound, size, rows in cursor.fetchall():
            is_default, start, end = parse_bounds(bound)
            partitions.append(Partition(name, start, end, is_default, size, rows))
        default = next((p for p in partitions if p.is_default), None)
        default_rows = 0
        if default is not None:
            cursor.execute(f"SELECT count(*) FROM {sql.qualified(schema, default.name)}")
            default_rows = cursor.fetchone()[0]
        # Partitioned indexes of the parent and, per partition, whether a child index is attached.
        cursor.execute(
            "SELECT pi.relname, part.relname FROM pg_index x "
            "JOIN pg_class pi ON pi.oid = x.indexrelid AND pi.relkind = 'I' "
            "CROSS JOIN pg_inherits ih JOIN pg_class part ON part.oid = ih.inhrelid "
            "WHERE x.indrelid = %(oid)s AND ih.inhparent = %(oid)s AND NOT EXISTS ("
            "  SELECT 1 FROM pg_inherits ii JOIN pg_index cx ON cx.indexrelid = ii.inhrelid "
            "  WHERE ii.inhparent = pi.oid AND cx.indrelid = part.oid)",
            {"oid": oid},
        )
        drift: dict[str, list[str]] = {}
        for index, partition in cursor.fetchall():
            drift.setdefault(index, []).append(partition)
        cursor.execute(
            "SELECT c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid WHERE x.indrelid = %s",
            [oid],
        )
        present = {row[0] for row in cursor.fetchall()}
    missing = sorted(set(declared_indexes or ()) - present)
    return TableState(
        schema, table, partitioned, tuple(partitions), default, default_rows, drift, missing
    )


def default_row_months(
    using: str, schema: str, default: str, column: str
) -> dict[dt.datetime, int]:
    """Rows in the default partition grouped by UTC month."""
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        cursor.execute("SELECT set_config('TimeZone', 'UTC', true)")
        cursor.execute(
            f"SELECT date_trunc('month', {sql.quote(column)}), count(*) FROM "
            f"{sql.qualified(schema, default)} WHERE {sql.quote(column)} IS NOT NULL GROUP BY 1"
        )
        return {month.astimezone(dt.UTC): count for month, count in cursor.fetchall()}


def columns(using: str, schema: str, table: str) -> list[str]:
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s "
            "AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum",
            [schema, table],
        )
        return [row[0] for row in cursor.fetchall()]
