"""Where the tenant comes from: requests (sync and async), commands, log records."""

import io
import json
import logging

import pytest
from asgiref.sync import async_to_sync
from django.core.management import CommandError, call_command
from django.http import HttpResponse
from django.test import RequestFactory, override_settings

from data_arch.tenancy import current_tenant, tenant_context
from data_arch.tenancy.log import TenantLogFilter
from data_arch.tenancy.middleware import TenantMiddleware
from example_project.billing.models import Account

pytestmark = pytest.mark.django_db(databases="__all__")

#: The tenant header on, for tests of what a resolved tenant does (who may use it: below).
WITH_HEADER = override_settings(DATA_ARCH={
    "TENANCY": {"HEADER": "X-Tenant", "AUTHORIZE": "tests.tenancy.test_entry_points.allow_all"},
})


def allow_all(request, tenant):
    return True


def allow_none(request, tenant):
    return False


@pytest.fixture
def accounts(row_tenants):
    from example_project.customers.models import Client

    made = {}
    for tenant in row_tenants[:2]:
        with tenant_context(tenant):
            made[tenant.pk] = Account.objects.create(name="n", email=f"m@{tenant.pk}.com")
    schemas = {t.pk: Client.objects.get(pk=t.pk).schema_name for t in row_tenants[:2]}
    return made, schemas


def sync_view(request):
    return HttpResponse(",".join(a.email for a in Account.objects.all()))


async def async_view(request):
    return HttpResponse(",".join([a.email async for a in Account.objects.all()]))


@WITH_HEADER
def test_header_selects_the_tenant_sync(accounts):
    made, schemas = accounts
    middleware = TenantMiddleware(sync_view)
    for pk, schema in schemas.items():
        response = middleware(RequestFactory().get("/", HTTP_X_TENANT=schema))
        assert response.content.decode() == made[pk].email
    assert current_tenant() is None


@WITH_HEADER
def test_header_selects_the_tenant_async(accounts):
    made, schemas = accounts
    middleware = TenantMiddleware(async_view)

    async def both():
        return [
            (await middleware(RequestFactory().get("/", HTTP_X_TENANT=schema))).content.decode()
            for schema in schemas.values()
        ]

    assert async_to_sync(both)() == [made[pk].email for pk in schemas]


@override_settings(DATA_ARCH={"TENANCY": {"HEADER": None, "SUBDOMAIN": True}})
def test_subdomain_selects_the_tenant(accounts):
    from example_project.customers.models import Client

    client = Client(schema_name="subco", name="Sub Co")
    client.auto_create_schema = False
    client.save()
    with tenant_context(client):
        Account.objects.create(name="s", email="s@subco.com")
    request = RequestFactory().get("/", HTTP_HOST="subco.localhost")
    assert TenantMiddleware(sync_view)(request).content.decode() == "s@subco.com"


@WITH_HEADER
@pytest.mark.parametrize(
    ("value", "status"), [("bad;name", 400), ("pg_catalog", 400), ("x" * 64, 400), ("nobody", 404)]
)
def test_bad_or_unknown_tenant_is_refused_before_the_view(accounts, value, status):
    called = []
    middleware = TenantMiddleware(lambda request: called.append(1))
    response = middleware(RequestFactory().get("/", HTTP_X_TENANT=value))
    assert response.status_code == status
    assert called == []


def test_without_a_tenant_the_view_fails_closed(accounts):
    from data_arch.tenancy import NoTenantError

    with pytest.raises(NoTenantError):
        TenantMiddleware(sync_view)(RequestFactory().get("/"))


def test_django_tenants_request_tenant_is_used(tenant):
    seen = []
    middleware = TenantMiddleware(lambda request: seen.append(current_tenant()) or HttpResponse())
    request = RequestFactory().get("/")
    request.tenant = tenant
    middleware(request)
    assert seen[0].schema_name == tenant.schema_name and seen[0].pk == tenant.pk


def test_log_records_carry_the_tenant(accounts):
    _made, schemas = accounts
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "msg", None, None)
    TenantLogFilter().filter(record)
    assert record.tenant == "-"
    with tenant_context(next(iter(accounts[0].values())).tenant):
        TenantLogFilter().filter(record)
    assert record.tenant.startswith(next(iter(schemas.values())))


def test_tenancy_status_command_per_tenant(accounts):
    _made, schemas = accounts
    out = io.StringIO()
    call_command("tenancy", "status", tenant=next(iter(schemas.values())), format="json", stdout=out)
    report = json.loads(out.getvalue())
    tables = {t["table"]: t for t in report[0]["tables"]}
    assert tables["billing_account"]["rows"] == 1
    assert all(t["rls_forced"] and t["policy"] for t in tables.values())


def test_tenancy_status_command_table_for_all_tenants(accounts):
    out, err = io.StringIO(), io.StringIO()
    call_command("tenancy", "status", all_tenants=True, stdout=out, stderr=err)
    text = out.getvalue()
    assert text.count("billing_account") >= 2 and "RLS forced" in text
    assert "[1/" in err.getvalue()


@pytest.mark.parametrize(
    ("value", "message"),
    [("no_such_tenant", "unknown tenant 'no_such_tenant'"), ("a;b", "invalid schema name"),
     ("pg_toast", "invalid schema name"), ("é" * 40, "PostgreSQL allows 63")],
)
def test_bad_tenant_option_is_a_clear_command_error(accounts, value, message):
    with pytest.raises(CommandError, match=message):
        call_command("tenancy", "status", tenant=value, stdout=io.StringIO())


def test_admin_on_a_tenant_host_lists_and_creates_that_tenants_rows(tenant, django_user_model):
    import datetime

    from django.test import Client as HttpClient

    from example_project.billing.models import Invoice
    from example_project.customers.models import Client, Domain

    other = Client(schema_name="admin_other", name="Other")
    other.auto_create_schema = False
    other.save()
    day = datetime.date(2026, 5, 1)
    for owner in (tenant, other):
        with tenant_context(owner):
            account = Account.objects.create(name="adm", email="adm@x.com")
            Invoice.objects.create(account=account, number=f"ADM-{owner.schema_name}",
                                   total_cents=1, issued_on=day, due_on=day)
    host = tenant.schema_name.replace("_", "") + ".localhost"  # no "_" in host names
    Domain.objects.create(domain=host, tenant=tenant, is_primary=True)
    with tenant_context(tenant):
        django_user_model.objects.create_superuser("root", "root@x.com", "pw")
    http = HttpClient(HTTP_HOST=host)
    with tenant_context(tenant):
        assert http.login(username="root", password="pw")
    page = http.get("/admin/billing/invoice/").content.decode()
    assert f"ADM-{tenant.schema_name}" in page and "ADM-admin_other" not in page
    with tenant_context(tenant):
        own_account = Account.objects.get()
    response = http.post("/admin/billing/invoice/add/", {
        "account": own_account.pk, "number": "ADM-NEW", "status": "open", "total_cents": 5,
        "issued_on": "2026-05-02", "due_on": "2026-06-02",
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Invoice.unscoped.get(number="ADM-NEW").tenant_id == tenant.pk


@WITH_HEADER
def test_concurrent_async_requests_keep_their_own_tenant(accounts):
    import asyncio

    made, schemas = accounts

    async def slow_view(request):
        await asyncio.sleep(0.01)  # let the other request run in between
        first = [a.email async for a in Account.objects.all()]
        await asyncio.sleep(0.01)
        second = [a.email async for a in Account.objects.all()]
        return HttpResponse(",".join(first + second))

    middleware = TenantMiddleware(slow_view)

    async def many():
        requests = [
            middleware(RequestFactory().get("/", HTTP_X_TENANT=schema))
            for schema in list(schemas.values()) * 3
        ]
        return [r.content.decode() for r in await asyncio.gather(*requests)]

    expected = [f"{made[pk].email},{made[pk].email}" for pk in schemas] * 3
    assert async_to_sync(many)() == expected


# --------------------------------------------------------------------------- who picks the tenant


def _seen_tenant(request, **headers):
    seen = []
    middleware = TenantMiddleware(lambda r: seen.append(current_tenant()) or HttpResponse())
    response = middleware(request)
    return response.status_code, (seen[0] if seen else "not called")


def _subco():
    from example_project.customers.models import Client

    client = Client(schema_name="subco", name="Sub Co")
    client.auto_create_schema = False
    client.save()
    return client


def test_the_header_is_off_by_default(accounts):
    _made, schemas = accounts
    request = RequestFactory().get("/", HTTP_X_TENANT=next(iter(schemas.values())))
    assert _seen_tenant(request) == (200, None)


@override_settings(DATA_ARCH={"TENANCY": {
    "HEADER": "X-Tenant", "SUBDOMAIN": True,
    "AUTHORIZE": "tests.tenancy.test_entry_points.allow_all",
}})
def test_the_header_never_overrides_a_host_resolved_tenant(accounts, tenant):
    _made, schemas = accounts
    other = next(iter(schemas.values()))
    subco = _subco()
    request = RequestFactory().get("/", HTTP_HOST="subco.localhost", HTTP_X_TENANT=other)
    assert _seen_tenant(request)[1].pk == subco.pk
    request = RequestFactory().get("/", HTTP_X_TENANT=other)
    request.tenant = tenant  # what django-tenants resolved from the host
    assert _seen_tenant(request)[1].schema_name == tenant.schema_name


@pytest.mark.parametrize(("hook", "status"), [("allow_none", 403), ("allow_all", 200)])
def test_the_header_on_a_public_host_is_gated_by_the_authorize_hook(accounts, hook, status):
    from example_project.customers.models import Client

    made, schemas = accounts
    pk, schema = next(iter(schemas.items()))
    request = RequestFactory().get("/admin/", HTTP_X_TENANT=schema)
    request.tenant = Client(schema_name="public", name="public")  # an unknown host's fallback
    with override_settings(DATA_ARCH={"TENANCY": {
        "HEADER": "X-Tenant", "AUTHORIZE": f"tests.tenancy.test_entry_points.{hook}",
    }}):
        code, seen = _seen_tenant(request)
    assert code == status
    assert (seen.pk == pk) if status == 200 else seen == "not called"


@pytest.mark.parametrize(
    ("tenancy", "message"),
    [({"HEADER": "X-Tenant"}, "AUTHORIZE"),
     ({"HEADER": "X-Tenant", "AUTHORIZE": "no.such.hook"}, "cannot be imported"),
     ({"AUTHORIZE": "tests.tenancy.test_entry_points.WITH_HEADER.nothing"}, "cannot be imported"),
     ({"NON_TENANT_SUBDOMAINS": "www"}, "list of host labels")],
)
def test_tenancy_settings_errors_name_the_key(tenancy, message):
    from data_arch import conf

    with override_settings(DATA_ARCH={"TENANCY": tenancy}):
        errors = conf.configuration_errors()
    assert len(errors) == 1 and message in errors[0] and "TENANCY" in errors[0]


@override_settings(DATA_ARCH={"TENANCY": {"SUBDOMAIN": True, "NON_TENANT_SUBDOMAINS": ["www", "api"]}})
@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.1:8000", "[::1]:8000", "www.localhost", "www.example.com",
             "api.example.com", "10.0.0.7:80"],
)
def test_subdomain_ignores_ip_hosts_and_non_tenant_labels(accounts, host):
    request = RequestFactory().get("/", HTTP_HOST=host)
    with override_settings(ALLOWED_HOSTS=["*"]):
        assert _seen_tenant(request) == (200, None)


@override_settings(ROOT_URLCONF="tests.tenancy.urls",
                   MIDDLEWARE=["data_arch.tenancy.middleware.TenantMiddleware"])
@pytest.mark.parametrize("client_class", ["sync", "async"])
def test_a_tenant_only_view_without_a_tenant_is_a_404_not_a_500(accounts, client_class):
    from django.test import AsyncClient, Client

    if client_class == "sync":
        response = Client(raise_request_exception=False).get("/accounts/")
    else:
        response = async_to_sync(AsyncClient(raise_request_exception=False).get)("/accounts/")
    assert response.status_code == 404
    assert b"@" not in response.content


@override_settings(DATA_ARCH={"TENANCY": {
    "HEADER": "X-Tenant", "LOOKUP_FIELD": "id",
    "AUTHORIZE": "tests.tenancy.test_entry_points.allow_all",
}})
@pytest.mark.parametrize(("value", "status"), [("abc", 400), ("1.5", 400), ("99999999", 404)])
def test_a_malformed_reference_is_a_400_for_every_lookup_field(accounts, value, status):
    assert _seen_tenant(RequestFactory().get("/", HTTP_X_TENANT=value))[0] == status
