"""data_arch's admin pages: through Django's test client, then in a real headless Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from data_arch.admin import plan_digest
from data_arch.partitioning import apply, plan

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "replica"])

ROOT = Path(__file__).resolve().parent.parent
PAGE = "/admin/data_arch/partitionedtable/"
AUDIT = "audit.AuditEntry"


def _drop_month_partitions() -> None:
    """Leave audit_auditentry with its default partition only: months are pending again."""
    from django.db import connections

    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'audit_auditentry' "
            "AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'"
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f'DROP TABLE "{name}"')


@pytest.fixture
def admin_client_() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


@pytest.fixture
def viewer() -> Client:
    """Staff who may view the partitions page but not act on it."""
    user = User.objects.create_user("viewer", "v@example.com", "pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_partitionedtable"))
    client = Client()
    client.force_login(user)
    return client


def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def test_plan_then_apply_runs_exactly_the_plan_shown(admin_client_):
    _drop_month_partitions()
    shown = admin_client_.get(PAGE, {"model": AUDIT, "plan": 1})
    assert shown.status_code == 200
    digest = shown.context["digest"]
    assert "create" in shown.content.decode()
    applied = admin_client_.post(PAGE, {"model": AUDIT, "schema": "public", "digest": digest},
                                 follow=True)
    assert any(m.startswith("Applied") for m in _messages(applied)), _messages(applied)
    assert not plan(models_=[AUDIT]).pending


def test_a_stale_plan_is_refused_and_nothing_changes(admin_client_):
    _drop_month_partitions()
    digest = admin_client_.get(PAGE, {"model": AUDIT, "plan": 1}).context["digest"]
    apply(plan(models_=[AUDIT], ahead=5))  # someone else changed the catalog meanwhile
    before = plan_digest(plan(models_=[AUDIT]))
    refused = admin_client_.post(PAGE, {"model": AUDIT, "schema": "public", "digest": digest},
                                 follow=True)
    assert any("changed since it was shown" in m for m in _messages(refused))
    assert plan_digest(plan(models_=[AUDIT])) == before


def test_a_model_that_is_not_partitioned_is_refused(admin_client_):
    response = admin_client_.post(PAGE, {"model": "auth.User", "schema": "public",
                                         "digest": "x"}, follow=True)
    assert any("not a partitioned model" in m for m in _messages(response))


def test_permissions_are_respected(viewer):
    assert viewer.get(PAGE).status_code == 200
    assert viewer.post(PAGE, {"model": AUDIT, "schema": "public", "digest": "x"}).status_code == 403
    assert viewer.get("/admin/data_arch/cachenamespace/").status_code == 403
    assert "Apply this plan" not in viewer.get(PAGE, {"plan": 1}).content.decode()


def test_the_other_pages(admin_client_, streaming_replica):
    replicas = admin_client_.get("/admin/data_arch/replicastatus/")
    assert replicas.status_code == 200 and "replica" in replicas.content.decode()
    (row,) = replicas.context["replicas"]
    assert row["verdict"].healthy and row["failures"] == 0 and row["since"] is not None
    ok = admin_client_.post("/admin/data_arch/cachenamespace/", {"tenant": ""}, follow=True)
    assert any("Invalidated" in m for m in _messages(ok))
    bad = admin_client_.post("/admin/data_arch/cachenamespace/", {"tenant": "no_such"},
                             follow=True)
    assert any("Nothing invalidated" in m and "no_such" in m for m in _messages(bad))
    assert admin_client_.get("/admin/data_arch/tenanthealth/").status_code == 200
    assert admin_client_.get("/admin/data_arch/maintenancerun/").status_code == 200
    index = admin_client_.get("/admin/").content.decode()
    for name in ("Partitioned tables", "Replicas", "Cache namespaces", "Tenants",
                 "Maintenance runs"):
        assert name in index, name


# --------------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def browser(request):
    from harness.tools import ToolMissing, chromium

    try:
        binary, driver_path = chromium()
    except ToolMissing as exc:
        pytest.skip(str(exc))
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


@pytest.fixture
def shots(request) -> Path:
    folder = ROOT / "var" / "test-output" / "admin"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _login(browser, live_server, username: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    # Wait for the redirect after login to land, or the next get() races it.
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 20).until(lambda b: b.find_elements(By.ID, "user-tools"))


@pytest.mark.slow
def test_the_admin_in_a_real_browser(browser, live_server, shots, streaming_replica):
    from selenium.webdriver.common.by import By

    User.objects.create_superuser("root", "root@example.com", "pw")
    limited = User.objects.create_user("limited", "l@example.com", "pw", is_staff=True)
    limited.user_permissions.add(Permission.objects.get(codename="view_partitionedtable"))
    _drop_month_partitions()

    _login(browser, live_server, "root", "pw")
    assert "Site administration" in browser.page_source
    browser.save_screenshot(str(shots / "index.png"))
    for page in ("partitionedtable", "replicastatus", "cachenamespace", "tenanthealth",
                 "maintenancerun"):
        browser.get(f"{live_server.url}/admin/data_arch/{page}/")
        assert "Server Error" not in browser.page_source
        browser.save_screenshot(str(shots / f"{page}.png"))

    browser.get(f"{live_server.url}{PAGE}?model={AUDIT}")
    browser.find_element(By.ID, "plan-button").click()
    steps = browser.find_element(By.ID, "plan").text
    assert re.search(r"create audit_auditentry_p\d{4}_\d{2}", steps), steps
    browser.save_screenshot(str(shots / "plan.png"))
    browser.find_element(By.ID, "apply-button").click()
    assert "Applied" in browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
    browser.save_screenshot(str(shots / "applied.png"))
    assert not plan(models_=[AUDIT]).pending
    ahead = browser.find_element(By.CSS_SELECTOR, "tr[data-table=audit_auditentry] .months-ahead")
    assert int(ahead.text) >= 2

    browser.get(f"{live_server.url}/admin/data_arch/cachenamespace/")
    browser.find_element(By.ID, "invalidate-button").click()
    assert "Invalidated" in browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text

    _login(browser, live_server, "limited", "pw")
    browser.get(f"{live_server.url}/admin/data_arch/cachenamespace/")
    assert "403" in browser.page_source or "Forbidden" in browser.page_source
    browser.save_screenshot(str(shots / "refused.png"))
