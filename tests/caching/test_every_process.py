"""Writes invalidate from every process: a Celery worker and a management command that never
import the cached function (the model is known at start-up from CACHE.MODELS), and every ORM
write path, deletion cascades that send no signal included."""

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.core import checks
from django.db import connections, models

from data_arch.caching import cached, metrics
from data_arch.caching.invalidation import late_registrations, watched
from data_arch.tenancy import Tenant, tenant_context
from example_project.billing.models import Account, Contact, Invoice
from example_project.billing.tasks import open_invoice

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture(scope="module")
def billed(django_db_setup, django_db_blocker):
    """A committed row-level tenant with one account, removed afterwards."""
    from example_project.customers.models import Client

    with django_db_blocker.unblock():
        client = Client(schema_name=f"cache_rows_{uuid.uuid4().hex[:6]}", name="Cache rows")
        client.auto_create_schema = False
        client.save()
        tenant = Tenant(pk=client.pk)
        with tenant_context(tenant):
            account = Account.objects.create(name="acc", email="a@cache.test")
        yield tenant, account.pk
        with tenant_context(tenant):
            Contact.objects.all().delete()
            Invoice.objects.all().delete()
            Account.objects.all().delete()
        client.delete()


@cached(60, models=[Invoice])
def invoice_numbers():
    return sorted(Invoice.objects.values_list("number", flat=True))


@cached(60, models=[Invoice])
def invoice_statuses():
    return dict(Invoice.objects.values_list("number", "status"))


def test_the_settings_models_are_watched_from_start_up():
    assert {"billing.invoice", "billing.contact", "auth.user"} <= set(watched())
    # ... and the example's own, from its shop/warmers.py discovered at start-up
    assert {"shop.order", "shop.customer"} <= set(watched())
    assert not late_registrations()


@pytest.mark.slow
def test_a_celery_worker_write_invalidates_the_web_process(billed, celery_worker):
    tenant, account = billed
    with tenant_context(tenant):
        before = invoice_numbers()
        assert invoice_numbers() == before and metrics.total("hit") == 1
        number = f"W-{uuid.uuid4().hex[:8]}"
        open_invoice.delay(account, number, 100).get(timeout=60)
        assert number in invoice_numbers()


def _database_url(url: str, name: str) -> str:
    return urlsplit(url)._replace(path="/" + name).geturl()


def _manage(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    name = connections["default"].settings_dict["NAME"]
    env["DATABASE_URL"] = _database_url(os.environ["DATABASE_URL"], name)
    if os.environ.get("REPLICA_URL"):
        env["REPLICA_URL"] = _database_url(os.environ["REPLICA_URL"], name)
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120,
    )


@pytest.mark.slow
def test_a_management_command_write_invalidates_the_web_process(billed):
    tenant, account = billed
    number = f"M-{uuid.uuid4().hex[:8]}"
    code = textwrap.dedent(f"""
        import sys
        from data_arch.tenancy import Tenant, tenant_context
        from example_project.billing.models import Account, Invoice
        with tenant_context(Tenant(pk={tenant.pk})):
            Invoice.objects.create(account=Account.objects.get(pk={account}), number="{number}",
                                   total_cents=1, issued_on="2026-03-01", due_on="2026-03-01")
            print("created")
            # A write path that sends no signal:
            print(Invoice.objects.filter(number="{number}").update(status="paid"))
        print(sorted(name for name in sys.modules if name.startswith("tests.caching")))
    """)
    with tenant_context(tenant):
        assert number not in invoice_statuses()
        assert number not in invoice_statuses() and metrics.total("hit") == 1
        result = _manage("shell", "-c", code)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split()[-3:] == ["created", "1", "[]"], result.stdout
        assert invoice_statuses()[number] == "paid"


def test_an_on_delete_set_callable_cascade_invalidates_the_children(
    billed, monkeypatch, django_capture_on_commit_callbacks
):
    """Django updates SET(callable) children with UpdateQuery.update_batch: no signal, no
    QuerySet.update -- the write compiler still sees it."""
    tenant, _ = billed
    field = Contact._meta.get_field("account")
    monkeypatch.setattr(field.remote_field, "on_delete", models.SET(lambda: None))

    @cached(60, models=[Contact])
    def orphans():
        return sorted(Contact.objects.filter(account=None).values_list("name", flat=True))

    with tenant_context(tenant):
        with django_capture_on_commit_callbacks(execute=True):  # set-up, as if committed
            account = Account.objects.create(name="to delete", email="d@cache.test")
            Contact.objects.create(account=account, name="kept", email="k@cache.test")
        assert orphans() == []
        assert orphans() == []
        with django_capture_on_commit_callbacks(execute=True):
            account.delete()
        assert orphans() == ["kept"]


def test_an_on_delete_set_null_cascade_invalidates_the_children(
    billed, django_capture_on_commit_callbacks
):
    tenant, _ = billed

    @cached(60, models=["billing.Contact"])
    def linked():
        return Contact.objects.exclude(account=None).count()

    with tenant_context(tenant):
        with django_capture_on_commit_callbacks(execute=True):  # set-up, as if committed
            account = Account.objects.create(name="gone", email="g@cache.test")
            Contact.objects.create(account=account, name="c", email="c@cache.test")
        assert linked() == 1
        with django_capture_on_commit_callbacks(execute=True):
            account.delete()
        assert linked() == 0


def test_a_model_first_cached_after_start_up_is_reported(monkeypatch):
    from data_arch.caching import invalidation
    from data_arch.caching.checks import check_cache

    # This test's registration must not outlive it (later tests run the checks too).
    for name in ("_watched", "_late", "_labels"):
        monkeypatch.setattr(invalidation, name, dict(getattr(invalidation, name)))

    @cached(60, models=["auth.Permission"])
    def late():
        return 1

    assert "auth.permission" in late_registrations()
    warnings = [m for m in check_cache() if m.id == "data_arch.W404"]
    assert any("auth.permission was not known when the app started" in m.msg for m in warnings)
    assert all(isinstance(m, checks.Warning) for m in warnings)


def test_an_unknown_settings_model_is_an_error(settings):
    from data_arch.caching.checks import check_cache

    settings.DATA_ARCH = {**settings.DATA_ARCH, "CACHE": {"MODELS": ["billing.Nope"]}}
    assert [m.id for m in check_cache() if m.id.startswith("data_arch.E")] == ["data_arch.E401"]
