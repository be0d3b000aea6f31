"""Backfills run in keyset batches with a durable cursor: exactly once, across crashes."""

import json
import signal
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections

from data_arch.backfills import run, status
from data_arch.backfills.models import BackfillCursor, State
from tests.backfills.conftest import counters, manage


def cursor_row(name: str) -> BackfillCursor:
    return BackfillCursor.objects.using("default").get(name=name, tenant="", partition="")


def test_a_backfill_processes_every_row_once_and_records_progress(items):
    items(5000)
    [progress] = run("bf_counter")
    assert counters() == {1: 5000}
    assert progress.state == State.DONE
    assert progress.rows_done == 5000
    assert progress.rows_estimated == 5000
    assert progress.batches >= 1
    # Running it again does nothing: the cursor says it is done.
    run("bf_counter")
    assert counters() == {1: 5000}


def test_max_batches_stops_and_the_next_run_continues_from_the_cursor(items):
    items(1000)
    [progress] = run("bf_fragile", max_batches=3)
    assert progress.state == State.PENDING and progress.batches == 3
    assert 300 <= progress.rows_done < 1000  # the batch size adapts from 100 upwards
    assert counters() == {1: progress.rows_done, 0: 1000 - progress.rows_done}
    run("bf_fragile")
    assert counters() == {1: 1000}


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_processes_every_row_exactly_once(items):
    """SIGKILL the ``manage.py backfill run`` process mid-batch; the rerun finishes the job and
    the counter column shows each row was processed exactly once."""
    rows = 4000
    items(rows)
    kills = 0
    for _ in range(2):  # kill it twice, at different points
        process = manage("backfill", "run", "bf_slow_counter")
        deadline = time.monotonic() + 30
        target = (kills + 1) * rows // 4
        while time.monotonic() < deadline:
            done = BackfillCursor.objects.using("default").filter(
                name="bf_slow_counter").values_list("rows_done", flat=True).first() or 0
            if done >= target:
                break
            assert process.poll() is None, process.communicate()
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        kills += 1
        assert process.returncode == -signal.SIGKILL
        # What committed is exactly what the cursor says: the batch in flight rolled back.
        row = cursor_row("bf_slow_counter")
        assert 0 < row.rows_done < rows
        assert counters() == {1: row.rows_done, 0: rows - row.rows_done}
        assert row.state == State.RUNNING  # as the killed run left it
    process = manage("backfill", "run", "bf_slow_counter", "--format", "json")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    [result] = json.loads(out)
    assert result["state"] == "done" and result["rows_done"] == rows
    assert counters() == {1: rows}


@pytest.mark.slow
def test_pause_and_resume_from_the_command(items):
    rows = 4000
    items(rows)
    process = manage("backfill", "run", "bf_slow_counter")
    deadline = time.monotonic() + 30
    while cursor_row_or_none("bf_slow_counter") is None or cursor_row(
            "bf_slow_counter").rows_done < 400:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.01)
    call_command("backfill", "pause", "bf_slow_counter")
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "bf_slow_counter: paused" in out
    paused = cursor_row("bf_slow_counter")
    assert paused.state == State.PAUSED and 0 < paused.rows_done < rows
    assert counters() == {1: paused.rows_done, 0: rows - paused.rows_done}
    # A paused backfill does not run until it is resumed.
    with pytest.raises(CommandError, match="paused; resume it first"):
        call_command("backfill", "run", "bf_slow_counter")
    call_command("backfill", "resume", "bf_slow_counter")
    call_command("backfill", "run", "bf_slow_counter")
    assert counters() == {1: rows}
    assert cursor_row("bf_slow_counter").state == State.DONE


def cursor_row_or_none(name):
    return BackfillCursor.objects.using("default").filter(name=name).first()


def test_cancel_stops_for_good_until_restart(items):
    items(500)
    run("bf_fragile", max_batches=1)
    call_command("backfill", "cancel", "bf_fragile")
    with pytest.raises(CommandError, match="was cancelled.*--restart"):
        call_command("backfill", "run", "bf_fragile")
    with connections["default"].cursor() as cursor:
        cursor.execute("UPDATE bf_items SET n = 0")
    call_command("backfill", "run", "bf_fragile", "--restart")
    assert counters() == {1: 500}


def test_status_and_list_in_json(items, capsys):
    items(300)
    run("bf_fragile", max_batches=1)
    call_command("backfill", "status", "bf_fragile", "--format", "json")
    [row] = json.loads(capsys.readouterr().out)
    assert row["name"] == "bf_fragile" and row["rows_done"] == 100
    assert row["rows_estimated"] == 300 and row["state"] == "pending"
    assert row["rate"] > 0 and row["eta_seconds"] is not None
    call_command("backfill", "list", "--format", "json")
    names = {b["name"] for b in json.loads(capsys.readouterr().out)}
    assert {"bf_counter", "bf_fragile"} <= names
    assert status("bf_counter")[0].state == "not started"
