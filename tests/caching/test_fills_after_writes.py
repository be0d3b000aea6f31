"""A fill can never undo a write: once a write has committed (and invalidated), the next miss
-- from any context, with or without the writer's WAL cookie -- loads data at least as new as
that write, even from a replica whose replay is paused. Fills still go to a replica that has
replayed the write."""

import pytest
from django.contrib.auth.models import User

from data_arch.caching import cached, get_or_load, metrics
from data_arch.routing import reset_health, routing_context

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "replica"])


@pytest.fixture(autouse=True)
def fresh_routing(streaming_replica):
    reset_health()
    yield
    reset_health()


def _users():
    users = User.objects.order_by("username")
    return {"names": list(users.values_list("username", flat=True)), "db": users.db}


@cached(60, models=[User])
def user_names():
    return _users()


def test_a_fill_after_a_committed_write_never_stores_the_pre_write_replica(
    replica_replay_paused,
):
    with routing_context():
        assert user_names() == {"names": [], "db": "replica"}
    with routing_context():  # the writer: another request
        User.objects.create(username="written")
    assert not User.objects.using("replica").filter(username="written").exists(), "replay paused"
    with routing_context():  # a third request, with no WAL cookie
        assert user_names()["names"] == ["written"]
    with routing_context():
        assert user_names()["names"] == ["written"], "the pre-write value was stored"
    assert metrics.total("miss") == 2


def test_a_fill_reads_the_replica_once_it_has_replayed_the_write(wait_for_replica):
    with routing_context():
        assert user_names()["db"] == "replica"
    with routing_context():
        User.objects.create(username="written")
    wait_for_replica()
    with routing_context():
        assert user_names() == {"names": ["written"], "db": "replica"}


def test_a_single_key_invalidation_also_carries_its_write(replica_replay_paused):
    @cached(60)
    def names():
        return _users()["names"]

    with routing_context():
        assert names() == []
    with routing_context():
        User.objects.create(username="renamed")
        names.invalidate()
    with routing_context():
        assert names() == ["renamed"]


def test_get_or_load_with_tags_after_a_write_and_an_explicit_invalidation(replica_replay_paused):
    from data_arch.caching import invalidate_tag

    load = lambda: _users()["names"]  # noqa: E731
    with routing_context():
        assert get_or_load("people", load, 60, tags=["people"]) == []
    with routing_context():
        User.objects.create(username="tagged")
        invalidate_tag("people")
    with routing_context():
        assert get_or_load("people", load, 60, tags=["people"]) == ["tagged"]
