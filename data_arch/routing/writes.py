"""Write detection on primary connections: a context that wrote reads its write afterwards.

The execute wrapper notes *that* the context wrote -- no query; the WAL position is read
lazily, only when a read or a token needs it (:mod:`.wal`). It is the outermost wrapper
(:mod:`data_arch.wiring`), so it sees each statement as the ORM or the caller wrote it.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from data_arch.routing.sets import role_of
from data_arch.routing.state import current_state

__all__ = ["is_write", "watch_callproc", "watch_writes"]

_NOT_WRITES = frozenset({
    "SELECT", "SHOW", "SET", "RESET", "BEGIN", "START", "COMMIT", "END", "ROLLBACK",
    "SAVEPOINT", "RELEASE", "DECLARE", "FETCH", "MOVE", "CLOSE", "VALUES", "TABLE", "LISTEN",
})
_DML = re.compile(r"\b(INSERT|UPDATE|DELETE|MERGE|COPY)\b", re.IGNORECASE)
_HEAD = re.compile(r"[\s(]*([A-Za-z]+)")
_EXPLAIN_ANALYZE = re.compile(r"^\s*EXPLAIN\s*(?:\([^)]*\bANALY[SZ]E\b|ANALY[SZ]E\b)", re.IGNORECASE)
_STATEMENTS = re.compile(r";\s*\S")


def is_write(sql: Any) -> bool:
    """Whether a statement may change data: anything but a plain read.

    ``WITH`` and ``EXPLAIN ANALYZE`` count when they contain DML; several statements in one
    string count when any of them is not a read. A plain ``SELECT`` calling a function that
    writes is not seen (use ``use_primary()`` for those reads, or the statement's own result).
    """
    text = sql if isinstance(sql, str) else str(sql)
    if _STATEMENTS.search(text):
        # Several statements (or a semicolon inside a literal): judge each part; erring
        # towards "a write" only costs a read on the primary.
        return any(_one_is_write(part) for part in text.split(";") if part.strip())
    return _one_is_write(text)


def _one_is_write(text: str) -> bool:
    match = _HEAD.match(text)
    if match is None:
        return True
    head = match[1].upper()
    if head == "WITH":
        return bool(_DML.search(text))
    if head == "EXPLAIN":
        return bool(_EXPLAIN_ANALYZE.match(text) and _DML.search(text))
    return head not in _NOT_WRITES


def watch_writes(execute, sql, params, many, context):
    """Execute wrapper: after a successful write on a primary, note it in the routing state."""
    result = execute(sql, params, many, context)
    alias = context["connection"].alias
    if role_of(alias) == "primary" and is_write(sql):
        current_state(create=True).note_write(alias)
    return result




class _NotesCallproc:
    """``callproc`` bypasses execute wrappers; a procedure called on a primary may write."""

    def callproc(self, procname: str, params: Any = None, kparams: Any = None) -> Any:
        result = super().callproc(procname, params, kparams)  # type: ignore[misc]
        if role_of(self.db.alias) == "primary":  # type: ignore[attr-defined]
            current_state(create=True).note_write(self.db.alias)  # type: ignore[attr-defined]
        return result


@functools.cache
def _cursor_classes() -> tuple[type, type]:
    from django.db.backends.utils import CursorDebugWrapper, CursorWrapper

    return (
        type("CursorWrapper", (_NotesCallproc, CursorWrapper), {}),
        type("CursorDebugWrapper", (_NotesCallproc, CursorDebugWrapper), {}),
    )


def watch_callproc(connection: Any) -> None:
    """Make ``connection``'s cursors note a ``callproc`` on a primary as a write (idempotent)."""
    if getattr(connection, "_data_arch_callproc", False):
        return
    plain, debug = _cursor_classes()
    connection.make_cursor = lambda cursor: plain(cursor, connection)
    connection.make_debug_cursor = lambda cursor: debug(cursor, connection)
    connection._data_arch_callproc = True
