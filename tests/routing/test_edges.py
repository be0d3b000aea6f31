"""The router's smaller promises: migrations pin only their own context, writes the ORM does
not send through ``execute`` are still seen, transactions on a replica stay there, eager tasks
and retried tasks keep the sender's token, and bad settings are reported by name."""

from __future__ import annotations

import threading

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.core import checks
from django.db import connections, transaction
from django.db.models.signals import pre_migrate
from django.test import override_settings

from data_arch.routing import routing_context
from example_project.shop.tasks import find_user, find_user_on_a_replica
from tests.routing.conftest import ROUTED

pytestmark = ROUTED


def _served(username: str = "replayed") -> str:
    return User.objects.get(username=username)._state.db


def _ids(messages) -> set[str]:
    return {m.id for m in messages}


def test_a_migration_that_fails_pins_only_its_own_context(user_on_replica):
    other: list[str] = []

    def another_request() -> None:
        with routing_context():
            other.append(_served())
        connections.close_all()

    with pytest.raises(RuntimeError), routing_context():
        pre_migrate.send(sender=apps.get_app_config("auth"), app_config=apps.get_app_config("auth"),
                         verbosity=0, interactive=False, using="default", apps=apps, plan=[])
        assert _served() == "default"  # the migrating context reads the primary
        thread = threading.Thread(target=another_request)
        thread.start()
        thread.join()
        raise RuntimeError("the migration failed: post_migrate is never sent")
    assert other == ["replica"]
    with routing_context():
        assert _served() == "replica"


def test_a_procedure_called_on_the_primary_counts_as_a_write(
    user_on_replica, replica_replay_paused
):
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "CREATE OR REPLACE FUNCTION routing_rename(name text) RETURNS void LANGUAGE sql AS "
            "$$ UPDATE auth_user SET first_name = 'renamed' WHERE username = name $$"
        )
    with routing_context():
        with connections["default"].cursor() as cursor:
            cursor.callproc("routing_rename", ["replayed"])
        user = User.objects.get(username="replayed")
    assert (user._state.db, user.first_name) == ("default", "renamed")


@pytest.mark.parametrize("statement", [
    "EXPLAIN (ANALYZE, FORMAT JSON) UPDATE auth_user SET first_name = 'explained' "
    "WHERE username = 'replayed'",
    "SELECT 1; UPDATE auth_user SET first_name = 'two statements' WHERE username = 'replayed'",
], ids=["explain-analyze", "multi-statement"])
def test_writes_hidden_in_other_statements_are_seen(
    statement, user_on_replica, replica_replay_paused
):
    with routing_context():
        with connections["default"].cursor() as cursor:
            cursor.execute(statement)
        user = User.objects.get(username="replayed")
    assert user._state.db == "default" and user.first_name != ""


@pytest.mark.django_db(transaction=True, databases=["default", "replica", "replica_b"])
def test_reads_inside_a_transaction_on_a_replica_stay_on_it(user_on_replica):
    with override_settings(DATA_ARCH={"ROUTER": {"REPLICAS": ["replica", "replica_b"]}}):
        served = set()
        for _ in range(4):
            with routing_context():
                served.add(_served())
        assert served == {"replica", "replica_b"}  # without a transaction, both serve reads
        for alias in ("replica", "replica_b") * 2:  # whatever the round-robin's turn
            with routing_context(), transaction.atomic(using=alias):
                assert [_served() for _ in range(4)] == [alias] * 4


def test_an_eager_task_reads_the_callers_write(user_on_replica, replica_replay_paused):
    with routing_context():
        User.objects.create(username="eager")
        assert find_user.apply(args=["eager"]).get() == {"found": True, "db": "default"}


def test_a_task_can_wait_for_a_replica_instead_of_reading_the_primary(
    celery_worker, user_on_replica, replica_replay_paused
):
    with routing_context():
        User.objects.create(username="waited")
        result = find_user_on_a_replica.delay("waited")
    with connections["replica"].cursor() as cursor:
        import time

        time.sleep(1.0)  # the task is retried meanwhile: no replica has the row
        cursor.execute("SELECT pg_wal_replay_resume()")
    answer = result.get(timeout=30)
    assert answer["found"] and answer["db"] == "replica", answer
    assert answer["retries"] >= 1, answer


def test_replica_or_retry_refuses_a_nonsense_delay():
    from data_arch.routing.celery import replica_or_retry

    with pytest.raises(ValueError, match="0 < delay <= max_wait"):
        replica_or_retry(delay=0)
    with pytest.raises(ValueError, match="0 < delay <= max_wait"):
        replica_or_retry(delay=5, max_wait=1)


def test_atomic_requests_on_a_routed_primary_is_a_warning(settings):
    from data_arch.routing.checks import check_router

    databases = {alias: dict(value) for alias, value in settings.DATABASES.items()}
    databases["default"]["ATOMIC_REQUESTS"] = True
    with override_settings(DATABASES=databases):
        assert "data_arch.W307" in _ids(check_router())
    assert "data_arch.W307" not in _ids(check_router())


def test_a_health_ttl_not_above_the_probe_timeout_is_a_warning():
    from data_arch.routing.checks import check_router

    with override_settings(DATA_ARCH={"ROUTER": {"REPLICAS": ["replica"], "HEALTH_TTL": 2}}):
        assert "data_arch.W306" in _ids(check_router())
    with override_settings(DATA_ARCH={"ROUTER": {"REPLICAS": ["replica"], "HEALTH_TTL": 10}}):
        assert "data_arch.W306" not in _ids(check_router())


@pytest.mark.parametrize(("router", "fragment"), [
    ({"HEALTH_TTL": 0}, "['HEALTH_TTL'] must be between 0.05 and 3600, got 0"),
    ({"HEALTH_TTL": "5"}, "['HEALTH_TTL'] must be a number"),
    ({"PROBE_TIMEOUT": 1}, "['PROBE_TIMEOUT'] must be an integer between 2 and 60, got 1"),
    ({"PROBE_TIMEOUT": 2.5}, "['PROBE_TIMEOUT']"),
    ({"HEALTH_BACKOFF_MAX": 7200}, "['HEALTH_BACKOFF_MAX'] must be between 0.05 and 3600"),
    ({"HEALTH_TTL": 10, "HEALTH_BACKOFF_MAX": 5}, "HEALTH_BACKOFF_MAX'] (5) must be >= HEALTH_TTL"),
])
def test_health_settings_out_of_range_name_the_key(router, fragment):
    with override_settings(DATA_ARCH={"ROUTER": {"REPLICAS": ["replica"], **router}}):
        errors = [e for e in checks.run_checks() if e.id == "data_arch.E001"]
    assert any(fragment in e.msg for e in errors), [e.msg for e in errors]
