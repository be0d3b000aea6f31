"""The dead man's switch: data_arch.W010 when scheduled maintenance stopped succeeding."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core import checks
from django.db import DatabaseError, connections
from django.utils import timezone


def _intervals() -> dict[str, float]:
    from data_arch import conf

    return conf.celery_settings().intervals()


def stale_jobs(using: str = "default", now: dt.datetime | None = None) -> dict[str, Any]:
    """job -> the finish time of its last successful run (None: never) for every scheduled
    job whose last success is older than ``CELERY.STALE_AFTER`` (default 2 x its interval)."""
    from data_arch import conf
    from data_arch.maintenance.records import last_success

    config = conf.celery_settings()
    now = now or timezone.now()
    stale = {}
    for job, interval in _intervals().items():
        last = last_success(job, using)
        if last is None or (now - last).total_seconds() > config.stale_seconds(interval):
            stale[job] = last
    return stale


@checks.register(checks.Tags.database)
def check_maintenance_runs(app_configs: Any = None, databases: Any = None, **kwargs: Any):
    from data_arch import conf

    if not databases or "default" not in databases:
        return []
    try:
        conf.celery_settings()
    except conf.SettingError:
        return []  # data_arch.E001 reports it
    try:
        stale = stale_jobs("default")
    except DatabaseError:
        connections["default"].close()
        return []  # not migrated yet: nothing to judge
    messages = []
    for job, last in sorted(stale.items()):
        when = "has never succeeded" if last is None else f"last succeeded at {last:%Y-%m-%d %H:%M:%S %Z}"
        messages.append(checks.Warning(
            f"scheduled maintenance {job!r} {when}: is Celery beat running, and its worker?",
            hint="Merge data_arch.celery.beat_schedule() into CELERY_BEAT_SCHEDULE, run a beat "
            "and a worker, and look at the failed runs in the admin (Maintenance runs).",
            id="data_arch.W010",
        ))
    return messages
