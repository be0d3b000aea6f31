"""copy_rows(): COPY-based bulk ingest that knows the table's partitions."""

import datetime as dt
import logging

import pytest
from django.apps import apps
from django.db import connection, models
from django_tenants.utils import schema_context

from data_arch.partitioning import MonthlyPartitioning, PartitionError, apply, copy_rows, plan, sql
from data_arch.routing import current_state, routing_context
from example_project.events.models import Event
from tests.partitioning.conftest import NOW, TABLE


def at(year: int, month: int, day: int = 1) -> dt.datetime:
    return dt.datetime(year, month, day, tzinfo=dt.UTC)


def count_in(schema: str, partition: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {sql.qualified(schema, partition)}")
        return cursor.fetchone()[0]


def test_a_copy_inside_the_callers_transaction_is_rolled_back_with_it(tenant_schemas, db):
    from django.db import transaction

    with schema_context("tenant_a"):
        with pytest.raises(RuntimeError), transaction.atomic():
            assert copy_rows(Event, [Event(occurred_at=at(2026, 6, 9), kind="login")]) == 1
            assert Event.objects.count() == 1
            raise RuntimeError("the caller fails after the copy")
        assert Event.objects.count() == 0


def test_rows_land_in_their_months_and_the_count_is_returned(events):
    apply(plan(models_=["events.Event"], ahead=2, now=NOW))
    rows = [Event(occurred_at=at(2026, 6, 1 + n % 28), kind="login", payload={"n": n})
            for n in range(300)]
    rows += [{"occurred_at": at(2026, 7, 4), "kind": "page_view", "payload": {"x": [1, 2]}}] * 50
    rows += [Event(occurred_at=at(2026, 8, 31, ), kind="order_placed")]
    assert copy_rows(Event, rows) == 351
    assert count_in(events, "events_event_p2026_06") == 300
    assert count_in(events, "events_event_p2026_07") == 50
    assert count_in(events, "events_event_p2026_08") == 1
    assert count_in(events, f"{TABLE}_default") == 0
    # Ids come from the sequence; values come back as the ORM wrote them.
    assert Event.objects.filter(occurred_at__month=7, payload__x=[1, 2]).count() == 50
    assert len(set(Event.objects.values_list("id", flat=True))) == 351


def test_rows_beyond_every_partition_go_to_the_default_and_are_reported(events, caplog):
    apply(plan(models_=["events.Event"], ahead=0, now=NOW))
    with caplog.at_level(logging.WARNING, logger="data_arch.partitioning"):
        written = copy_rows(
            Event.objects.all(),
            [(at(2026, 6, 3), "login"), (at(2099, 1, 1), "login"), (at(2000, 1, 1), "login")],
            fields=["occurred_at", "kind"],
        )
    assert written == 3
    assert count_in(events, f"{TABLE}_default") == 2
    assert "2 events.Event row(s) went to the default partition" in caplog.text
    # ... and maintenance moves them into months of their own.
    apply(plan(models_=["events.Event"], ahead=0, now=NOW, retain=1200))
    assert count_in(events, f"{TABLE}_default") == 0


def test_the_write_is_noted_for_read_your_writes(events):
    apply(plan(models_=["events.Event"], ahead=0, now=NOW))
    with routing_context():
        copy_rows(Event, [Event(occurred_at=at(2026, 6, 9), kind="login")])
        state = current_state()
        assert state.wrote and "default" in state.pending


def test_bad_rows_are_refused_by_name_and_nothing_is_written(events):
    apply(plan(models_=["events.Event"], ahead=0, now=NOW))
    good = (at(2026, 6, 3), "login")
    with pytest.raises(ValueError, match="a row has 1 value"):
        copy_rows(Event, [good, (at(2026, 6, 4),)], fields=["occurred_at", "kind"])
    with pytest.raises(ValueError, match="has no field 'nope'"):
        copy_rows(Event, [good], fields=["occurred_at", "nope"])
    with pytest.raises(PartitionError, match="must write its partition key 'occurred_at'"):
        copy_rows(Event, [("login",)], fields=["kind"])
    assert Event.objects.count() == 0


@pytest.fixture
def no_default(committed_db):
    """A partitioned model without a default partition, June and July 2026 created."""

    class Reading(models.Model):
        at = models.DateTimeField()
        value = models.IntegerField()

        class Meta:
            app_label = "events"
            db_table = "events_copy_reading"
            constraints = [  # noqa: RUF012 -- Django's Meta option
                MonthlyPartitioning(field="at", default=False, name="events_copy_reading_part")
            ]

    try:
        with schema_context("public"):
            with connection.schema_editor() as editor:
                editor.create_model(Reading)
            apply(plan(models_=["events.Reading"], ahead=1, now=NOW))
            yield Reading
    finally:
        with schema_context("public"), connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS events_copy_reading CASCADE")
        del apps.all_models["events"]["reading"]
        apps.clear_cache()


def test_without_a_default_a_row_outside_every_partition_refuses_the_whole_copy(no_default):
    rows = [no_default(at=at(2026, 6, 2), value=n) for n in range(100)]
    rows.insert(50, no_default(at=at(2026, 9, 1), value=-1))
    with pytest.raises(PartitionError, match=r"no partition of public\.events_copy_reading holds "
                                             r"at = datetime.datetime\(2026, 9, 1"):
        copy_rows(no_default, rows)
    assert no_default.objects.count() == 0
    assert copy_rows(no_default, [r for r in rows if r.value >= 0]) == 100
    assert no_default.objects.count() == 100
