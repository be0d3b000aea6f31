"""The record of each maintenance run, written by the library call whoever started it."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

from django.utils import timezone

logger = logging.getLogger("data_arch.maintenance")

__all__ = ["Run", "last_success", "record_run", "started_within"]


@dataclasses.dataclass
class Run:
    """What the block fills in while it works."""

    job: str
    tenant: str
    counts: dict[str, Any] = dataclasses.field(default_factory=dict)
    outcome: str = "ok"
    error: str = ""
    pk: int | None = None


def _primary() -> str:
    from data_arch import conf

    try:
        return conf.router_settings().primary
    except conf.SettingError:
        return "default"


def _model() -> Any:
    from data_arch.models import MaintenanceRun

    return MaintenanceRun


@contextlib.contextmanager
def record_run(job: str, tenant: str = "", task_id: str = "") -> Iterator[Run]:
    """Record a run of ``job`` for ``tenant`` ("" for shared data) around the block.

    The row is written (on the primary, in its own autocommit statement) when the block starts
    and completed when it ends: ``ok``, ``skipped`` (the block set it) or ``failed`` with the
    error, which is re-raised. A run whose process died stays ``running``: the dead man's switch
    looks for successes, so it is never mistaken for one.
    """
    from data_arch.signals import maintenance_failed

    model, using = _model(), _primary()
    run = Run(job, tenant)
    row = model.objects.using(using).create(
        job=job, tenant=tenant, started_at=timezone.now(), task_id=task_id or "",
        runner=f"{socket.gethostname()}:{os.getpid()}",
    )
    run.pk = row.pk
    try:
        yield run
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        model.objects.using(using).filter(pk=row.pk).update(
            finished_at=timezone.now(), outcome="failed", error=error[:10_000], counts=run.counts
        )
        logger.error("maintenance %s%s failed: %s", job, f" [{tenant}]" if tenant else "", error)
        maintenance_failed.send(sender="data_arch", job=job, tenant=tenant, error=error)
        raise
    model.objects.using(using).filter(pk=row.pk).update(
        finished_at=timezone.now(), outcome=run.outcome, error=run.error, counts=run.counts
    )


def last_success(job: str, using: str | None = None) -> Any:
    """The finish time of ``job``'s latest successful run (any tenant), or None."""
    return (
        _model().objects.using(using or _primary())
        .filter(job=job, outcome="ok")
        .order_by("-finished_at")
        .values_list("finished_at", flat=True)
        .first()
    )


def started_within(
    job: str, tenant: str, seconds: float, exclude_task_id: str = "", using: str | None = None
) -> Any:
    """The start time of a run of ``job`` for ``tenant`` that started in the last ``seconds``
    (not counting runs of task ``exclude_task_id``: a task delivered again after its worker
    died, or retried, is the same run), or None. A skipped run does not count."""
    since = timezone.now() - dt.timedelta(seconds=seconds)
    runs = (
        _model().objects.using(using or _primary())
        .filter(job=job, tenant=tenant, started_at__gte=since)
        .exclude(outcome="skipped")
    )
    if exclude_task_id:
        runs = runs.exclude(task_id=exclude_task_id)
    return runs.order_by("-started_at").values_list("started_at", flat=True).first()
