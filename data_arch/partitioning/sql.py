"""Every statement partition maintenance runs, in one place. Identifiers are quoted here."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import zlib

__all__ = ["default_name", "fit_name", "partition_name", "qualified", "quote"]

MAX_IDENTIFIER = 63

#: First key of every advisory lock partition maintenance takes.
LOCK_CLASS = zlib.crc32(b"data_arch.partitions") & 0x7FFFFFFF


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
            "INCLUDING INDEXES INCLUDING STATISTICS INCLUDING GENERATED)"
        ),
        (
            f"ALTER TABLE {qualified(schema, name)} ADD CONSTRAINT {quote(check)} CHECK "
            f"({quote(column)} IS NOT NULL AND {quote(column)} >= {literal(start)} "
            f"AND {quote(column)} < {literal(end)})"
        ),
    ]


_RELOPTION = re.compile(r"^([a-z_][a-z0-9_]*)=(.*)$", re.DOTALL)


def text_literal(value: str) -> str:
    """A string literal (standard_conforming_strings, on since PostgreSQL 9.1)."""
    return "'" + value.replace("'", "''") + "'"


def carry(schema: str, name: str, carried: object) -> list[str]:
    """What LIKE does not copy onto a new partition: storage parameters, the table comment, the
    identity sequence as the column default. The values are PostgreSQL's own catalog text."""
    target = qualified(schema, name)
    statements = []
    options = []
    for option in getattr(carried, "reloptions", ()):
        match = _RELOPTION.match(option)
        if match:
            options.append(f"{match.group(1)} = {text_literal(match.group(2))}")
    if options:
        statements.append(f"ALTER TABLE {target} SET ({', '.join(options)})")
    comment = getattr(carried, "comment", None)
    if comment is not None:
        statements.append(f"COMMENT ON TABLE {target} IS {text_literal(comment)}")
    for column, sequence in getattr(carried, "identity", ()):
        statements.append(
            f"ALTER TABLE {target} ALTER COLUMN {quote(column)} SET DEFAULT "
            f"nextval({text_literal(sequence)}::regclass)"
        )
    return statements


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


def lock_timeout(milliseconds: int) -> str:
    return f"SET LOCAL lock_timeout = '{int(milliseconds)}ms'"


def try_table_lock(schema: str, table: str) -> str:
    """A transaction-scoped try-lock per (schema, table): safe behind a transaction pooler."""
    key = zlib.crc32(f"{schema}.{table}".encode()) - 2**31
    return f"SELECT pg_try_advisory_xact_lock({LOCK_CLASS}, {key})"


def try_table_lock_with_timeout(schema: str, table: str, milliseconds: int) -> str:
    """:func:`try_table_lock` and :func:`lock_timeout` in one round trip: the transaction-local
    lock_timeout is set whatever the try-lock answers (a busy table's transaction is rolled
    back, and the setting with it)."""
    key = zlib.crc32(f"{schema}.{table}".encode()) - 2**31
    return (
        f"SELECT pg_try_advisory_xact_lock({LOCK_CLASS}, {key}), "
        f"set_config('lock_timeout', '{int(milliseconds)}ms', true)"
    )


def definition_fingerprint(schema: str, table: str, ours: list[str]) -> tuple[str, list]:
    """One value that changes whenever something a new month is built from changes: the
    partitions (bounds, pending detach, kind, storage parameters), except ``ours`` (the ones
    this run attached), the tables the foreign keys point at, row-level security and its
    policies, the comment, the identity columns and their sequences. Read under the parent's
    lock (which each of those changes takes, but a partition's new storage parameters), it is
    stable until the transaction ends."""
    # Rows and arrays printed as text quote what they hold: no two catalog states print alike.
    statement = (
        "SELECT md5(ROW("
        "(SELECT array_agg(ROW(i.inhrelid, i.inhdetachpending, c.relkind, c.relname, "
        "c.relpartbound::text, c.reloptions) ORDER BY i.inhrelid) "
        "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = p.oid "
        "AND c.relname <> ALL(%s::text[])), "
        "(SELECT array_agg(DISTINCT k.confrelid ORDER BY k.confrelid) FROM pg_constraint k "
        "WHERE k.conrelid = p.oid AND k.contype = 'f'), "
        "p.relrowsecurity, p.relforcerowsecurity, "
        "(SELECT array_agg(ROW(o.oid, o.polname, o.polcmd, o.polpermissive, o.polroles, "
        "o.polqual::text, o.polwithcheck::text) ORDER BY o.oid) "
        "FROM pg_policy o WHERE o.polrelid = p.oid), "
        "obj_description(p.oid, 'pg_class'), "
        "(SELECT array_agg(ROW(a.attnum, a.attname, a.attidentity, "
        "pg_get_serial_sequence(%s, a.attname)) ORDER BY a.attnum) FROM pg_attribute a "
        "WHERE a.attrelid = p.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "AND a.attidentity <> '')"
        ")::text) FROM pg_class p WHERE p.oid = to_regclass(%s)"
    )
    return statement, [list(ours), qualified(schema, table), qualified(schema, table)]


def lock_in_dml_order(
    schema: str, parent: str, default: str | None, referenced: list[str], parent_mode: str
) -> list[str]:
    """Locks for a step that changes the partition set, in the order DML takes them.

    Tables the parent references come first (an ATTACH validates foreign keys under SHARE ROW
    EXCLUSIVE on them, and a delete there locks them before it reaches our table), then the
    parent, then the default partition: ``UPDATE ... WHERE id = %s`` locks the parent and then
    every partition, the default last. Taking them in any other order is a deadlock.
    """
    statements = [f"LOCK TABLE {name} IN SHARE ROW EXCLUSIVE MODE" for name in referenced]
    statements.append(f"LOCK TABLE ONLY {qualified(schema, parent)} IN {parent_mode} MODE")
    if default is not None:
        statements.append(f"LOCK TABLE {qualified(schema, default)} IN ACCESS EXCLUSIVE MODE")
    return statements


def capture_name(name: str) -> str:
    return fit_name(name, "_capture")


def changes_name(name: str) -> str:
    return fit_name(name, "_changes")


def _in_range(row: str, column: str, start: dt.datetime, end: dt.datetime) -> str:
    return (
        f"{row}.{quote(column)} >= {literal(start)} AND {row}.{quote(column)} < {literal(end)}"
    )


def _row(prefix: str, columns: list[str]) -> str:
    return "(" + ", ".join(f"{prefix}.{quote(c)}" for c in columns) + ")"


def create_capture(
    schema: str,
    default: str,
    name: str,
    key: list[str],
    column: str,
    start: dt.datetime,
    end: dt.datetime,
) -> list[str]:
    """Record the key of every row of [start, end) the default gains, changes or loses.

    Installed before the copy starts, so the final swap re-copies exactly those rows. SECURITY
    DEFINER: the application role that writes the default needs no rights on the change table.
    """
    changes, function = qualified(schema, changes_name(name)), qualified(schema, capture_name(name))
    keys = ", ".join(quote(c) for c in key)
    return [
        (
            f"CREATE TABLE IF NOT EXISTS {changes} AS SELECT {keys} FROM "
            f"{qualified(schema, default)} WITH NO DATA"
        ),
        (
            f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql "
            "SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$ BEGIN "
            f"IF TG_OP <> 'INSERT' THEN IF {_in_range('OLD', column, start, end)} THEN "
            f"INSERT INTO {changes} VALUES {_row('OLD', key)}; END IF; END IF; "
            f"IF TG_OP <> 'DELETE' THEN IF {_in_range('NEW', column, start, end)} THEN "
            f"INSERT INTO {changes} VALUES {_row('NEW', key)}; END IF; END IF; "
            "RETURN NULL; END $body$"
        ),
        (
            f"CREATE TRIGGER {quote(capture_name(name))} AFTER INSERT OR UPDATE OR DELETE ON "
            f"{qualified(schema, default)} FOR EACH ROW EXECUTE FUNCTION {function}()"
        ),
    ]


def copy_batch(
    schema: str,
    default: str,
    name: str,
    key: list[str],
    column: str,
    columns: list[str],
    start: dt.datetime,
    end: dt.datetime,
    batch: int,
) -> str:
    """Copy the next ``batch`` rows of [start, end), in key order, from the default into ``name``.

    The rows stay in the default (readers keep seeing them); the copy resumes after the highest
    key already in ``name``, so an interrupted drain goes on where it stopped.
    """
    cols = ", ".join(quote(c) for c in columns)
    order = ", ".join(f"{quote(c)} DESC" for c in key)
    target = qualified(schema, name)
    last = f"(SELECT {', '.join(quote(c) for c in key)} FROM {target} ORDER BY {order} LIMIT 1)"
    return (
        f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {qualified(schema, default)} d "
        f"WHERE {_in_range('d', column, start, end)} AND (NOT EXISTS (SELECT 1 FROM {target}) "
        f"OR {_row('d', key)} > {last}) ORDER BY {', '.join('d.' + quote(c) for c in key)} "
        f"LIMIT {int(batch)}"
    )


def recopy(
    schema: str,
    default: str,
    name: str,
    key: list[str],
    column: str,
    columns: list[str],
    start: dt.datetime,
    end: dt.datetime,
) -> list[str]:
    """Under the swap's locks: copy again the rows of [start, end) changed since the copy began,
    and stop recording changes (the capture trigger goes before the default is emptied, or it
    would record every row deleted)."""
    cols = ", ".join(quote(c) for c in columns)
    target, source = qualified(schema, name), qualified(schema, default)
    changes = qualified(schema, changes_name(name))
    keys = ", ".join(quote(c) for c in key)
    return [
        analyze_changes(schema, name),
        f"DELETE FROM {target} t WHERE {_row('t', key)} IN (SELECT {keys} FROM {changes})",
        (
            f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {source} d WHERE "
            f"{_in_range('d', column, start, end)} AND {_row('d', key)} IN "
            f"(SELECT {keys} FROM {changes})"
        ),
        f"DROP TRIGGER {quote(capture_name(name))} ON {source}",
    ]


def analyze_changes(schema: str, name: str) -> str:
    # Never analyzed, the change table looks big to the planner, which would then scan the
    # whole default (under the swap's lock) instead of looking its rows up by key.
    return f"ANALYZE {qualified(schema, changes_name(name))}"


def drop_capture(schema: str, name: str) -> list[str]:
    return [
        f"DROP FUNCTION IF EXISTS {qualified(schema, capture_name(name))}()",
        f"DROP TABLE IF EXISTS {qualified(schema, changes_name(name))}",
    ]


def swap(
    schema: str,
    default: str,
    name: str,
    key: list[str],
    column: str,
    columns: list[str],
    start: dt.datetime,
    end: dt.datetime,
) -> list[str]:
    """Under the attach locks: re-copy the rows changed since the copy began, empty the month
    from the default, and remove the capture (ATTACH follows in the same transaction)."""
    source = qualified(schema, default)
    return [
        # Django's foreign keys are DEFERRABLE INITIALLY DEFERRED: checks queued until commit
        # would make the ATTACH below fail ("pending trigger events").
        "SET CONSTRAINTS ALL IMMEDIATE",
        *recopy(schema, default, name, key, column, columns, start, end),
        # Emptying the month: when the default holds nothing else, TRUNCATE (no per-row work
        # under the lock); otherwise a DELETE of the month's rows.
        (
            f"DO $swap$ BEGIN IF EXISTS (SELECT 1 FROM {source} d WHERE NOT "
            f"({_in_range('d', column, start, end)})) THEN DELETE FROM {source} d WHERE "
            f"{_in_range('d', column, start, end)}; ELSE TRUNCATE {source}; END IF; END $swap$"
        ),
        *drop_capture(schema, name),
    ]


def stranger_name(default: str, run: str) -> str:
    """The recorder of one apply run (``run``: its token); every run has its own, so no run
    ever replaces or drops the recorder another run's TRUNCATE relies on."""
    return fit_name(default, f"_stranger_{run}")


def strangers_name(default: str, run: str) -> str:
    return fit_name(default, f"_strangers_{run}")


#: LIKE pattern of every run's recorder trigger on ``default`` (status reports leftovers).
def stranger_pattern(default: str) -> str:
    return fit_name(default, "_stranger_").replace("_", "\\_") + "%"


def _in_any(row: str, column: str, ranges: list[tuple[dt.datetime, dt.datetime]]) -> str:
    return "(" + " OR ".join(f"({_in_range(row, column, s, e)})" for s, e in ranges) + ")"


def create_stranger_capture(
    schema: str,
    default: str,
    run: str,
    key: list[str],
    column: str,
    ranges: list[tuple[dt.datetime, dt.datetime]],
) -> list[str]:
    """Record the key of every row the default gains outside the months being drained (a NULL
    key counts as outside): the rows a shared swap must keep when it empties the default."""
    strangers = qualified(schema, strangers_name(default, run))
    function = qualified(schema, stranger_name(default, run))
    return [
        (
            f"CREATE TABLE IF NOT EXISTS {strangers} AS SELECT "
            f"{', '.join(quote(c) for c in key)} FROM {qualified(schema, default)} WITH NO DATA"
        ),
        (
            f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql "
            "SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$ BEGIN "
            f"IF {_in_any('NEW', column, ranges)} IS NOT TRUE THEN "
            f"INSERT INTO {strangers} VALUES {_row('NEW', key)}; END IF; RETURN NULL; END $body$"
        ),
        (
            f"CREATE OR REPLACE TRIGGER {quote(stranger_name(default, run))} AFTER INSERT OR UPDATE "
            f"ON {qualified(schema, default)} FOR EACH ROW EXECUTE FUNCTION {function}()"
        ),
    ]


#: A recorder whose run has not beaten for this long belongs to a run that was killed.
RECORDER_SILENCE_SECONDS = 600


def recorder_heartbeat(schema: str, default: str, run: str) -> str:
    """Stamp the run's recorder with the server's clock (its table's comment)."""
    table = qualified(schema, strangers_name(default, run))
    return (
        "DO $beat$ BEGIN EXECUTE format('COMMENT ON TABLE %s IS %L', "
        f"{text_literal(table)}, extract(epoch FROM now())::bigint::text); END $beat$"
    )


def silent_recorders(schema: str, default: str) -> str:
    """The run tokens of recorders on ``default`` silent for RECORDER_SILENCE_SECONDS."""
    prefix = fit_name(default, "_stranger_")
    return (
        "SELECT substr(t.tgname, %(cut)s) FROM pg_trigger t WHERE t.tgrelid = "
        f"{text_literal(qualified(schema, default))}::regclass AND t.tgname LIKE "
        f"{text_literal(stranger_pattern(default))} AND coalesce((SELECT "
        "obj_description(c.oid, 'pg_class') FROM pg_class c WHERE c.relnamespace = "
        f"{text_literal(schema)}::regnamespace AND c.relname = replace(t.tgname, "
        f"{text_literal(prefix)}, {text_literal(fit_name(default, '_strangers_'))})), '0')"
        f"::bigint < extract(epoch FROM now()) - {RECORDER_SILENCE_SECONDS}"
    ).replace("%(cut)s", str(len(prefix) + 1))


def drop_stranger_capture(schema: str, default: str, run: str) -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS {quote(stranger_name(default, run))} ON {qualified(schema, default)}",
        f"DROP FUNCTION IF EXISTS {qualified(schema, stranger_name(default, run))}()",
        f"DROP TABLE IF EXISTS {qualified(schema, strangers_name(default, run))}",
    ]


def holds_only(
    schema: str,
    default: str,
    run: str,
    key: list[str],
    column: str,
    ranges: list[tuple[dt.datetime, dt.datetime]],
) -> str:
    """Whether every row of the default belongs to one of ``ranges`` or was recorded by the
    stranger capture."""
    keys = ", ".join(quote(c) for c in key)
    return (
        f"SELECT NOT EXISTS (SELECT 1 FROM {qualified(schema, default)} d WHERE "
        f"{_in_any('d', column, ranges)} IS NOT TRUE AND {_row('d', key)} NOT IN "
        f"(SELECT {keys} FROM {qualified(schema, strangers_name(default, run))}))"
    )


def empty_default(
    schema: str,
    default: str,
    run: str,
    key: list[str],
    column: str,
    columns: list[str],
    ranges: list[tuple[dt.datetime, dt.datetime]],
) -> list[str]:
    """Empty the default of every drained month at once: TRUNCATE, keeping the few rows that
    arrived outside those months meanwhile (recorded by the stranger capture)."""
    cols = ", ".join(quote(c) for c in columns)
    source, kept = qualified(schema, default), quote("data_arch_kept")
    keys = ", ".join(quote(c) for c in key)
    return [
        f"DROP TRIGGER {quote(stranger_name(default, run))} ON {source}",
        (
            f"CREATE TEMPORARY TABLE {kept} ON COMMIT DROP AS SELECT {cols} FROM {source} d "
            f"WHERE {_row('d', key)} IN (SELECT {keys} FROM "
            f"{qualified(schema, strangers_name(default, run))}) AND {_in_any('d', column, ranges)} "
            "IS NOT TRUE"
        ),
        f"TRUNCATE {source}",
        f"INSERT INTO {source} ({cols}) SELECT {cols} FROM {kept}",
        f"DROP FUNCTION {qualified(schema, stranger_name(default, run))}()",
        f"DROP TABLE {qualified(schema, strangers_name(default, run))}",
    ]


def move_all(
    schema: str,
    default: str,
    target: str,
    column: str,
    columns: list[str],
    start: dt.datetime,
    end: dt.datetime,
) -> str:
    """Move every row of [start, end) from the default into ``target`` in one statement."""
    cols = ", ".join(quote(c) for c in columns)
    return (
        f"WITH moved AS (DELETE FROM {qualified(schema, default)} d WHERE "
        f"{_in_range('d', column, start, end)} RETURNING {cols}) "
        f"INSERT INTO {qualified(schema, target)} ({cols}) SELECT {cols} FROM moved"
    )


def copy_row_security(schema: str, name: str, security: object) -> list[str]:
    """The parent's row-level security on a new partition: the flags and every policy.

    LIKE copies neither, and a partition read directly (``SELECT ... FROM table_p2026_01``)
    applies only its own policies. The expressions are PostgreSQL's own ``pg_policies`` text.
    """
    enabled = getattr(security, "enabled", False)
    if not enabled:
        return []
    target = qualified(schema, name)
    statements = [f"ALTER TABLE {target} ENABLE ROW LEVEL SECURITY"]
    if getattr(security, "forced", False):
        statements.append(f"ALTER TABLE {target} FORCE ROW LEVEL SECURITY")
    for policy, permissive, command, roles, using, check in getattr(security, "policies", ()):
        to = ", ".join("PUBLIC" if r == "public" else quote(r) for r in roles) or "PUBLIC"
        statement = f"CREATE POLICY {quote(policy)} ON {target} AS {permissive} FOR {command} TO {to}"
        if using is not None:
            statement += f" USING ({using})"
        if check is not None:
            statement += f" WITH CHECK ({check})"
        statements.append(statement)
    return statements


def add_constraint(schema: str, table: str, name: str, definition: str) -> str:
    """``definition`` comes from ``pg_get_constraintdef``: PostgreSQL's own text, not user input."""
    return f"ALTER TABLE {qualified(schema, table)} ADD CONSTRAINT {quote(name)} {definition}"


def drop_foreign_key(schema: str, name: str, constraint: str) -> str:
    return f"ALTER TABLE {qualified(schema, name)} DROP CONSTRAINT {quote(constraint)}"


def finalize_detach(schema: str, parent: str, name: str) -> str:
    return (
        f"ALTER TABLE {qualified(schema, parent)} DETACH PARTITION {qualified(schema, name)} "
        "FINALIZE"
    )


def detach(schema: str, parent: str, name: str, concurrently: bool) -> str:
    how = " CONCURRENTLY" if concurrently else ""
    return (
        f"ALTER TABLE {qualified(schema, parent)} DETACH PARTITION {qualified(schema, name)}{how}"
    )


def drop(schema: str, name: str, cascade: bool = False) -> str:
    return f"DROP TABLE {qualified(schema, name)}{' CASCADE' if cascade else ''}"


def lock_detached(schema: str, name: str) -> str:
    """A detached table, locked before its dependents are compared with the plan's: no view can
    be created on it between that comparison and the drop."""
    return f"LOCK TABLE {qualified(schema, name)} IN ACCESS EXCLUSIVE MODE"


def create_schema(schema: str) -> str:
    return f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}"


def set_schema(schema: str, name: str, target_schema: str) -> str:
    return f"ALTER TABLE {qualified(schema, name)} SET SCHEMA {quote(target_schema)}"
