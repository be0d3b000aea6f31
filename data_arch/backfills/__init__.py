"""Zero-downtime data changes: resumable, throttled keyset backfills and a DDL guard.

Importing this package has no side effect beyond defining names; the cursor model lives in the
``data_arch`` app (table ``data_arch_backfill``).
"""

import importlib
from typing import Any

from data_arch.backfills.registry import (
    Backfill,
    BackfillError,
    get_backfill,
    register_backfill,
    registered_backfills,
)

__all__ = [
    "Backfill",
    "BackfillError",
    "BackfillFailed",
    "Batch",
    "Progress",
    "cancel",
    "get_backfill",
    "pause",
    "register_backfill",
    "registered_backfills",
    "resume",
    "run",
    "run_ddl",
    "status",
]

# Names whose modules need the app registry (the cursor model): imported on use.
_LAZY = {
    "BackfillFailed": "data_arch.backfills.runner",
    "Batch": "data_arch.backfills.runner",
    "Progress": "data_arch.backfills.runner",
    "cancel": "data_arch.backfills.runner",
    "pause": "data_arch.backfills.runner",
    "resume": "data_arch.backfills.runner",
    "run": "data_arch.backfills.runner",
    "status": "data_arch.backfills.runner",
    "run_ddl": "data_arch.backfills.ddl",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'data_arch.backfills' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
