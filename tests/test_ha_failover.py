"""Django follows a primary promotion through a multi-host HOST/PORT list.

A pair of its own (``failover_pair``) is promoted: the old primary is stopped and its replica
promoted, as an HA manager does. An alias configured with both hosts and
``target_session_attrs=read-write`` must write to the new primary within a bounded time, and
every write acknowledged before the switch must be there.
"""

import threading
import time

import psycopg
import pytest
from django.db import Error, connections

ALIAS = "ha_failover"
RESUME_WITHIN = 10.0  # seconds from the start of the failover to the first write on the new primary


@pytest.fixture
def ha_alias(failover_pair, django_db_blocker):
    """A Django alias with both servers in HOST/PORT, as the README's HA section configures it."""
    connections.settings[ALIAS] = connections.configure_settings(
        {
            "default": {},
            ALIAS: {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": "data_arch",
                "USER": "postgres",
                "HOST": failover_pair.hosts,
                "PORT": failover_pair.ports,
                "CONN_MAX_AGE": 0,
                "OPTIONS": {"target_session_attrs": "read-write", "connect_timeout": 2},
            },
        }
    )[ALIAS]
    with django_db_blocker.unblock():
        try:
            yield ALIAS
        finally:
            connections[ALIAS].close()
            del connections[ALIAS]
            del connections.settings[ALIAS]


def _write(alias: str, n: int) -> int:
    """Insert ``n``; return the port of the server that acknowledged it."""
    with connections[alias].cursor() as cursor:
        cursor.execute("INSERT INTO ha_writes (n) VALUES (%s) RETURNING inet_server_port()", [n])
        return cursor.fetchone()[0]


def test_writes_resume_on_the_promoted_replica(failover_pair, ha_alias):
    old_port, new_port = failover_pair.primary.port, failover_pair.replica.port
    with connections[ha_alias].cursor() as cursor:
        cursor.execute("CREATE TABLE ha_writes (n int PRIMARY KEY, at timestamptz DEFAULT now())")
    with psycopg.connect(failover_pair.url("standby")) as conn:  # the replica alias's choice
        assert conn.execute("SELECT inet_server_port()").fetchone() == (new_port,)
    acked: dict[int, int] = {}  # n -> port that acknowledged it
    for n in range(20):
        acked[n] = _write(ha_alias, n)
    assert set(acked.values()) == {old_port}

    failover = threading.Thread(target=failover_pair.promote)
    started = time.monotonic()
    failover.start()
    n, errors, resumed_at = 20, 0, None
    while time.monotonic() - started < RESUME_WITHIN + 5:
        n += 1
        try:
            port = _write(ha_alias, n)
        except Error:
            errors += 1
            # What Django does between requests: drop a connection that has failed.
            connections[ha_alias].close_if_unusable_or_obsolete()
            time.sleep(0.02)
            continue
        acked[n] = port
        if port == new_port:
            resumed_at = time.monotonic()
            break
    failover.join(60)
    assert resumed_at is not None, f"no write reached the promoted server in {RESUME_WITHIN + 5}s"
    resumed = resumed_at - started
    print(f"\nfailover: writes resumed on the promoted replica {resumed * 1000:.0f} ms after the "
          f"failover began ({errors} failed attempts, {len(acked)} acknowledged writes)")
    assert resumed < RESUME_WITHIN
    after = range(n + 1, n + 20)
    for k in after:
        acked[k] = _write(ha_alias, k)
    assert {acked[k] for k in after} == {new_port}  # never back to the stopped server

    with psycopg.connect(failover_pair.primary.url()) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        present = {row[0] for row in conn.execute("SELECT n FROM ha_writes")}
    assert set(acked) - present == set(), "acknowledged writes lost in the failover"
    assert not failover_pair.former_primary.running
    # With no standby left, prefer-standby falls back to the new primary.
    with psycopg.connect(failover_pair.url("prefer-standby")) as conn:
        assert conn.execute("SELECT inet_server_port()").fetchone() == (new_port,)
