"""Named warmers: the registry, ``manage.py warm_caches`` and the Celery task on a real worker."""

import json

import pytest
from django.core.management import CommandError, call_command

from data_arch.caching import metrics, register_warmer, registered_warmers
from data_arch.caching.warmers import WarmerError, unregister_warmer
from data_arch.tenancy import Tenant, tenant_context
from example_project.shop.stats import dashboard_stats

pytestmark = pytest.mark.django_db


def dashboard_is_warm(schema):
    metrics.reset()
    with tenant_context(Tenant(pk=None, schema_name=schema)):
        dashboard_stats()
    return metrics.total("hit") == 1 and metrics.total("load") == 0


def test_example_project_registers_its_dashboard_warmer():
    assert "shop.dashboard" in registered_warmers()


def test_command_warms_one_tenant(tenant_schemas, capsys):
    call_command("warm_caches", "--tenant", "tenant_a")
    assert "warmed shop.dashboard for tenant_a" in capsys.readouterr().out
    assert dashboard_is_warm("tenant_a")
    assert not dashboard_is_warm("tenant_b")


def test_command_warms_every_tenant_as_json(tenant_schemas, capsys):
    call_command("warm_caches", "--all-tenants", "--warmer", "shop.dashboard", "--format", "json")
    results = json.loads(capsys.readouterr().out)
    assert {(r["warmer"], r["tenant"], r["error"]) for r in results} >= {
        ("shop.dashboard", "tenant_a", None),
        ("shop.dashboard", "tenant_b", None),
    }
    assert dashboard_is_warm("tenant_a") and dashboard_is_warm("tenant_b")


def test_unknown_warmer_and_tenant_are_clear_errors(tenant_schemas):
    with pytest.raises(
        CommandError, match="unknown warmer.*'nope'.*registered: .*'shop.dashboard'"
    ):
        call_command("warm_caches", "--warmer", "nope")
    with pytest.raises(CommandError, match="--tenant: unknown tenant 'ghost'"):
        call_command("warm_caches", "--tenant", "ghost")


def test_a_failing_warmer_is_reported_and_the_others_still_run(tenant_schemas, capsys):
    @register_warmer("broken")
    def broken():
        raise RuntimeError("upstream down")

    try:
        with pytest.raises(CommandError, match="1 of 2 warmer run"):
            call_command("warm_caches", "--tenant", "tenant_a")
        assert "broken failed for tenant_a: RuntimeError: upstream down" in capsys.readouterr().err
        assert dashboard_is_warm("tenant_a")
    finally:
        unregister_warmer("broken")


def test_duplicate_names_are_refused():
    register_warmer("dup", lambda: None)
    try:
        with pytest.raises(WarmerError, match="already registered"):
            register_warmer("dup", print)
    finally:
        unregister_warmer("dup")
    with pytest.raises(WarmerError, match="non-empty name"):
        register_warmer("", print)


@pytest.mark.slow
def test_celery_task_warms_per_tenant_on_a_real_worker(celery_worker, tenant_schemas):
    from data_arch.caching.tasks import warm_caches

    results = warm_caches.delay(tenant="tenant_b", warmers=["shop.dashboard"]).get(timeout=60)
    assert results[0]["warmer"] == "shop.dashboard" and results[0]["tenant"] == "tenant_b"
    assert results[0]["error"] is None
    assert dashboard_is_warm("tenant_b")
    assert not dashboard_is_warm("tenant_a")


def test_overlapping_runs_of_the_same_selection_are_skipped(tenant_schemas):
    from data_arch.caching import engine
    from data_arch.caching.warmers import warm_tenants

    inner = []

    @register_warmer("reentrant")
    def reentrant():
        inner.append(warm_tenants(tenant="tenant_a", warmers=["reentrant"]))

    try:
        results = warm_tenants(tenant="tenant_a", warmers=["reentrant"])
        assert [r.ok for r in results] == [True]
        assert inner == [None]  # the nested run found the lease taken
        with engine().lease("warm:tenant_a:reentrant", 5) as acquired:
            assert acquired  # released after the first run
    finally:
        unregister_warmer("reentrant")
