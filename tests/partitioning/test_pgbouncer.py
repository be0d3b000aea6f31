"""Maintenance through PgBouncer in transaction mode: no lock that outlives a transaction."""

import threading
from typing import Self

import pytest
from django.db import connection, connections

from data_arch.partitioning import apply, plan, sql
from tests.partitioning.test_public_schema import audit  # noqa: F401 -- the fixture

ALIAS = "bouncer"


@pytest.fixture
def bouncer(audit):  # noqa: F811
    from harness import services

    try:
        server = services.start_pgbouncer(int(connections["default"].settings_dict["PORT"]))
    except services.ServiceError as exc:
        pytest.skip(f"no PgBouncer to test through: {exc}")
    connections.settings[ALIAS] = {
        **connections["default"].settings_dict,
        "HOST": "127.0.0.1",
        "PORT": str(server.port),
    }
    try:
        yield ALIAS
    finally:
        connections[ALIAS].close()
        del connections[ALIAS]
        del connections.settings[ALIAS]
        server.stop()


def advisory_locks_held() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s",
            [sql.LOCK_CLASS if hasattr(sql, "LOCK_CLASS") else 0],
        )
        held = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        return held + cursor.fetchone()[0]


def test_two_applies_through_a_transaction_pooler_never_both_do_an_action(bouncer):
    """Both clients share one server connection (pool size 1): a session-level lock taken by
    one would be granted to the other too, and its unlock could land anywhere."""
    errors, results = [], []
    barrier = threading.Barrier(2)

    def run() -> None:
        try:
            the_plan = plan(models_=["audit.AuditEntry"], using=bouncer, ahead=6)
            barrier.wait()
            results.append(apply(the_plan))
        except Exception as exc:  # noqa: BLE001 -- asserted below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(not getattr(r, "failures", []) for r in results)
    done = [label for r in results for label in r.done]
    assert len(done) == len(set(done)) == 7  # each month created once, by one run or the other
    assert not plan(models_=["audit.AuditEntry"], ahead=6).pending
    assert advisory_locks_held() == 0  # nothing stays locked after the runs


class SettingWatcher:
    """A client of the same PgBouncer that reads ``lock_timeout`` in a loop: a session setting
    made by maintenance on the pooled server connection shows up here."""

    def __init__(self, alias: str) -> None:
        import psycopg

        settings = connections[alias].settings_dict
        self.client = psycopg.connect(
            host=settings["HOST"], port=settings["PORT"], dbname=settings["NAME"],
            user=settings["USER"], autocommit=True,
        )
        self.seen: dict[str, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="lock_timeout watcher")

    def run(self) -> None:
        while not self.stop.is_set():
            value = self.client.execute("SHOW lock_timeout").fetchone()[0]
            self.seen[value] = self.seen.get(value, 0) + 1

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.client.close()


def test_retention_through_a_transaction_pooler_leaves_no_session_setting_behind(bouncer):
    """``DETACH ... CONCURRENTLY`` cannot run in a transaction, so its lock_timeout would be a
    session setting; behind a transaction pooler that setting lands on a server connection
    other clients get next. Through a pooler, retention detaches in a transaction instead."""
    import datetime as dt

    from django.test import override_settings

    start = dt.datetime(2025, 5, 1, tzinfo=dt.UTC)
    apply(plan(models_=["audit.AuditEntry"], ahead=8, now=start))
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE audit_auditentry_default")
        cursor.execute("SHOW lock_timeout")
        server_default = cursor.fetchone()[0]
    settings = {"PARTITIONS": {"DETACH_CONCURRENTLY": True}}  # AuditEntry archives
    try:
        with override_settings(DATA_ARCH=settings):
            the_plan = plan(models_=["audit.AuditEntry"], using=bouncer, retain=3)
            detaches = [a for a in the_plan.tables[0].actions if a.kind == "archive"]
            assert len(detaches) == 9
            with SettingWatcher(bouncer) as watcher:
                result = apply(the_plan)
        assert not result.failures, result.failures
        assert len([label for label in result.done if " archive " in label]) == 9
        assert sum(watcher.seen.values()) > 20
        assert set(watcher.seen) == {server_default}, watcher.seen
        assert not any(
            s.endswith("CONCURRENTLY") for a in detaches for s in a.statements
        )
        assert any("pooler" in p for p in the_plan.tables[0].problems)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(sql.create_default("audit_auditentry"))
