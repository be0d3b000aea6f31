"""Reads after a write see it; other reads still use the replica. Replay is paused (strict
mode), so a read wrongly sent to the replica misses the row every time."""

import logging

import pytest
from django.contrib.auth.models import User
from django.db import connections, transaction
from django.test import Client, override_settings

from data_arch.routing import routing_context
from data_arch.routing.middleware import dumps_token
from example_project.shop.tasks import find_user
from tests.routing.conftest import ROUTED

pytestmark = ROUTED


def _on_replica(username):
    return User.objects.using("replica").filter(username=username).exists()


def test_reads_with_no_prior_write_go_to_the_replica(user_on_replica, replica_replay_paused):
    with routing_context():
        user = User.objects.get(username="replayed")
    assert user._state.db == "replica"


def test_read_after_a_write_in_the_same_context_sees_it(user_on_replica, replica_replay_paused):
    with routing_context():
        User.objects.create(username="fresh")
        assert not _on_replica("fresh")  # replay really is paused
        found = User.objects.filter(username="fresh").first()
        assert found is not None and found._state.db == "default"
        # The context stays on the primary: no later read goes back in time.
        assert User.objects.get(username="replayed")._state.db == "default"
    with routing_context():
        assert User.objects.get(username="replayed")._state.db == "replica"


def test_read_after_a_raw_sql_write_sees_it(user_on_replica, replica_replay_paused):
    with routing_context():
        with connections["default"].cursor() as cursor:
            cursor.execute("UPDATE auth_user SET first_name = 'Raw' WHERE username = 'replayed'")
        assert User.objects.get(username="replayed").first_name == "Raw"


def test_reads_inside_atomic_use_the_primary(user_on_replica, replica_replay_paused):
    with routing_context():
        with transaction.atomic(using="default"):
            assert User.objects.get(username="replayed")._state.db == "default"
            User.objects.create(username="in-atomic")
            assert User.objects.filter(username="in-atomic").exists()
        assert User.objects.get(username="in-atomic")._state.db == "default"


def test_instance_hint_keeps_related_reads_on_the_instance_database(
    user_on_replica, replica_replay_paused
):
    from django.contrib.auth.models import Group

    with routing_context():
        from_primary = User.objects.using("default").get(username="replayed")
        from_replica = User.objects.get(username="replayed")
        assert from_replica._state.db == "replica"
        assert from_primary.groups.all().db == "default"
        assert from_replica.groups.all().db == "replica"
    with routing_context():
        user = User.objects.create(username="with-groups")
        group = Group.objects.create(name="g")
        user.groups.add(group)
        assert list(user.groups.all()) == [group]


@override_settings(PUBLIC_SCHEMA_URLCONF="tests.routing.views")
def test_next_request_sees_the_write_through_the_signed_cookie(
    user_on_replica, replica_replay_paused
):
    client = Client()
    assert client.get("/create/", {"username": "via-request"}).status_code == 201
    assert "data_arch_wal" in client.cookies
    assert not _on_replica("via-request")
    body = client.get("/read/", {"username": "via-request"}).json()
    assert body == {"found": True, "db": "default", "routed": "default"}
    async_body = client.get("/read-async/", {"username": "via-request"}).json()
    assert async_body == {"found": True, "db": "default"}
    # Another user (no cookie) reads from the replica, which has not replayed the write.
    other = Client().get("/read/", {"username": "replayed"}).json()
    assert other == {"found": True, "db": "replica", "routed": "replica"}


@override_settings(PUBLIC_SCHEMA_URLCONF="tests.routing.views")
def test_tampered_cookie_is_ignored_and_logged(user_on_replica, replica_replay_paused, caplog):
    client = Client()
    client.get("/create/", {"username": "tampered"})
    good = client.cookies["data_arch_wal"].value
    client.cookies["data_arch_wal"] = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    with caplog.at_level(logging.WARNING, logger="data_arch.routing"):
        body = client.get("/read/", {"username": "replayed"}).json()
    assert body["db"] == "replica"
    assert "ignored an invalid WAL token" in caplog.text
    forged = dumps_token({"default": "not-an-lsn"})
    client.cookies["data_arch_wal"] = forged
    with caplog.at_level(logging.WARNING, logger="data_arch.routing"):
        assert client.get("/read/", {"username": "replayed"}).json()["db"] == "replica"
    assert "not a WAL position" in caplog.text


def test_celery_task_sent_after_a_write_sees_it(
    celery_worker, user_on_replica, replica_replay_paused
):
    with routing_context():
        User.objects.create(username="via-task")
        assert not _on_replica("via-task")
        assert find_user.delay("via-task").get(timeout=30) == {"found": True, "db": "default"}
    with routing_context():
        # No write in this context: the task reads the replica, which lacks the row.
        assert find_user.delay("via-task").get(timeout=30) == {"found": False, "db": None}
        assert find_user.delay("replayed").get(timeout=30) == {"found": True, "db": "replica"}


@override_settings(PUBLIC_SCHEMA_URLCONF="tests.routing.views")
def test_async_client_carries_the_token_too(user_on_replica, replica_replay_paused):
    import asyncio

    from asgiref.sync import sync_to_async
    from django.test import AsyncClient

    async def scenario():
        client = AsyncClient()
        created = await client.get("/create/", {"username": "via-async"})
        assert created.status_code == 201
        client.cookies = created.cookies
        after_write = (await client.get("/read-async/", {"username": "via-async"})).json()
        stranger = (await AsyncClient().get("/read-async/", {"username": "replayed"})).json()
        await sync_to_async(connections.close_all)()  # the worker thread's connections
        return after_write, stranger

    after_write, stranger = asyncio.run(scenario())
    assert after_write == {"found": True, "db": "default"}
    assert stranger == {"found": True, "db": "replica"}
