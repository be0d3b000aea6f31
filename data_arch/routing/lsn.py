"""PostgreSQL WAL positions (``pg_lsn``) as comparable integers."""

from __future__ import annotations

import re

_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\Z")


def parse_lsn(text: str) -> int:
    """``'16/B374D848'`` -> an int; raises ValueError on anything else."""
    match = _LSN_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not a WAL position (pg_lsn 'X/Y'): {text!r}")
    return (int(match[1], 16) << 32) | int(match[2], 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"
