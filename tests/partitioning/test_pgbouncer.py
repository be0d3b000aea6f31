"""Maintenance through PgBouncer in transaction mode: no lock that outlives a transaction."""

import threading

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
