"""Celery integration: a task sent after a write carries the WAL token; the worker honours it.

Connected by :func:`data_arch.wiring.install` when Celery is installed; Celery itself is only
imported here. The token travels in the message header ``data_arch_wal``; on the worker each
task runs in its own routing context that starts from it, so its reads see the sender's
writes: on a replica that has replayed them, else on the primary. An eager task
(``.apply()``, ``task_always_eager``) runs in the caller's own context.

:func:`replica_or_retry` is the other policy for tasks that need not run at once: instead of
reading the primary, the task is retried after a short delay until a replica has caught up,
for at most ``max_wait`` seconds.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
from collections.abc import Callable
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


def replicas_caught_up() -> bool:
    """Whether, for every position the current context must see, a replica has replayed it
    (True when there is nothing to wait for). Does not wait."""
    from data_arch.routing.router import pick_replica
    from data_arch.routing.sets import set_for_alias

    state = current_state()
    if state is None or not state.required:
        return True
    for primary, required in state.required.items():
        rset = set_for_alias(primary)
        if rset is None or not rset.replicas:
            continue
        if pick_replica(rset, set(), required, state, wait=False) is None:
            return False
    return True


def replica_or_retry(
    func: Callable[..., Any] | None = None, *, delay: float = 0.5, max_wait: float = 30.0
) -> Any:
    """Task decorator (under ``@shared_task``): a task that carries a WAL token no replica has
    replayed yet is retried after ``delay`` seconds instead of reading the primary; after
    ``max_wait`` seconds of retries it runs anyway, reading the primary as usual.

    ::

        @shared_task
        @replica_or_retry(delay=0.5, max_wait=30)
        def rebuild_report(account_id): ...
    """
    if delay <= 0 or max_wait < delay:
        raise ValueError(f"replica_or_retry needs 0 < delay <= max_wait, got {delay}, {max_wait}")
    attempts = math.ceil(max_wait / delay)

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            from celery import current_task

            request = getattr(current_task, "request", None)
            if request is not None and not request.is_eager and not replicas_caught_up():
                if (request.retries or 0) < attempts:
                    raise current_task.retry(countdown=delay, max_retries=attempts)
                logger.info("task %s: no replica caught up in %ss; reading the primary",
                            request.id, max_wait)
            return function(*args, **kwargs)

        return run

    return decorate(func) if func is not None else decorate


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
