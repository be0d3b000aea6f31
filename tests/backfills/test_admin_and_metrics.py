"""Backfill progress where an operator looks: the admin (with pause/resume/cancel) and /metrics."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.test import Client, override_settings
from prometheus_client.parser import text_string_to_metric_families

from data_arch.backfills import BackfillError, run
from data_arch.backfills.models import BackfillCursor, State

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "replica"])

PAGE = "/admin/data_arch/backfillcursor/"


def _scrape() -> dict[tuple[str, tuple], float]:
    with override_settings(DATA_ARCH={**settings.DATA_ARCH, "METRICS": {"CACHE_SECONDS": 0}}):
        response = Client().get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def _value(samples, metric, **labels) -> float | None:
    return samples.get((metric, tuple(sorted(labels.items()))))


@pytest.fixture
def half_done(items):
    """bf_fragile stopped after 3 batches of 1000 rows: a backfill in progress."""
    items(1000)
    [progress] = run("bf_fragile", max_batches=3)
    assert progress.state == State.PENDING and 0 < progress.rows_done < 1000
    return progress


@pytest.fixture
def admin_client_() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def test_metrics_show_rows_done_estimated_rate_and_eta(half_done):
    samples = _scrape()
    assert _value(samples, "data_arch_backfill_rows_done", backfill="bf_fragile") == \
        half_done.rows_done
    assert _value(samples, "data_arch_backfill_rows_estimated", backfill="bf_fragile") == 1000
    assert _value(samples, "data_arch_backfill_cursors", backfill="bf_fragile",
                  state="pending") == 1
    rate = _value(samples, "data_arch_backfill_rows_per_second", backfill="bf_fragile")
    assert rate == pytest.approx(half_done.rate)
    eta = _value(samples, "data_arch_backfill_eta_seconds", backfill="bf_fragile")
    assert eta == pytest.approx((1000 - half_done.rows_done) / half_done.rate)
    run("bf_fragile")  # finished: no time left, every row done
    samples = _scrape()
    assert _value(samples, "data_arch_backfill_rows_done", backfill="bf_fragile") == 1000
    assert _value(samples, "data_arch_backfill_cursors", backfill="bf_fragile", state="done") == 1
    assert _value(samples, "data_arch_backfill_eta_seconds", backfill="bf_fragile") == 0


def test_the_admin_lists_progress_and_pauses_resumes_and_cancels(half_done, admin_client_):
    page = admin_client_.get(PAGE)
    assert page.status_code == 200
    html = page.content.decode()
    assert "bf_fragile" in html
    assert f"{100 * half_done.rows_done / 1000:.1f}%" in html  # rows done of the estimate
    assert f"{half_done.rate:,.0f}" in html  # rows/s
    row = BackfillCursor.objects.get(name="bf_fragile")
    for action, state in (("pause", State.PAUSED), ("resume", State.PENDING),
                          ("cancel", State.CANCELLED)):
        done = admin_client_.post(PAGE, {"action": action, "_selected_action": [row.pk]},
                                  follow=True)
        assert done.status_code == 200
        row.refresh_from_db()
        assert row.state == state, (action, [str(m) for m in done.context["messages"]])
    with pytest.raises(BackfillError, match="was cancelled"):
        run("bf_fragile")  # a cancelled backfill does not run


def test_viewing_staff_see_progress_but_cannot_act(half_done):
    user = User.objects.create_user("viewer", "v@example.com", "pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_backfillcursor"))
    client = Client()
    client.force_login(user)
    assert "bf_fragile" in client.get(PAGE).content.decode()
    row = BackfillCursor.objects.get(name="bf_fragile")
    client.post(PAGE, {"action": "pause", "_selected_action": [row.pk]})
    row.refresh_from_db()
    assert row.state == State.PENDING
