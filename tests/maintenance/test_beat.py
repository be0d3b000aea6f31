"""Two Celery beats running at once (Celery's default scheduler, then django-celery-beat's
DatabaseScheduler), a real worker and a real broker: each scheduled run happens once."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time

import pytest

from data_arch.models import MaintenanceRun
from data_arch.testing.pytest_plugin import (
    celery_app_name,
    celery_environ,
    start_celery_worker,
    stop_celery_worker,
)

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "replica"]),
    pytest.mark.version_independent,  # Celery beat scheduling
]

SETTINGS = "tests.maintenance.beat_settings"
HEALTH_INTERVAL, WARM_INTERVAL = 3, 10  # as in beat_settings
SCHEDULERS = {
    "default": "celery.beat:PersistentScheduler",
    "database": "django_celery_beat.schedulers:DatabaseScheduler",
}


@pytest.fixture(scope="module")
def beat_worker(request, django_db_setup, django_db_blocker):
    """A worker on the beat tests' queue, with the beats' settings (their intervals)."""
    process = start_celery_worker(
        request.config, "--pool=prefork", "--concurrency=2", "-Q", "beat_tests",
        name="beat-tests", settings_module=SETTINGS,
    )
    yield process
    stop_celery_worker(process)


def _start_beat(config, scheduler: str, folder, name: str) -> tuple[subprocess.Popen, object]:
    log = open(folder / f"{name}.log", "w")  # noqa: SIM115 -- closed by the test
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", celery_app_name(config), "beat",
         "--loglevel=INFO", "-S", scheduler, "-s", str(folder / f"{name}-schedule"),
         "--pidfile", str(folder / f"{name}.pid")],
        env=celery_environ(config, SETTINGS), cwd=str(config.rootpath),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    return process, log


def _sends(folder, name: str, task: str) -> int:
    return (folder / f"{name}.log").read_text().count(f"Sending due task data_arch.{task} ")


def _gaps(starts: list) -> list[float]:
    starts = sorted(starts)
    return [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]


def _row_tenants(count: int, prefix: str) -> list[str]:
    from example_project.customers.models import Client

    clients = []
    for number in range(count):
        client = Client(schema_name=f"{prefix}_{number:03d}", name=f"{prefix} {number}")
        client.auto_create_schema = False
        clients.append(client)
    Client.objects.bulk_create(clients)
    return [c.schema_name for c in clients]


def test_the_database_scheduler_copies_the_entries_and_the_admin_lists_them():
    import json

    from django.contrib.auth.models import User
    from django.test import Client
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import DatabaseScheduler

    from data_arch.celery import beat_schedule
    from example_project.celery import app

    DatabaseScheduler(app=app)  # what `celery beat -S ...DatabaseScheduler` does at start-up
    entries = beat_schedule()
    rows = {row.name: row for row in PeriodicTask.objects.filter(name__in=entries)}
    assert set(rows) == set(entries)
    for name, entry in entries.items():
        assert rows[name].task == entry["task"]
        assert json.loads(rows[name].kwargs) == entry["kwargs"]
        assert rows[name].interval.every == int(entry["schedule"])
        assert json.loads(rows[name].kwargs)["scheduled"] is True
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    page = client.get("/admin/django_celery_beat/periodictask/")
    assert page.status_code == 200
    for name in entries:
        assert name in page.content.decode()


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_two_beats_at_once_do_each_scheduled_run_once(request, beat_worker, tmp_path, scheduler):
    from example_project.customers.models import Client

    keys = _row_tenants(3, f"beat_{scheduler}")
    beats = []
    try:
        for name in ("beat_a", "beat_b"):
            beats.append(_start_beat(request.config, SCHEDULERS[scheduler], tmp_path, name))
            time.sleep(1)  # out of phase by a second: each entry is sent twice a second apart
        time.sleep(2.2 * WARM_INTERVAL + 1)  # two rounds of warming, about seven of health
    finally:
        for process, log in beats:
            process.terminate()
            process.wait(30)
            log.close()
    # Let the worker finish what the beats sent.
    deadline = time.monotonic() + 90
    while MaintenanceRun.objects.filter(outcome="running").exists():
        assert time.monotonic() < deadline, "runs still running 90 s after the beats stopped"
        time.sleep(0.5)

    beats = ("beat_a", "beat_b")
    health_sends = [_sends(tmp_path, name, "refresh_replica_health") for name in beats]
    warm_sends = [_sends(tmp_path, name, "warm_caches") for name in beats]
    health = list(MaintenanceRun.objects.filter(job="replica_health").values_list(
        "started_at", flat=True))
    fan_outs = list(MaintenanceRun.objects.filter(job="warm_caches.fan_out").values_list(
        "started_at", flat=True))
    print(f"{scheduler} scheduler: health sent {health_sends}, ran {len(health)}; "
          f"warming sent {warm_sends}, fanned out {len(fan_outs)}")
    assert min(health_sends) >= 2 and min(warm_sends) >= 1, (health_sends, warm_sends)
    # Every send ran or was skipped; no run of a job came within half its interval of another.
    assert 2 <= len(health) < sum(health_sends)
    assert min(_gaps(health)) >= HEALTH_INTERVAL / 2, _gaps(health)
    assert 1 <= len(fan_outs) < sum(warm_sends)
    assert not _gaps(fan_outs) or min(_gaps(fan_outs)) >= WARM_INTERVAL / 2, _gaps(fan_outs)
    # Each tenant's task of the last round may still be queued (jitter): wait for them all.
    finished = MaintenanceRun.objects.filter(job="warm_caches", tenant__in=keys).exclude(
        outcome="running")
    while finished.count() < len(keys) * len(fan_outs):
        assert time.monotonic() < deadline, finished.count()
        time.sleep(0.5)
    time.sleep(1)  # and nothing more arrives
    for key in keys:
        runs = list(MaintenanceRun.objects.filter(job="warm_caches", tenant=key).values_list(
            "started_at", "outcome"))
        assert len(runs) == len(fan_outs), (key, runs)  # once per round, no more
        # Finished (these row tenants have no shop tables, so the example's warmer fails:
        # the count is what matters here).
        assert "running" not in {outcome for _, outcome in runs}
    Client.objects.filter(schema_name__in=keys).delete()
