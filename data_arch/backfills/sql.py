"""The SQL backfills send, in one place: identifiers quoted, values as parameters."""

from __future__ import annotations

__all__ = [
    "KEY_INDEX",
    "NEXT_KEYS",
    "WAL_POSITION",
    "qualified",
    "quote",
]


def quote(name: str) -> str:
    """A double-quoted identifier."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ValueError(f"invalid identifier {name!r}")
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, table: str) -> str:
    return f"{quote(schema)}.{quote(table)}"


#: The column, its type, whether the relation is partitioned, and the indexes led by the column:
#: (is unique, number of key columns, other key column names).
KEY_INDEX = """
SELECT a.attnum, format_type(a.atttypid, a.atttypmod), c.relkind = 'p', c.oid,
       coalesce(array_agg(array[x.indisunique::text, x.indnkeyatts::text])
                FILTER (WHERE x.indexrelid IS NOT NULL), '{}')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = %(column)s AND NOT a.attisdropped
LEFT JOIN pg_index x ON x.indrelid = c.oid AND x.indkey[0] = a.attnum AND x.indpred IS NULL
     AND x.indexprs IS NULL
WHERE n.nspname = %(schema)s AND c.relname = %(table)s AND c.relkind IN ('r', 'p')
GROUP BY a.attnum, a.atttypid, a.atttypmod, c.relkind, c.oid
"""

#: The partitions of a partitioned table (leaf tables only).
PARTITIONS = """
SELECT c.relname FROM pg_partition_tree(%s::regclass) t JOIN pg_class c ON c.oid = t.relid
WHERE t.isleaf ORDER BY c.relname
"""

WAL_POSITION = "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn"

VACUUMING = "SELECT EXISTS (SELECT 1 FROM pg_stat_progress_vacuum WHERE relid = %s)"

SET_TIMEOUTS = (
    "SELECT set_config('lock_timeout', %(lock)s, true), "
    "set_config('statement_timeout', %(statement)s, true)"
)


def _range(key: str, cast: str, first: bool) -> str:
    upper = f"{quote(key)} <= %(upper)s::{cast}"
    return f" WHERE {upper}" if first else f" WHERE {quote(key)} > %(after)s::{cast} AND {upper}"


def next_keys(table: str, key: str, cast: str, first: bool) -> str:
    """The next batch's keys of a table backfill: after %(after)s (unless ``first``), up to
    %(upper)s."""
    return (f"SELECT {quote(key)} FROM {table}{_range(key, cast, first)} ORDER BY {quote(key)} "
            "LIMIT %(limit)s")


def estimate(table: str, key: str, cast: str, first: bool) -> str:
    return f"EXPLAIN (FORMAT JSON) SELECT {quote(key)} FROM {table}{_range(key, cast, first)}"


def max_key(table: str, key: str) -> str:
    return f"SELECT max({quote(key)}) FROM {table}"


NEXT_KEYS = next_keys

#: A pending cursor for a backfill (kept as it is when one exists).
ENQUEUE = (
    "INSERT INTO data_arch_backfill (name, tenant, partition, state, rows_done, batches, "
    "batch_size, seconds, throttled_seconds, lock_timeouts, max_lag_bytes, error, created_at, "
    "updated_at) VALUES (%(name)s, %(tenant)s, '', 'pending', 0, 0, 0, 0, 0, 0, 0, '', now(), "
    "now()) ON CONFLICT (name, tenant, partition) DO NOTHING"
)
