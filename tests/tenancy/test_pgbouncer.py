"""Tenants through a real PgBouncer in transaction mode with ONE server connection: two tenants'
requests interleave on that connection and neither sees the other's rows nor leaves its
context to the next client -- the row-level tenants as the ordinary role under the signed RLS
context (the default), the schema tenants through django-tenants' search_path."""

import contextlib
import datetime
import threading

import psycopg
import pytest
from django.db import connections, transaction

from data_arch.tenancy import Tenant, tenant_context
from example_project.billing.models import Account, Invoice

DAY = datetime.date(2026, 3, 1)
APP, OWNER = "app_bouncer", "owner_bouncer"
ROUNDS = 6

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture(scope="module")
def committed(row_tenants, live_db):
    """Three invoices in each of two row-level tenants, committed."""
    for tenant in row_tenants[:2]:
        with tenant_context(tenant):
            account = Account.objects.create(name="b", email=f"b@t{tenant.pk}.com")
            for n in range(3):
                Invoice.objects.create(account=account, number=f"B{tenant.pk}-{n}",
                                       total_cents=n, issued_on=DAY, due_on=DAY)
    return row_tenants[:2]


@pytest.fixture(scope="module")  # before the test's database access is set up: it names them
def bouncer(app_role, live_db):
    """PgBouncer (transaction mode, one server connection per user) in front of the primary,
    as ``app_bouncer`` (the ordinary role) and ``owner_bouncer`` (the superuser)."""
    from harness import services

    default = connections["default"].settings_dict
    try:
        server = services.start_pgbouncer(int(default["PORT"]), users=(app_role,))
    except services.ServiceError as exc:
        pytest.skip(f"no PgBouncer to test through: {exc}")
    through = {"HOST": "127.0.0.1", "PORT": str(server.port), "CONN_MAX_AGE": 0}
    connections.settings[APP] = {**connections.settings["app"], **through}
    connections.settings[OWNER] = {
        **default, **through, "TEST": {**default.get("TEST", {}), "MIRROR": None},
    }
    try:
        yield server
    finally:
        for alias in (APP, OWNER):
            with contextlib.suppress(Exception):
                connections[alias].close()
            connections.settings.pop(alias, None)
            with contextlib.suppress(AttributeError):
                delattr(connections._connections, alias)
        server.stop()


def next_client(server, user):
    """A client that is not data_arch, on the pool's one server connection after a request:
    what the last transaction left on it."""
    url = f"host=127.0.0.1 port={server.port} dbname={connections['default'].settings_dict['NAME']}"
    with psycopg.connect(f"{url} user={user}", autocommit=True) as client:
        return client.execute(
            "SELECT pg_backend_pid(), current_setting('data_arch.tenant_id', true), "
            "(SELECT count(*) FROM billing_invoice)"
        ).fetchone()


def alternate(*workers):
    """Run ``workers`` (callables taking ``turn``) in threads, strictly one step at a time:
    ``turn()`` hands the (only) server connection to the next worker and waits for its own
    turn again. Returns the workers' failures."""
    condition = threading.Condition()
    state = {"turn": 0, "done": set()}
    failures = []

    def run(index, worker):
        def turn():
            with condition:
                state["turn"] = (state["turn"] + 1) % len(workers)
                condition.notify_all()
                while state["turn"] != index and len(state["done"]) < len(workers) - 1:
                    assert condition.wait(120), "the other tenant's request never finished"

        try:
            with condition:
                while state["turn"] != index:
                    assert condition.wait(120), "never got a turn"
            worker(turn)
        except BaseException as exc:  # noqa: BLE001 -- reported by the test
            failures.append(exc)
        finally:
            connections.close_all()
            with condition:
                state["done"].add(index)
                state["turn"] = (index + 1) % len(workers)
                condition.notify_all()

    threads = [threading.Thread(target=run, args=item) for item in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    assert not any(thread.is_alive() for thread in threads)
    return failures


def numbers(tenant):
    return [f"B{tenant.pk}-{n}" for n in range(3)]


def test_two_row_level_tenants_share_one_server_connection_and_nothing_else(
    committed, app_role, bouncer
):
    server_pids, leftovers = set(), []

    def requests(tenant):
        def worker(turn):
            for round_ in range(ROUNDS):
                with tenant_context(tenant):
                    # A request: ORM reads in autocommit, raw SQL that forgets the filter,
                    # then a transaction with a write, a server-side iterator and a rollback.
                    assert list(Invoice.objects.using(APP).order_by("number").values_list(
                        "number", flat=True)) == numbers(tenant)
                    with connections[APP].cursor() as cursor:
                        cursor.execute("SELECT number, pg_backend_pid() FROM billing_invoice "
                                       "ORDER BY number")
                        rows = cursor.fetchall()
                    assert [number for number, _pid in rows] == numbers(tenant)
                    server_pids.update(pid for _number, pid in rows)
                    with contextlib.suppress(_RolledBack), transaction.atomic(using=APP):
                        account = Account.objects.using(APP).get()
                        Invoice.objects.using(APP).create(
                            account_id=account.pk, number=f"B{tenant.pk}-new", total_cents=9,
                            issued_on=DAY, due_on=DAY)
                        seen = [invoice.number for invoice in Invoice.objects.using(APP)
                                .order_by("number").iterator(chunk_size=2)]
                        assert seen == [*numbers(tenant), f"B{tenant.pk}-new"]
                        raise _RolledBack
                    assert Invoice.objects.using(APP).count() == 3
                if round_ % 2:
                    connections[APP].close()  # the next request opens a new client connection
                leftovers.append(next_client(bouncer, app_role))
                turn()

        return worker

    a, b = committed
    assert alternate(requests(a), requests(b)) == []
    assert len(server_pids) == 1  # both tenants really went through the one server connection
    assert {pid for pid, _setting, _count in leftovers} == server_pids
    assert [(setting or "", count) for _pid, setting, count in leftovers] == [
        ("", 0)
    ] * (2 * ROUNDS)


def test_two_schema_tenants_share_one_server_connection_and_stay_in_their_schemas(
    migrated_tenant_schemas, live_db, bouncer
):
    from example_project.shop.models import Customer

    tenants = [Tenant(pk=None, schema_name=schema) for schema in migrated_tenant_schemas[:2]]

    def committed(create):  # outside the test's transaction: the workers must see it
        def work():
            try:
                for tenant in tenants:
                    with tenant_context(tenant):
                        Customer.objects.all().delete()
                        if create:
                            Customer.objects.create(name=f"of {tenant.schema_name}",
                                                    email="c@x.com")
            finally:
                connections.close_all()

        thread = threading.Thread(target=work)
        thread.start()
        thread.join(120)

    committed(create=True)

    def requests(tenant):
        def worker(turn):
            for round_ in range(ROUNDS):
                with tenant_context(tenant):
                    assert list(Customer.objects.using(OWNER).values_list("name", flat=True)) == [
                        f"of {tenant.schema_name}"]
                    with transaction.atomic(using=OWNER):
                        Customer.objects.using(OWNER).filter(name__startswith="of").update(
                            email=f"{round_}@{tenant.schema_name}.com")
                        assert Customer.objects.using(OWNER).get().email == (
                            f"{round_}@{tenant.schema_name}.com")
                if round_ % 2:
                    connections[OWNER].close()
                turn()

        return worker

    try:
        assert alternate(*(requests(tenant) for tenant in tenants)) == []
    finally:
        committed(create=False)


def in_thread(call):
    """``call()`` on this thread's own connections (autocommit, outside the test's
    transaction), which it closes after."""
    result = {}

    def run():
        try:
            result["value"] = call()
        except BaseException as exc:  # noqa: BLE001 -- raised below
            result["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(120)
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_the_deploy_check_warns_while_pooled_values_are_visible_to_other_sessions(
    app_role, bouncer
):
    from data_arch.tenancy.checks import check_application_role

    def warnings():
        ids = [m.id for m in check_application_role(databases=[APP])]
        with connections[APP].cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return ids, cursor.fetchone()[0]

    direct = connections["default"].settings_dict
    url = f"host={direct['HOST']} port={direct['PORT']} dbname={direct['NAME']} user=postgres"
    ids, server_pid = in_thread(warnings)
    assert "data_arch.W106" in ids
    assert "data_arch.W106" not in in_thread(
        lambda: [m.id for m in check_application_role(databases=["app"])])  # direct
    with psycopg.connect(url, autocommit=True) as superuser:
        superuser.execute(f'ALTER ROLE "{app_role}" SET track_activities = off')
        try:
            # The pool's server connection started before the change; its next one gets it.
            superuser.execute("SELECT pg_terminate_backend(%s)", [server_pid])
            for attempt in range(5):
                try:
                    ids, _pid = in_thread(warnings)
                    break
                except Exception:  # PgBouncer finds the closed server connection
                    if attempt == 4:
                        raise
            assert "data_arch.W106" not in ids
        finally:
            superuser.execute(f'ALTER ROLE "{app_role}" RESET track_activities')
            pids = in_thread(warnings)[1]
            superuser.execute("SELECT pg_terminate_backend(%s)", [pids])


class _RolledBack(Exception):
    pass
