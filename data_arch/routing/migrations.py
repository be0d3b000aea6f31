"""Migrations read and write the primary only, and their writes count as this context's."""

from __future__ import annotations

from typing import Any

from data_arch.routing.sets import role_of
from data_arch.routing.state import current_state, set_migrating

__all__ = ["on_post_migrate", "on_pre_migrate"]


def on_pre_migrate(**kwargs: Any) -> None:
    # Per context: a tenant sign-up migrating in one request thread pins no other thread.
    set_migrating(True)


def on_post_migrate(using: str | None = None, **kwargs: Any) -> None:
    set_migrating(False)
    # A migration wrote to the primary (DDL, RunPython): the reads that follow (django-tenants
    # lists tenant schemas right after migrating public) must wait for replicas to replay it.
    if using is not None and role_of(using) == "primary":
        current_state(create=True).note_write(using)
