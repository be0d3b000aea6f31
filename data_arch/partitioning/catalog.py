"""What PostgreSQL says about a partitioned table: partitions and bounds, default rows, indexes.

Bounds are parsed from ``pg_get_expr(relpartbound)`` with the session TimeZone set to UTC for
the reading transaction; partition names are never interpreted.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime as dt
import itertools
import re
from collections.abc import Iterator
from typing import Any

from django.db import connections, transaction

from data_arch.partitioning import sql

__all__ = ["Partition", "TableState", "read_table"]

_BOUND_RE = re.compile(r"FOR VALUES FROM \((.+)\) TO \((.+)\)\s*$")


#: per database alias, the cursor that catalog reads share inside :func:`one_cursor`
_SHARED: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "data_arch_catalog_cursor", default=None
)


@contextlib.contextmanager
def one_cursor(using: str) -> Iterator[None]:
    """The catalog reads made inside share one cursor of ``using``: with django-tenants, each
    new cursor costs a round trip of its own (``SET search_path``)."""
    shared = _SHARED.get() or {}
    if using in shared:
        yield
        return
    with connections[using].cursor() as cursor:
        token = _SHARED.set({**shared, using: cursor})
        try:
            yield
        finally:
            _SHARED.reset(token)


def _result_sets(cursor: Any) -> list[list[tuple]]:
    """The rows of each statement of the last ``execute`` that returned any columns, in order
    (several statements sent as one, without parameters)."""
    sets = []
    while True:
        if cursor.description is not None:
            sets.append(cursor.fetchall())
        if not cursor.nextset():
            return sets


def _cursor(using: str) -> Any:
    shared = _SHARED.get()
    if shared and using in shared:
        return contextlib.nullcontext(shared[using])
    return connections[using].cursor()


#: Where a lower bound above every month (``'infinity'``, MAXVALUE, past year 9999: PostgreSQL
#: allows them, Python's datetime does not) is placed; such a partition holds no month.
FAR_FUTURE = dt.datetime(9999, 12, 1, tzinfo=dt.UTC)
#: Where an upper bound below every month (``'-infinity'``, MINVALUE, a BC date) is placed.
FAR_PAST = dt.datetime(1, 1, 1, tzinfo=dt.UTC)


@dataclasses.dataclass(frozen=True)
class Partition:
    name: str
    start: dt.datetime | None  # None: MINVALUE or -infinity
    end: dt.datetime | None  # None: MAXVALUE, infinity or beyond year 9999
    is_default: bool = False
    size_bytes: int = 0
    estimated_rows: int = 0
    #: pg_class.relkind: "r" a table, "p" itself partitioned, "f" a foreign table
    kind: str = "r"
    #: an interrupted ``DETACH ... CONCURRENTLY`` left it pending (pg_inherits.inhdetachpending)
    detach_pending: bool = False
    #: the bounds as PostgreSQL prints them (``MINVALUE``, ``'infinity'``, ...); None: DEFAULT
    bounds: tuple[str, str] | None = None
    #: storage parameters (``pg_class.reloptions``), as :func:`read_table` found them
    reloptions: tuple[str, ...] = ()


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

    def covers(self, start: dt.datetime, end: dt.datetime) -> bool:
        """Whether one partition holds all of [start, end)."""
        return any(
            (p.start is None or p.start <= start) and (p.end is None or p.end >= end)
            for p in self.ranged
        )

    def overlaps(self, start: dt.datetime, end: dt.datetime) -> bool:
        """Whether some partition holds part of [start, end)."""
        return any(
            (p.start is None or p.start < end) and (p.end is None or p.end > start)
            for p in self.ranged
        )

    def gaps_and_overlaps(self) -> list[str]:
        problems = [
            f"{p.name} is {'a foreign table' if p.kind == 'f' else 'itself partitioned'}: "
            "maintenance leaves it alone"
            for p in self.partitions
            if p.kind != "r"
        ]
        problems += [
            f"{p.name} has bounds that are not UTC month starts "
            f"({p.start:%Y-%m-%d %H:%M} .. {p.end:%Y-%m-%d %H:%M} UTC; made by another tool in "
            "another time zone?): no partition overlapping it is created; detach it and attach "
            "it under UTC month bounds, or keep it and let its months stay as they are"
            for p in self.partitions
            if not p.is_default
            and p.start is not None
            and p.end is not None
            and p.end not in (FAR_FUTURE, FAR_PAST)
            and p.start != FAR_FUTURE
            and any(b.day != 1 or b.hour or b.minute or b.second for b in (p.start, p.end))
        ]
        problems += [
            f"{p.name} is pending detach (an interrupted DETACH ... CONCURRENTLY): "
            "apply finishes it with DETACH ... FINALIZE"
            for p in self.partitions
            if p.detach_pending
        ]
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


def _parse_bound(text: str, *, upper: bool) -> dt.datetime | None:
    """A bound as a UTC datetime. Below every datetime: None as a lower bound (open), FAR_PAST
    as an upper one; above every datetime: None as an upper bound (open), FAR_FUTURE as a
    lower one. So ``FROM ('infinity') TO (MAXVALUE)`` covers no month, and neither does
    ``FROM (MINVALUE) TO ('-infinity')``."""
    text = text.strip().strip("'")
    below = FAR_PAST if upper else None
    above = None if upper else FAR_FUTURE
    if text.upper() in ("MINVALUE", "-INFINITY"):
        return below
    if text.upper() in ("MAXVALUE", "INFINITY"):
        return above
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        # Years past 9999 (or a BC date) are legal bounds that datetime cannot hold.
        if text.endswith(" BC") or text.startswith("-"):
            return below
        return above
    if value.tzinfo is None:  # a timestamp without time zone column: read as UTC
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def parse_bounds(expression: str) -> tuple[bool, dt.datetime | None, dt.datetime | None]:
    if expression.strip() == "DEFAULT":
        return True, None, None
    match = bound_texts(expression)
    return (
        False,
        _parse_bound(match[0], upper=False),
        _parse_bound(match[1], upper=True),
    )


def bound_texts(expression: str) -> tuple[str, str]:
    """(FROM, TO) of a range partition's ``pg_get_expr(relpartbound)``, quotes removed."""
    match = _BOUND_RE.match(expression.strip())
    if not match:
        raise ValueError(f"unexpected partition bound {expression!r}")
    return match.group(1).strip().strip("'"), match.group(2).strip().strip("'")


def current_schema(using: str) -> str:
    connection = connections[using]
    schema = getattr(connection, "schema_name", None)
    if schema:
        return schema
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        return cursor.fetchone()[0]


def behind_pooler(using: str) -> bool:
    """Whether ``using`` talks to PostgreSQL through a connection pooler such as PgBouncer.

    A pooler gives its clients a cancel key of its own, so the process id the client was told
    at connect time (BackendKeyData) is not the server process that runs its statements.
    Behind a transaction pooler a session setting lands on a server connection that other
    clients get next, and consecutive statements may run on different ones.
    """
    connection = connections[using]
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        server_pid = cursor.fetchone()[0]
    told = getattr(getattr(connection.connection, "info", None), "backend_pid", server_pid)
    return told != server_pid


def table_oid(using: str, schema: str, table: str) -> tuple[int, bool] | None:
    with _cursor(using) as cursor:
        cursor.execute(
            "SELECT c.oid, c.relkind = 'p' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
            [schema, table],
        )
        row = cursor.fetchone()
    return (row[0], row[1]) if row else None


def ranges(using: str, schema: str, table: str) -> tuple[list[Partition], bool] | None:
    """The ranged partitions of ``schema.table`` (bounds only, sorted) and whether it has a
    default; None when the table does not exist there or is not partitioned. Reads the catalog
    alone, so it needs no privilege on the partitions and scans none of them."""
    found = table_oid(using, schema, table)
    if found is None or not found[1]:
        return None
    with transaction.atomic(using=using), _cursor(using) as cursor:
        cursor.execute("SELECT set_config('TimeZone', 'UTC', true)")
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s AND NOT i.inhdetachpending",
            [found[0]],
        )
        rows = cursor.fetchall()
    ranged, default = [], False
    for name, bound in rows:
        is_default, start, end = parse_bounds(bound)
        if is_default:
            default = True
        else:
            ranged.append(Partition(name, start, end))
    ranged.sort(key=lambda p: p.start or dt.datetime.min.replace(tzinfo=dt.UTC))
    return ranged, default


def read_table(
    using: str, schema: str, table: str, column: str, declared_indexes: list[str] | None = None
) -> TableState | None:
    """The catalog's view of ``schema.table``; None when the table does not exist there."""
    found = table_oid(using, schema, table)
    if found is None:
        return None
    oid, partitioned = found
    partitions: list[Partition] = []
    with _cursor(using) as cursor:
        # No parameters, so several statements in one round trip; TimeZone set for their
        # transaction (the statements' own, or the caller's) prints the bounds in UTC.
        cursor.execute(
            "SELECT set_config('TimeZone', 'UTC', true);\n"
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), pg_total_relation_size(c.oid), "
            "GREATEST(c.reltuples, 0)::bigint, c.relkind, i.inhdetachpending, c.reloptions "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            f"WHERE i.inhparent = {int(oid)}"
        )
        _, rows = _result_sets(cursor)
        for name, bound, size, rows_, kind, pending, options in rows:
            is_default, start, end = parse_bounds(bound)
            partitions.append(
                Partition(
                    name, start, end, is_default, size, rows_, kind, bool(pending),
                    None if is_default else bound_texts(bound), tuple(options or ()),
                )
            )
        default = next((p for p in partitions if p.is_default), None)
        # The default's rows; partitioned indexes of the parent and, per partition, whether a
        # child index is attached (a foreign table has no indexes of its own: not drift); the
        # parent's indexes. One round trip.
        counted = (
            f"SELECT count(*) FROM {sql.qualified(schema, default.name)};\n"
            if default is not None else ""
        )
        cursor.execute(
            f"{counted}"
            "SELECT pi.relname, part.relname FROM pg_index x "
            "JOIN pg_class pi ON pi.oid = x.indexrelid AND pi.relkind = 'I' "
            "CROSS JOIN pg_inherits ih JOIN pg_class part ON part.oid = ih.inhrelid "
            "AND part.relkind <> 'f' "
            f"WHERE x.indrelid = {int(oid)} AND ih.inhparent = {int(oid)} AND NOT EXISTS ("
            "  SELECT 1 FROM pg_inherits ii JOIN pg_index cx ON cx.indexrelid = ii.inhrelid "
            "  WHERE ii.inhparent = pi.oid AND cx.indrelid = part.oid);\n"
            "SELECT c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
            f"WHERE x.indrelid = {int(oid)}"
        )
        sets = _result_sets(cursor)
        default_rows = sets.pop(0)[0][0] if default is not None else 0
        drift: dict[str, list[str]] = {}
        for index, partition in sets[0]:
            drift.setdefault(index, []).append(partition)
        present = {row[0] for row in sets[1]}
    missing = sorted(set(declared_indexes or ()) - present)
    return TableState(
        schema, table, partitioned, tuple(partitions), default, default_rows, drift, missing
    )


def default_row_months(
    using: str, schema: str, default: str, column: str
) -> dict[dt.datetime, int]:
    """Rows in the default partition grouped by UTC month."""
    with _cursor(using) as cursor:
        # No parameters: one round trip, TimeZone set for its transaction (see read_table).
        cursor.execute(
            "SELECT set_config('TimeZone', 'UTC', true);\n"
            f"SELECT date_trunc('month', {sql.quote(column)}), count(*) FROM "
            f"{sql.qualified(schema, default)} WHERE {sql.quote(column)} >= '0001-01-01+00' "
            f"AND {sql.quote(column)} < '9999-12-01+00' GROUP BY 1"
        )
        _, rows = _result_sets(cursor)
        return {month.astimezone(dt.UTC): count for month, count in rows}


def columns(using: str, schema: str, table: str) -> list[str]:
    with _cursor(using) as cursor:
        cursor.execute(
            "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s "
            "AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum",
            [schema, table],
        )
        return [row[0] for row in cursor.fetchall()]


def primary_key_columns(using: str, schema: str, table: str) -> list[str]:
    with _cursor(using) as cursor:
        cursor.execute(
            "SELECT a.attname FROM pg_index x JOIN pg_attribute a ON a.attrelid = x.indrelid "
            "AND a.attnum = ANY(x.indkey) WHERE x.indrelid = %s::regclass AND x.indisprimary "
            "ORDER BY array_position(x.indkey::int2[], a.attnum)",
            [sql.qualified(schema, table)],
        )
        return [row[0] for row in cursor.fetchall()]


def referenced_tables(using: str, schema: str, table: str) -> list[str]:
    """Tables the parent's foreign keys point at, qualified and quoted, in a stable order.

    ATTACH validates the new partition's foreign keys and so locks these tables too.
    """
    with _cursor(using) as cursor:
        cursor.execute(
            "SELECT DISTINCT c.confrelid, n.nspname, r.relname FROM pg_constraint c "
            "JOIN pg_class r ON r.oid = c.confrelid JOIN pg_namespace n ON n.oid = r.relnamespace "
            "WHERE c.conrelid = %s::regclass AND c.contype = 'f' AND c.confrelid <> c.conrelid "
            "ORDER BY 1",
            [sql.qualified(schema, table)],
        )
        return [sql.qualified(nsp, rel) for _, nsp, rel in cursor.fetchall()]


def foreign_keys(using: str, schema: str, table: str) -> list[str]:
    """Names of the foreign-key constraints a (detached) table carries."""
    with _cursor(using) as cursor:
        cursor.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'f' "
            "ORDER BY conname",
            [sql.qualified(schema, table)],
        )
        return [row[0] for row in cursor.fetchall()]


def relation(using: str, schema: str, name: str) -> tuple[str, bool] | None:
    """(relkind, relispartition) of ``schema.name``, or None when no relation has that name."""
    with _cursor(using) as cursor:
        cursor.execute(
            "SELECT c.relkind, c.relispartition FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
            [schema, name],
        )
        row = cursor.fetchone()
    return (row[0], row[1]) if row else None


def relations(using: str, schema: str, names: list[str]) -> dict[str, tuple[str, bool]]:
    """:func:`relation` of each of ``names`` that some relation has, in one round trip."""
    if not names:
        return {}
    with _cursor(using) as cursor:
        cursor.execute(
            "SELECT c.relname, c.relkind, c.relispartition FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = ANY(%s)",
            [schema, list(names)],
        )
        return {name: (kind, is_partition) for name, kind, is_partition in cursor.fetchall()}


def column_signature(using: str, schema: str, table: str) -> list[tuple[str, str, str, bool]]:
    """(name, type, generated, not null) per live column: what a staging table must match."""
    with _cursor(using) as cursor:
        cursor.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attgenerated, a.attnotnull "
            "FROM pg_attribute a WHERE a.attrelid = %s::regclass AND a.attnum > 0 "
            "AND NOT a.attisdropped ORDER BY a.attnum",
            [sql.qualified(schema, table)],
        )
        return [tuple(row) for row in cursor.fetchall()]


def has_constraint(using: str, schema: str, table: str, name: str) -> bool:
    with _cursor(using) as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_constraint WHERE conrelid = %s::regclass AND conname = %s",
            [sql.qualified(schema, table), name],
        )
        return cursor.fetchone() is not None


def has_trigger(using: str, schema: str, table: str, name: str) -> bool:
    with _cursor(using) as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_trigger WHERE tgrelid = %s::regclass AND tgname = %s",
            [sql.qualified(schema, table), name],
        )
        return cursor.fetchone() is not None


@dataclasses.dataclass(frozen=True)
class StagingTable:
    """A table apply built for a month and has not attached yet (a drain in progress)."""

    name: str
    rows: int


def staging_tables(using: str, schema: str, table: str) -> list[StagingTable]:
    """Standalone tables named like the table's partitions that still carry the bounds CHECK."""
    prefix = sql.partition_name(table, dt.datetime(2000, 1, 1, tzinfo=dt.UTC))[: -len("2000_01")]
    found = []
    with _cursor(using) as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r' AND NOT c.relispartition "
            "AND left(c.relname, %s) = %s AND length(c.relname) = %s ORDER BY 1",
            [schema, len(prefix), prefix, len(prefix) + len("2000_01")],
        )
        names = [row[0] for row in cursor.fetchall()]
        for name in names:
            if not has_constraint(using, schema, name, sql.constraint_name(name, "_bounds")):
                continue  # a detached partition, not a staging table
            cursor.execute(f"SELECT count(*) FROM {sql.qualified(schema, name)}")
            found.append(StagingTable(name, cursor.fetchone()[0]))
    return found


def dependents_query(relation: str) -> str:
    """The views and other objects that depend on the relation whose oid is the SQL expression
    ``relation``, one name a row (a DROP without CASCADE fails while there is any)."""
    return (
        "SELECT DISTINCT v.oid::regclass::text FROM pg_depend d JOIN pg_rewrite r "
        "ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class "
        f"WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = {relation} "
        "AND v.oid <> d.refobjid ORDER BY 1"
    )


def dependent_objects(using: str, schema: str, name: str) -> list[str]:
    """Views and other objects that depend on ``schema.name`` (a DROP without CASCADE fails)."""
    with _cursor(using) as cursor:
        cursor.execute(dependents_query("%s::regclass"), [sql.qualified(schema, name)])
        return [row[0] for row in cursor.fetchall()]


def retirement_reads(
    using: str, schema: str, names: list[str]
) -> dict[str, tuple[list[str], list[str]]]:
    """Per table of ``names`` in ``schema``: the objects that depend on it
    (:func:`dependent_objects`) and its foreign keys (:func:`foreign_keys`), in one round trip."""
    if not names:
        return {}
    with _cursor(using) as cursor:
        cursor.execute(
            f"SELECT c.relname, ARRAY({dependents_query('c.oid')}), "
            "ARRAY(SELECT k.conname::text FROM pg_constraint k WHERE k.conrelid = c.oid "
            "AND k.contype = 'f' ORDER BY k.conname) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = ANY(%s)",
            [schema, list(names)],
        )
        return {name: (list(deps), list(fks)) for name, deps, fks in cursor.fetchall()}


def retired_partition(
    cursor: Any, schema: str, table: str, name: str, young_ms: int
) -> tuple[Partition, bool, list[str], list[str], bool] | None:
    """What retiring the partition ``name`` of ``schema.table`` starts from, in one round
    trip: the partition (None when it is no partition of the table, or the table is gone),
    whether the table has a default partition, the partition's foreign keys, the objects that
    depend on it, and whether a transaction older than ``young_ms`` holds a lock on the table
    (as the runner's wait for quiet asks), on ``cursor``. The partition's bounds are not read
    (retention needs its name and whether a detach of it is pending)."""
    cursor.execute(
        "SELECT x.pending, x.is_default, "
        "EXISTS (SELECT 1 FROM pg_inherits di JOIN pg_class dc ON dc.oid = di.inhrelid "
        "WHERE di.inhparent = p.oid AND pg_get_expr(dc.relpartbound, dc.oid) = 'DEFAULT'), "
        "ARRAY(SELECT k.conname::text FROM pg_constraint k WHERE k.conrelid = x.oid "
        "AND k.contype = 'f' ORDER BY k.conname), "
        f"ARRAY({dependents_query('x.oid')}), "
        "EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid() "
        "AND l.relation = p.oid "
        "AND a.xact_start < clock_timestamp() - %s * interval '1 millisecond') "
        "FROM pg_class p JOIN pg_namespace pn ON pn.oid = p.relnamespace "
        "JOIN LATERAL (SELECT c.oid, i.inhdetachpending AS pending, "
        "pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT' AS is_default "
        "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = p.oid AND c.relname = %s AND c.relnamespace = pn.oid) x ON true "
        "WHERE pn.nspname = %s AND p.relname = %s AND p.relkind IN ('r', 'p')",
        [young_ms, name, schema, table],
    )
    row = cursor.fetchone()
    if row is None:
        return None
    pending, is_default, has_default, fks, dependents, busy = row
    partition = Partition(name, None, None, bool(is_default), detach_pending=bool(pending))
    return partition, bool(has_default), list(fks), list(dependents), bool(busy)


def foreign_key_definitions(using: str, schema: str, table: str) -> list[tuple[str, str]]:
    """(name, definition) of the parent's own foreign keys, as ``pg_get_constraintdef`` prints
    them for the current search_path."""
    with _cursor(using) as cursor:
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype = 'f' AND conparentid = 0 ORDER BY conname",
            [sql.qualified(schema, table)],
        )
        return [(name, definition) for name, definition in cursor.fetchall()]


@dataclasses.dataclass(frozen=True)
class RowSecurity:
    """A table's row-level security: the flags and its policies, as PostgreSQL prints them."""

    enabled: bool
    forced: bool
    #: (name, "PERMISSIVE" | "RESTRICTIVE", command, roles, USING text, WITH CHECK text)
    policies: tuple[tuple[str, str, str, tuple[str, ...], str | None, str | None], ...]


def row_security(using: str, schema: str, table: str) -> RowSecurity:
    """The parent's row-level security and its policies (by name), in one round trip."""
    with _cursor(using) as cursor:
        cursor.execute(
            "SELECT c.relrowsecurity, c.relforcerowsecurity, (SELECT json_agg(json_build_array("
            "p.policyname, p.permissive, p.cmd, p.roles, p.qual, p.with_check) "
            "ORDER BY p.policyname) FROM pg_policies p "
            "WHERE p.schemaname = %s AND p.tablename = %s) "
            "FROM pg_class c WHERE c.oid = %s::regclass",
            [schema, table, sql.qualified(schema, table)],
        )
        enabled, forced, rows = cursor.fetchone()
        policies = tuple(
            (name, permissive, cmd, tuple(roles), qual, check)
            for name, permissive, cmd, roles, qual, check in rows or ()
        )
    return RowSecurity(enabled, forced, policies)


def partitions_without_row_security(using: str, schema: str, table: str) -> list[str]:
    """Partitions that lack the row-level security their parent has (read directly, they would
    show every tenant's rows)."""
    with _cursor(using) as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE i.inhparent = %s::regclass "
            "AND p.relrowsecurity AND (NOT c.relrowsecurity OR (p.relforcerowsecurity AND NOT "
            "c.relforcerowsecurity) OR (SELECT count(*) FROM pg_policy WHERE polrelid = c.oid) "
            "< (SELECT count(*) FROM pg_policy WHERE polrelid = p.oid)) ORDER BY 1",
            [sql.qualified(schema, table)],
        )
        return [row[0] for row in cursor.fetchall()]


@dataclasses.dataclass(frozen=True)
class Carried:
    """What a new partition takes over that ``CREATE TABLE (LIKE ...)`` does not copy."""

    #: storage parameters (``pg_class.reloptions``) of the partition nearest the new month
    reloptions: tuple[str, ...] = ()
    #: the parent's table comment
    comment: str | None = None
    #: (column, the parent's identity sequence): numbers rows inserted into the partition
    #: directly, as the parent numbers rows inserted through it (PostgreSQL < 17 does not)
    identity: tuple[tuple[str, str], ...] = ()


def parent_carry(
    using: str, schema: str, table: str
) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """The parts of :class:`Carried` that come from the parent: its comment and its identity
    columns (PostgreSQL < 17), in one round trip."""
    with _cursor(using) as cursor:
        if connections[using].pg_version < 170000:
            cursor.execute(
                "SELECT obj_description(%s::regclass, 'pg_class'), ARRAY(SELECT ARRAY[a.attname, "
                "pg_get_serial_sequence(%s, a.attname)] FROM pg_attribute a "
                "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped "
                "AND a.attidentity <> '' ORDER BY a.attnum)",
                [sql.qualified(schema, table)] * 3,
            )
            comment, pairs = cursor.fetchone()
            identity = tuple((name, sequence) for name, sequence in pairs or () if sequence)
        else:
            cursor.execute(
                "SELECT obj_description(%s::regclass, 'pg_class')", [sql.qualified(schema, table)]
            )
            comment, identity = cursor.fetchone()[0], ()
    return comment, identity


def carried(
    using: str,
    schema: str,
    table: str,
    state: TableState,
    start: dt.datetime,
    parent: tuple[str | None, tuple[tuple[str, str], ...]] | None = None,
) -> Carried:
    """What a new partition of [start, ...) takes over. ``parent``: :func:`parent_carry` of
    the table, when already read; the storage parameters come from ``state`` (read_table)."""
    ordinary = [p for p in state.ranged if p.kind == "r" and p.start is not None]
    before = [p for p in ordinary if p.start <= start]
    nearest = before[-1] if before else (ordinary[0] if ordinary else None)
    reloptions = nearest.reloptions if nearest is not None else ()
    comment, identity = parent if parent is not None else parent_carry(using, schema, table)
    return Carried(reloptions, comment, identity)


def fingerprint(using: str, schema: str, table: str) -> str | None:
    """:func:`sql.definition_fingerprint` of ``schema.table`` now; None when it does not exist.
    Read it before what it covers (a change in between then shows as a mismatch later)."""
    statement, params = sql.definition_fingerprint(schema, table, [])
    with _cursor(using) as cursor:
        cursor.execute(statement, params)
        row = cursor.fetchone()
    return row[0] if row else None


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What new months of a table are built from, as one read found it: ``fingerprint``
    (read first), the table's state, its foreign-key targets, row-level security, and
    :func:`parent_carry`."""

    fingerprint: str
    state: TableState
    referenced: tuple[str, ...]
    row_security: RowSecurity
    parent: tuple[str | None, tuple[tuple[str, str], ...]]


def recorders(using: str, schema: str, default: str) -> list[str]:
    """Recorder triggers of apply runs on ``default``: a run removes its own when it ends; one
    still there with no apply running was left by a run that was killed."""
    with _cursor(using) as cursor:
        cursor.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND tgname LIKE %s "
            "ORDER BY 1",
            [sql.qualified(schema, default), sql.stranger_pattern(default)],
        )
        return [row[0] for row in cursor.fetchall()]


def swap_leftovers(using: str, schema: str, table: str) -> tuple[list[str], list[str]]:
    """What a run killed between a shared swap and its clean-up left on attached partitions:
    (partitions still carrying their bounds CHECK, partitions whose change capture is still
    there)."""
    with _cursor(using) as cursor:
        cursor.execute(
            "SELECT c.relname, k.conname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "LEFT JOIN pg_constraint k ON k.conrelid = c.oid AND k.contype = 'c' "
            "WHERE i.inhparent = %s::regclass AND c.relkind = 'r'",
            [sql.qualified(schema, table)],
        )
        constraints: dict[str, set[str]] = {}
        for name, constraint in cursor.fetchall():
            constraints.setdefault(name, set()).add(constraint)
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r'",
            [schema],
        )
        tables = {row[0] for row in cursor.fetchall()}
    checks = sorted(
        name for name, found in constraints.items() if sql.constraint_name(name, "_bounds") in found
    )
    captures = sorted(name for name in constraints if sql.changes_name(name) in tables)
    return checks, captures
