import logging

import pytest
from django.contrib.auth.models import User
from django.core import checks
from django.db import connections, router
from django.test import override_settings

from data_arch import conf
from data_arch.routing import NoHealthyReplica, health_of, reset_health
from data_arch.routing import ReplicaRouter, is_write
from tests.routing.conftest import ROUTED

pytestmark = pytest.mark.filterwarnings("ignore:Overriding setting DATABASES:UserWarning")


def test_migrations_never_run_on_a_replica():
    assert router.allow_migrate("replica", "auth") is False
    assert router.allow_migrate("replica", "shop", model_name="order") is False
    # RunPython asks with hints only; still never the replica.
    assert ReplicaRouter().allow_migrate("replica", "shop", hints={"x": 1}) is False
    assert ReplicaRouter().allow_migrate("default", "shop") is None  # django-tenants decides


def test_writes_go_to_the_primary():
    assert router.db_for_write(User) == "default"


@pytest.mark.parametrize("sql, write", [
    ("SELECT 1", False),
    ("  (SELECT 1)", False),
    ("INSERT INTO t VALUES (1)", True),
    ("update t set a = 1", True),
    ("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", True),
    ("WITH x AS (SELECT 1) SELECT * FROM x", False),
    ("CREATE TABLE t (id int)", True),
    ("SET search_path = public", False),
])
def test_statement_classification(sql, write):
    assert is_write(sql) is write


def test_unknown_replica_alias_is_a_configuration_error():
    with override_settings(DATA_ARCH={"ROUTER": {"REPLICAS": ["nope"]}}):
        errors = conf.configuration_errors()
    assert any("'nope', which is not in settings.DATABASES" in e for e in errors)


def test_an_alias_cannot_be_primary_and_replica():
    with override_settings(DATA_ARCH={"ROUTER": {"PRIMARY": "default", "REPLICAS": ["default"]}}):
        with pytest.raises(conf.SettingError, match="both as a primary and as a replica"):
            conf.router_settings()


def _ids(messages):
    return {m.id for m in messages}


def test_check_router_not_installed():
    from data_arch.routing.checks import check_router

    with override_settings(DATABASE_ROUTERS=["django_tenants.routers.TenantSyncRouter"]):
        assert "data_arch.E300" in _ids(check_router())
    assert "data_arch.E300" not in _ids(check_router())


def test_check_replica_without_test_mirror(settings):
    from data_arch.routing.checks import check_router

    databases = {k: dict(v) for k, v in settings.DATABASES.items()}
    databases["replica"]["TEST"] = {}
    with override_settings(DATABASES=databases):
        assert "data_arch.W302" in _ids(check_router())
    assert "data_arch.W302" not in _ids(check_router())


def test_check_short_sticky_window():
    from data_arch.routing.checks import check_router

    with override_settings(DATA_ARCH={"ROUTER": {"REPLICAS": ["replica"], "STICKY_SECONDS": 1}}):
        assert "data_arch.W304" in _ids(check_router())


def _add_connection(alias, config):
    """A connection for an alias added during the test (allowed by Django's test isolation)."""
    from django.db.utils import load_backend

    connections[alias] = load_backend(config["ENGINE"]).DatabaseWrapper(config, alias)


@pytest.fixture
def fake_replica(settings, transactional_db):
    """An alias listed as a replica that really points at the primary server."""
    config = dict(connections["default"].settings_dict)
    _add_connection("fake_replica", config)
    databases = dict(settings.DATABASES)
    databases["fake_replica"] = config
    try:
        with override_settings(
            DATABASES=databases,
            DATA_ARCH={"ROUTER": {"PRIMARY": "default", "REPLICAS": ["fake_replica"]}},
        ):
            yield "fake_replica"
    finally:
        connections["fake_replica"].close()
        del connections["fake_replica"]


@ROUTED
def test_a_replica_that_is_a_primary_is_skipped_and_reported(fake_replica, caplog):
    from data_arch.routing.checks import check_replicas_are_standbys

    with caplog.at_level(logging.ERROR, logger="data_arch.routing"):
        assert User.objects.all().db == "default"
    assert "'fake_replica' skipped" in caplog.text and "not a standby" in caplog.text
    assert not health_of("fake_replica", "default", 60).healthy
    assert "data_arch.E303" in _ids(check_replicas_are_standbys(databases=["fake_replica"]))


@ROUTED
def test_no_healthy_replica_policy_error(fake_replica):
    with override_settings(DATA_ARCH={"ROUTER": {"REPLICAS": ["fake_replica"],
                                                 "NO_HEALTHY_REPLICA": "error"}}):
        reset_health()
        with pytest.raises(NoHealthyReplica, match="NO_HEALTHY_REPLICA"):
            User.objects.all().db


@pytest.fixture
def second_replica(settings, transactional_db):
    """A second alias on the same streaming standby: two real replicas to balance over."""
    config = dict(connections["replica"].settings_dict)
    _add_connection("replica2", config)
    databases = dict(settings.DATABASES)
    databases["replica2"] = config
    try:
        with override_settings(DATABASES=databases):
            yield "replica2"
    finally:
        connections["replica2"].close()
        del connections["replica2"]


@ROUTED
def test_weighted_round_robin_over_several_replicas(streaming_replica, second_replica):
    from data_arch.routing import routing_context

    with override_settings(DATA_ARCH={"ROUTER": {
        "REPLICAS": ["replica", "replica2"], "WEIGHTS": {"replica": 3, "replica2": 1},
    }}):
        picks = []
        for _ in range(40):
            with routing_context():
                first = User.objects.all().db
                assert User.objects.all().db == first  # one replica per context
                picks.append(first)
    assert picks.count("replica") == 30 and picks.count("replica2") == 10


@ROUTED
def test_another_primary_replica_set_by_app_label(fake_replica):
    from example_project.shop.models import Order

    # "fake_replica" stands in for a second primary here (it is the same server).
    with override_settings(DATA_ARCH={"ROUTER": {
        "REPLICAS": ["replica"],
        "SETS": [{"PRIMARY": "fake_replica", "REPLICAS": [], "APPS": ["shop"]}],
    }}):
        assert router.db_for_write(Order) == "fake_replica"
        assert router.db_for_read(Order) == "fake_replica"  # a set without replicas
        assert ReplicaRouter().allow_migrate("default", "shop") is False
        assert ReplicaRouter().allow_migrate("fake_replica", "shop") is None
        assert ReplicaRouter().allow_migrate("fake_replica", "auth") is False
        assert router.db_for_write(User) == "default"
