"""A backfill run by a real Celery worker that is SIGKILLed mid-run: the task is delivered
again and every row is processed exactly once."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from data_arch.backfills.models import BackfillCursor, State
from data_arch.testing.pytest_plugin import start_celery_worker, stop_celery_worker
from tests.backfills.conftest import counters

pytestmark = [pytest.mark.django_db(transaction=True, databases=["default", "replica"]),
              pytest.mark.slow]

ROWS = 20_000


@pytest.fixture(scope="module")
def backfill_worker(request, django_db_setup, django_db_blocker):
    """One pool child (so the one running the task is known), on a queue of its own."""
    process = start_celery_worker(
        request.config, "--pool=prefork", "--concurrency=1", "-Q", "backfill_tests",
        name="backfill-tests", settings_module="tests.backfills.worker_settings",
    )
    yield process
    stop_celery_worker(process)


def _pool_children(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def test_a_worker_killed_mid_backfill_leaves_the_task_to_finish_every_row_once(
    backfill_worker, items
):
    from data_arch.backfills.tasks import run_backfill

    items(ROWS)
    [child] = _pool_children(backfill_worker.pid)
    result = run_backfill.apply_async(("bf_slow_counter",), queue="backfill_tests")
    rows = BackfillCursor.objects.using("default").filter(name="bf_slow_counter")
    deadline = time.monotonic() + 60
    while (rows.values_list("rows_done", flat=True).first() or 0) < ROWS // 4:
        assert time.monotonic() < deadline, ("the backfill never got going", result.state, result.info)
        time.sleep(0.01)
    os.kill(child, signal.SIGKILL)  # the pool child running the batch
    killed = rows.get()
    assert 0 < killed.rows_done < ROWS and killed.state == State.RUNNING
    [progress] = result.get(timeout=120)
    assert progress["state"] == "done" and progress["rows_done"] == ROWS
    assert counters() == {1: ROWS}  # every row once: none skipped, none twice
