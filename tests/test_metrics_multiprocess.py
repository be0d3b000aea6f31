"""Counters from two gunicorn workers and a Celery worker, summed by one scrape."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.db import connections
from prometheus_client.parser import text_string_to_metric_families

from data_arch.testing.pytest_plugin import start_celery_worker, stop_celery_worker

pytestmark = [pytest.mark.django_db(transaction=True, databases=["default", "replica"]),
              pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _with_database(url: str, name: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url)._replace(path="/" + name).geturl()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def _events(text: str, name: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name == "data_arch_cache_events_total"
                    and sample.labels.get("name") == name
                    and sample.labels.get("event") in ("hit", "miss")):
                total += sample.value
    return total


def test_two_web_workers_and_a_celery_worker_are_summed(request, tmp_path, redis_cache):
    if shutil.which("gunicorn", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("gunicorn is not installed (extra 'example')")
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    test_db = connections["default"].settings_dict["NAME"]
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "DJANGO_SETTINGS_MODULE": "tests.multiprocess_settings",
        "DATABASE_URL": _with_database(os.environ["DATABASE_URL"], test_db),
        "REPLICA_URL": _with_database(os.environ.get("REPLICA_URL") or os.environ["DATABASE_URL"],
                                      test_db),
        "PYTHONPATH": str(ROOT),
    }
    port = _free_port()
    web = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "example_project.wsgi",
         "--workers", "2", "--bind", f"127.0.0.1:{port}", "--log-level", "warning"],
        cwd=ROOT, env=env, start_new_session=True,
    )
    saved = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # inherited by the Celery worker
    try:
        worker = start_celery_worker(request.config, "--pool=solo", "-Q", "multiprocess",
                                     name="multiprocess")
    finally:
        if saved is None:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR")
        else:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = saved
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(f"{base}/metrics")
                break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.2)
        pids, requests = set(), 0
        while requests < 40 or (len(pids) < 2 and requests < 400):
            pids.add(json.loads(_get(f"{base}/read/"))["pid"])
            requests += 1
        from tests.maintenance.tasks import cache_read

        tasks = 7
        for _ in range(tasks):
            assert cache_read.apply_async(args=["mp-task"], queue="multiprocess").get(timeout=60) == 1
        from data_arch.tasks import refresh_replica_health

        assert refresh_replica_health.apply_async(queue="multiprocess").get(timeout=60)["ok"]
        text = _get(f"{base}/metrics").decode()
        print(f"multiprocess: {requests} requests over {len(pids)} web workers, {tasks} tasks")
        assert len(pids) == 2, pids
        assert _events(text, "mp-web") == requests
        assert _events(text, "mp-task") == tasks
        assert ('data_arch_task_runs_total{outcome="success",'
                'task="data_arch.tasks.refresh_replica_health"} 1.0') in text
        assert "data_arch_partition_months_ahead" in text  # the state gauges, added once
        assert text.count("# TYPE data_arch_partition_months_ahead") == 1
    finally:
        stop_celery_worker(worker)
        os.killpg(web.pid, 15)
        web.wait(20)
