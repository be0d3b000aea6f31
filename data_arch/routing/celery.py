"""Celery integration: a task sent after a write carries the WAL token; the worker honours it.

Connected when data_arch.routing is imported and Celery is installed; Celery itself is only
imported here. The token travels in the message header ``data_arch_wal``; on the worker each
task runs in its own routing context that starts from it.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from data_arch.routing.state import current_state, routing_context, token_from
from data_arch.routing.wal import token as wal_token

logger = logging.getLogger("data_arch.routing")
HEADER = "data_arch_wal"
_open: dict[str, Any] = {}


def on_before_task_publish(headers: dict | None = None, **kwargs: Any) -> None:
    state = current_state()
    if headers is None or state is None or not (state.required or state.pending):
        return
    token = wal_token(state)
    if token:
        headers[HEADER] = token


def on_task_prerun(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    request = getattr(task, "request", None)
    if getattr(request, "is_eager", False):
        return  # runs in the caller's context: it reads the caller's writes as the caller would
    raw = getattr(request, HEADER, None)
    token: dict[str, int] = {}
    if raw:
        try:
            token = token_from(raw)
        except ValueError as exc:
            logger.warning("task %s: ignored a malformed WAL token header: %s", task_id, exc)
    manager = routing_context(token)
    manager.__enter__()
    _open[task_id or ""] = manager


def on_task_postrun(task_id: str | None = None, **kwargs: Any) -> None:
    manager = _open.pop(task_id or "", None)
    if manager is not None:
        manager.__exit__(None, None, None)


def install() -> bool:
    """Connect the signal handlers if Celery is installed; returns whether it is."""
    if importlib.util.find_spec("celery") is None:
        return False
    from celery import signals

    signals.before_task_publish.connect(on_before_task_publish, weak=False,
                                        dispatch_uid="data_arch.routing.publish")
    signals.task_prerun.connect(on_task_prerun, weak=False, dispatch_uid="data_arch.routing.prerun")
    signals.task_postrun.connect(on_task_postrun, weak=False,
                                 dispatch_uid="data_arch.routing.postrun")
    return True
