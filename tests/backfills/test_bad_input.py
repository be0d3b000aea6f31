"""Bad input gets a clear error naming what was wrong, and nothing is half-applied."""

import re

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections

from data_arch.backfills import BackfillError, BackfillFailed, register_backfill, run
from data_arch.backfills.models import BackfillCursor, State
from tests.backfills.conftest import counters


def test_an_unknown_backfill_name_is_a_command_error_naming_it(db):
    with pytest.raises(CommandError, match=r"NAME: unknown backfill 'nope'; registered: .*'bf_counter'"):
        call_command("backfill", "run", "nope")
    with pytest.raises(BackfillError, match="unknown backfill 'nope'"):
        run("nope")


def test_a_missing_name_and_a_bad_max_batches_are_command_errors(db):
    with pytest.raises(CommandError, match="backfill run needs NAME"):
        call_command("backfill", "run")
    with pytest.raises(CommandError, match="--max-batches must be >= 1, got 0"):
        call_command("backfill", "run", "bf_counter", "--max-batches", "0")


def test_registration_errors_name_the_argument():
    with pytest.raises(BackfillError, match="exactly one of queryset_or_model= and table="):
        register_backfill("x", batch_sql_or_callable="SELECT 1")
    with pytest.raises(BackfillError, match="batch_sql_or_callable must be SQL text or a callable"):
        register_backfill("x", table="t", batch_sql_or_callable="  ")
    with pytest.raises(BackfillError, match="batch_size must be >= 1, got 0"):
        register_backfill("x", table="t", batch_sql_or_callable="SELECT 1", batch_size=0)
    with pytest.raises(BackfillError, match="already registered"):
        register_backfill("bf_counter", table="other", batch_sql_or_callable="SELECT 1")


@pytest.mark.parametrize("name, why", [
    ("bf_unindexed", "key column 'pad' is not indexed"),
    ("bf_not_unique", "key column 'grp' is not unique"),
])
def test_a_key_that_is_not_unique_and_indexed_is_refused_before_any_work(items, name, why):
    items(100)
    with pytest.raises(CommandError, match=why + ".*primary key, or a column with a UNIQUE index"):
        call_command("backfill", "run", name)
    assert counters() == {0: 100}
    assert not BackfillCursor.objects.using("default").filter(name=name).exists()


def test_a_missing_table_is_refused(committed):
    with pytest.raises(BackfillError, match=r"table public\.bf_items does not exist"):
        run("bf_counter")


def test_a_batch_that_raises_stops_there_reports_it_and_resumes_from_it_after_a_fix(items):
    items(1000)
    with connections["default"].cursor() as cursor:
        cursor.execute("UPDATE bf_items SET pad = 'poison' WHERE id = 450")
    with pytest.raises(CommandError) as raised:
        call_command("backfill", "run", "bf_fragile")
    found = re.search(r"'bf_fragile' stopped at the batch of (\d+) rows id (\d+)\.\.(\d+): "
                      r"ValueError: row 450 is poisoned", str(raised.value))
    assert found, raised.value
    size, first, last = map(int, found.groups())
    assert first <= 450 <= last and last - first + 1 == size
    row = BackfillCursor.objects.using("default").get(name="bf_fragile")
    assert row.state == State.FAILED and "row 450 is poisoned" in row.error
    assert row.position == first - 1 and row.rows_done == first - 1
    # The failed batch changed rows before raising: all of it was rolled back.
    assert counters() == {1: first - 1, 0: 1000 - first + 1}
    with connections["default"].cursor() as cursor:
        cursor.execute("UPDATE bf_items SET pad = 'x' WHERE id = 450")  # the fix
    [progress] = run("bf_fragile")
    assert progress.state == State.DONE and progress.error == ""
    assert counters() == {1: 1000}


def test_a_batch_failure_raises_backfill_failed_from_the_library(items):
    items(200)
    with connections["default"].cursor() as cursor:
        cursor.execute("UPDATE bf_items SET pad = 'poison' WHERE id = 1")
    with pytest.raises(BackfillFailed, match="row 1 is poisoned"):
        run("bf_fragile")
    assert counters() == {0: 200}
