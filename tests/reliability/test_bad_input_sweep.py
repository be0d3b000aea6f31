"""Every data_arch management command given malformed values: a clear error, no change.

Each case must end in a ``CommandError`` (or argparse's usage error) that names what was wrong,
with nothing created, dropped or recorded: the catalog of every schema and the rows of
data_arch's own tables are the same before and after. A few run through a real ``manage.py``
process too: exit status non-zero, the error on stderr, no traceback. Forged read-your-writes
cookies and Celery headers are refused. (``partitions`` and ``backfill run`` have sweeps of
their own in tests/partitioning/test_command_input.py and tests/backfills/test_bad_input.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.core.management import CommandError, call_command
from django.db import connections

ROOT = Path(__file__).resolve().parents[2]

HUGE = "t" * 100_000
SQLISH = "x'; DROP TABLE customers_client; --"
UNICODE = "tenänt_ü\u202e"
TENANT_VALUES = ["", HUGE, "-1", SQLISH, UNICODE, "nobody", "Tenant_A", "pg_catalog"]

# (argv, the text the error must contain)
CASES = [
    (["tenancy"], "action"),
    (["tenancy", "nope"], "invalid choice"),
    (["tenancy", "status", "--database", "nope"], "--database"),
    (["tenancy", "status", "--database", ""], "--database"),
    (["tenancy", "status", "--database", SQLISH], "--database"),
    (["tenancy", "status", "--format", "xml"], "--format"),
    (["tenancy", "status", "--tenant", "tenant_a", "--all-tenants"], "--all-tenants"),
    (["warm_caches", "--warmer", ""], "--warmer"),
    (["warm_caches", "--warmer", "nope"], "--warmer"),
    (["warm_caches", "--warmer", UNICODE], "--warmer"),
    (["warm_caches", "--warmer", SQLISH], "--warmer"),
    (["warm_caches", "--warmer", HUGE], "--warmer"),
    (["warm_caches", "--format", "xml"], "--format"),
    (["warm_caches", "--tenant", "tenant_a", "--all-tenants"], "--all-tenants"),
    (["data_arch_alerts", "--bogus"], "--bogus"),
    (["data_arch_alerts", "extra"], "extra"),
    (["lint_migrations", "nope"], "app_label"),
    (["lint_migrations", ""], "app_label"),
    (["lint_migrations", UNICODE], "app_label"),
    (["lint_migrations", SQLISH], "app_label"),
    (["lint_migrations", "--pending", "nope"], "--pending"),
    (["lint_migrations", "--pending", ""], "--pending"),
    (["lint_migrations", "--format", "xml"], "--format"),
    (["backfill"], "action"),
    (["backfill", "nope"], "invalid choice"),
    (["backfill", "status", "nope"], "nope"),
    (["backfill", "status", SQLISH], "NAME"),
    (["backfill", "pause", ""], "NAME"),
    (["backfill", "pause", "nope"], "nope"),
    (["backfill", "resume", UNICODE], "NAME"),
    (["backfill", "cancel", HUGE], "NAME"),
    (["backfill", "cancel"], "NAME"),
    (["backfill", "run", "shop.customer_email_domain", "--max-batches", "-1"], "--max-batches"),
    (["backfill", "run", "shop.customer_email_domain", "--max-batches", "x"], "--max-batches"),
    (["backfill", "run", "shop.customer_email_domain", "--format", "xml"], "--format"),
    (["backfill", "run", "shop.customer_email_domain"], "--tenant"),
    (["partitions", "status", "--format", "json", "--database", "replica_b", "--tenant",
      UNICODE], "--tenant"),
]
# Every command that takes --tenant, with every malformed or unknown tenant.
for command in (["tenancy", "status"], ["warm_caches"], ["backfill", "status"],
                ["backfill", "run", "shop.customer_email_domain"], ["partitions", "plan"]):
    for value in TENANT_VALUES:
        CASES.append(([*command, "--tenant", value], "--tenant"))


def _case_id(case) -> str:
    argv, _ = case
    return " ".join(a if len(a) < 40 else a[:12] + f"...({len(a)})" for a in argv) or "-"


def snapshot() -> tuple:
    """Every relation of every non-system schema, and the rows of data_arch's own tables."""
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON "
            "n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%' "
            "ORDER BY 1, 2")
        catalog = tuple(cursor.fetchall())
        cursor.execute("SELECT schema_name FROM information_schema.schemata ORDER BY 1")
        schemas = tuple(cursor.fetchall())
        rows = []
        for schema, table, kind in catalog:
            if schema == "public" and kind in ("r", "p") and table.startswith(
                    ("data_arch_", "customers_")):
                cursor.execute(f'SELECT md5(string_agg(t::text, \',\' ORDER BY t::text)) FROM '
                               f'"{schema}"."{table}" t')
                rows.append((table, cursor.fetchone()[0]))
    return catalog, schemas, tuple(rows)


LIVE = pytest.mark.django_db(transaction=True, databases=["default", "replica"])


@pytest.fixture
def before(tenant_schemas):
    return snapshot()


# In the test's transaction: a command that changed anything would show it in the snapshot.
@pytest.mark.django_db(databases=["default", "replica", "replica_b"])
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_a_malformed_value_is_a_clear_error_and_changes_nothing(before, case):
    argv, names = case
    with pytest.raises(CommandError) as error:
        call_command(*argv)
    message = str(error.value)
    assert names in message, message
    assert len(message) < 2000, "the error should name the value, not echo a huge one"
    assert snapshot() == before


def _manage(*argv: str) -> subprocess.CompletedProcess:
    url = urlsplit(os.environ["DATABASE_URL"])
    name = connections["default"].settings_dict["NAME"]
    environ = {
        **os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT),
        "DATABASE_URL": url._replace(path="/" + name).geturl(),
        "REPLICA_URL": urlsplit(os.environ["REPLICA_URL"])._replace(path="/" + name).geturl(),
    }
    return subprocess.run([sys.executable, "manage.py", *argv], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=120)


@LIVE
@pytest.mark.parametrize("argv, names", [
    (["tenancy", "status", "--tenant", SQLISH], "--tenant"),
    (["tenancy", "status", "--database", "nope"], "--database"),
    (["lint_migrations", "--pending", "nope"], "--pending"),
    (["partitions", "apply", "--ahead", "-3", "--yes"], "--ahead"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_through_manage_py_the_error_is_one_line_and_the_exit_status_non_zero(
    before, argv, names
):
    done = _manage(*argv)
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    assert names in done.stderr, done.stderr
    assert snapshot() == before


# ------------------------------------------------------------------ cookies and task headers

COOKIE = "data_arch_wal"


def _forged_cookies() -> dict[str, str]:
    from django.core import signing

    from data_arch.routing import dumps_token
    from data_arch.routing.middleware import SALT

    good = dumps_token({"default": "FFFFFFFF/FFFFFFFF"})
    return {
        "another key": signing.dumps({"default": "FFFFFFFF/FFFFFFFF"}, key="not-our-secret",
                                     salt=SALT),
        "another salt": signing.dumps({"default": "FFFFFFFF/FFFFFFFF"}, salt="something.else"),
        "payload edited": good.replace(good.split(":")[0], signing.b64_encode(
            b'{"default":"FFFFFFFF/FFFFFFFE"}').decode()),
        "signature cut": good[:-3],
        "a list, signed": signing.dumps(["FFFFFFFF/FFFFFFFF"], salt=SALT),
        "a number, signed": dumps_token({"default": 5}),
        "huge": "A" * 3000,
        "latin-1 bytes": "\xfc\xe9:" + good,
    }


@pytest.fixture
def replicated_customer(tenant_schemas, streaming_replica, wait_for_replica):
    from django_tenants.utils import schema_context

    from example_project.shop.models import Customer
    from tests.reliability.conftest import tenant_hosts

    host = tenant_hosts(["tenant_a"])["tenant_a"]
    with schema_context("tenant_a"):
        customer = Customer.objects.create(name="cookie buyer", email="c@example.com")
    wait_for_replica()
    yield host, customer.pk
    with schema_context("tenant_a"):
        Customer.objects.filter(pk=customer.pk).delete()
    connections["default"].set_schema_to_public()  # the tenant middleware leaves the request's


@LIVE
@pytest.mark.parametrize("kind", list(_forged_cookies()))
def test_a_forged_read_your_writes_cookie_is_ignored_by_the_example_views(
    replicated_customer, kind, caplog
):
    """A forged token claiming a position no replica has would pin the user to the primary;
    refused, the read goes to the replica as if there were no cookie, and it is logged."""
    import logging

    from django.test import Client

    from data_arch.routing import reset_health

    host, pk = replicated_customer
    reset_health()
    client = Client()
    client.cookies[COOKIE] = _forged_cookies()[kind]
    with caplog.at_level(logging.WARNING, logger="data_arch.routing"):
        response = client.get(f"/api/customers/{pk}", HTTP_HOST=host)
    assert response.status_code == 200
    assert response.json()["db"] == "replica"
    assert "ignored an invalid WAL token" in caplog.text


@LIVE
@pytest.mark.slow
@pytest.mark.parametrize("header", [
    {"pk": 999_999, "schema_name": "tenant_a"},      # no such tenant
    {"pk": "1 OR 1=1", "schema_name": "tenant_a"},   # not an id
    {"pk": None, "schema_name": "pg_catalog"},       # a system schema
    {"pk": None, "schema_name": "tenant_a; SET ROLE postgres"},
    "tenant_a",                                      # not a header the client sends
], ids=["unknown pk", "sql-ish pk", "system schema", "sql-ish schema", "a string"])
def test_a_forged_tenant_task_header_is_refused_by_the_worker(
    tenant_schemas, celery_worker, header
):
    from data_arch.tenancy.celery import HEADER
    from example_project.billing.tasks import invoice_numbers

    result = invoice_numbers.apply_async(headers={HEADER: header})
    with pytest.raises(Exception) as raised:
        result.get(timeout=60)
    assert type(raised.value).__name__ == "InvalidTenantError", raised.value


@LIVE
@pytest.mark.slow
@pytest.mark.parametrize("header", [
    "garbage", {"default": "FFFFFFFF"}, {"default": 5}, ["0/1"], {"default": "0/1" * 5000},
], ids=["string", "no slash", "a number", "a list", "huge"])
def test_a_malformed_wal_task_header_is_ignored_and_the_task_still_reads(
    replicated_customer, celery_worker, header
):
    from django.contrib.auth.models import User

    from data_arch.routing.celery import HEADER
    from example_project.shop.tasks import find_user

    User.objects.get_or_create(username="header-check")
    from data_arch.testing.pytest_plugin import replica_caught_up

    replica_caught_up()
    result = find_user.apply_async(("header-check",), headers={HEADER: header})
    assert result.get(timeout=60) == {"found": True, "db": "replica"}
