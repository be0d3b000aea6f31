"""Every statement partition maintenance runs, in one place. Identifiers are quoted here."""

from __future__ import annotations

import datetime as dt
import hashlib

__all__ = ["default_name", "fit_name", "partition_name", "qualified", "quote"]

MAX_IDENTIFIER = 63


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    return f"{quote(schema)}.{quote(name)}"


def fit_name(base: str, suffix: str) -> str:
    """``base + suffix`` within 63 bytes; a long base is cut and given a stable hash."""
    name = base + suffix
    if len(name.encode()) <= MAX_IDENTIFIER:
        return name
    digest = hashlib.sha1(base.encode()).hexdigest()[:8]
    room = MAX_IDENTIFIER - len(suffix.encode()) - len(digest) - 1
    cut = base.encode()[:room].decode(errors="ignore")
    return f"{cut}_{digest}{suffix}"


def partition_name(table: str, start: dt.datetime) -> str:
    """Stable name of the partition holding the month starting at ``start``: ``table_p2026_01``."""
    return fit_name(table, f"_p{start:%Y_%m}")


def default_name(table: str) -> str:
    return fit_name(table, "_default")


def constraint_name(table: str, suffix: str) -> str:
    return fit_name(table, suffix)


def literal(moment: dt.datetime) -> str:
    """A timestamptz literal in UTC (our values, never user text)."""
    return "'" + moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S+00") + "'"


def create_default(table: str) -> str:
    return f"CREATE TABLE {quote(default_name(table))} PARTITION OF {quote(table)} DEFAULT"


def create_standalone(
    schema: str, parent: str, name: str, column: str, start: dt.datetime, end: dt.datetime
) -> list[str]:
    # LIKE copies columns, defaults, constraints and indexes; ATTACH then adopts matching
    # indexes instead of building new ones. The CHECK lets ATTACH skip scanning the table.
    check = constraint_name(name, "_bounds")
    return [
        (
            f"CREATE TABLE {qualified(schema, name)} (LIKE {qualified(schema, parent)} "
            "INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMMENTS "
            "INCLUDING INDEXES INCLUDING STATISTICS)"
        ),
        (
            f"ALTER TABLE {qualified(schema, name)} ADD CONSTRAINT {quote(check)} CHECK "
            f"({quote(column)} IS NOT NULL AND {quote(column)} >= {literal(start)} "
            f"AND {quote(column)} < {literal(end)})"
        ),
    ]


def attach(schema: str, parent: str, name: str, start: dt.datetime, end: dt.datetime) -> str:
    return (
        f"ALTER TABLE {qualified(schema, parent)} ATTACH PARTITION {qualified(schema, name)} "
        f"FOR VALUES FROM ({literal(start)}) TO ({literal(end)})"
    )


def drop_bounds_check(schema: str, name: str) -> str:
    return (
        f"ALTER TABLE {qualified(schema, name)} DROP CONSTRAINT IF EXISTS "
        f"{quote(constraint_name(name, '_bounds'))}"
    )


def lock_for_attach(schema: str, parent: str, default: str) -> tuple[str, str]:
    """Locks taken before the final move + ATTACH, default partition first.

    ACCESS EXCLUSIVE on the default (ATTACH takes it anyway) is waited for while holding nothing
    on the parent, so writers of existing months never queue behind a wait for a slow reader of
    the default. Then SHARE ROW EXCLUSIVE on the parent holds writers back (readers go on) for
    the few milliseconds of the final move and ATTACH: an insert already routed to the default
    would otherwise fail its partition constraint once ATTACH commits.
    """
    return (
        f"LOCK TABLE {qualified(schema, default)} IN ACCESS EXCLUSIVE MODE",
        f"LOCK TABLE ONLY {qualified(schema, parent)} IN SHARE ROW EXCLUSIVE MODE",
    )


def drain_batch(
    schema: str,
    default: str,
    target: str,
    column: str,
    columns: list[str],
    start: dt.datetime,
    end: dt.datetime,
    batch: int | None,
) -> str:
    """Move up to ``batch`` rows of [start, end) from the default into ``target``, atomically.

    ``batch=None`` moves every such row; only for use under the attach locks, where no row lock
    can be held by anyone else.
    """
    cols = ", ".join(quote(c) for c in columns)
    if batch is None:
        return (
            f"WITH moved AS (DELETE FROM {qualified(schema, default)} WHERE {quote(column)} >= "
            f"{literal(start)} AND {quote(column)} < {literal(end)} RETURNING {cols}) "
            f"INSERT INTO {qualified(schema, target)} ({cols}) SELECT {cols} FROM moved"
        )
    return (
        f"WITH moved AS (DELETE FROM {qualified(schema, default)} WHERE ctid = ANY(ARRAY("
        f"SELECT ctid FROM {qualified(schema, default)} WHERE {quote(column)} >= {literal(start)} "
        f"AND {quote(column)} < {literal(end)} LIMIT {int(batch)} FOR UPDATE SKIP LOCKED)) "
        f"RETURNING {cols}) INSERT INTO {qualified(schema, target)} ({cols}) SELECT {cols} FROM moved"
    )


def detach(schema: str, parent: str, name: str, concurrently: bool) -> str:
    how = " CONCURRENTLY" if concurrently else ""
    return (
        f"ALTER TABLE {qualified(schema, parent)} DETACH PARTITION {qualified(schema, name)}{how}"
    )


def drop(schema: str, name: str) -> str:
    return f"DROP TABLE {qualified(schema, name)}"


def create_schema(schema: str) -> str:
    return f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}"


def set_schema(schema: str, name: str, target_schema: str) -> str:
    return f"ALTER TABLE {qualified(schema, name)} SET SCHEMA {quote(target_schema)}"
