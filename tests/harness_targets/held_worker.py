"""Run only by tests/test_harness_signals.py (not collected on its own): a test run that holds
a Celery worker and the services until a signal stops it."""

import time


def test_holds_a_worker_until_stopped(celery_worker):
    print(f"holding worker {celery_worker.pid}", flush=True)
    time.sleep(300)
