"""pytest plugin: real services for a Django project's tests.

Enable with ``-p data_arch.testing.pytest_plugin`` (or ``pytest_plugins = [...]`` in the root
conftest). Before Django's settings are imported it starts a PostgreSQL primary, a streaming
replica and Redis with :mod:`data_arch.testing.services` -- or uses ``DATABASE_URL``,
``REPLICA_URL`` and ``REDIS_URL`` when set -- and exports those three variables, so settings
that read them (as the example project's do) reach the throwaway servers.

Fixtures:

* ``data_arch_services`` -- the :class:`~data_arch.testing.services.Services` in use;
* ``streaming_replica``  -- the same, skipping the test when there is no separate standby;
* ``wait_for_replica``   -- a function that waits until the replica has replayed the primary;
* ``redis_cache``        -- the default django-redis cache, flushed before the test;
* ``celery_worker``      -- a real ``celery worker`` process on the test database (session);
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest

from data_arch.testing import services as _services

_STARTED: _services.Services | None = None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "data_arch_celery_app",
        "Celery app (the -A argument) the celery_worker fixture starts",
        default="",
    )
    parser.addoption(
        "--no-data-arch-services",
        action="store_true",
        help="do not start PostgreSQL/Redis; use DATABASE_URL, REPLICA_URL and REDIS_URL as set",
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    # Runs before pytest-django imports settings, so they see the URLs exported here.
    global _STARTED
    if not early_config.known_args_namespace.__dict__.get("no_data_arch_services") and not (
        os.environ.get("DATA_ARCH_SERVICES_RUNNING")
    ):
        try:
            _STARTED = _services.start_services()
        except _services.ServiceError as exc:
            raise pytest.UsageError(f"data_arch could not start test services: {exc}") from exc
        os.environ.update(_STARTED.environ())
        os.environ["DATA_ARCH_SERVICES_RUNNING"] = "1"
    return (yield)


def pytest_report_header(config: pytest.Config) -> list[str]:
    if _STARTED is None:
        return ["data_arch services: from DATABASE_URL / REPLICA_URL / REDIS_URL"]
    return ["data_arch services:", *("  " + line for line in _STARTED.describe().splitlines())]


def pytest_unconfigure(config: pytest.Config) -> None:
    global _STARTED
    if _STARTED is not None:
        _STARTED.stop()
        _STARTED = None
        os.environ.pop("DATA_ARCH_SERVICES_RUNNING", None)


@pytest.fixture(scope="session")
def data_arch_services() -> _services.Services:
    if _STARTED is not None:
        return _STARTED
    return _services.Services(
        database_url=os.environ.get("DATABASE_URL", ""),
        replica_url=os.environ.get("REPLICA_URL") or os.environ.get("DATABASE_URL", ""),
        redis_url=os.environ.get("REDIS_URL", ""),
    )


@pytest.fixture(scope="session")
def streaming_replica(data_arch_services: _services.Services) -> _services.Services:
    if not data_arch_services.has_streaming_replica:
        pytest.skip("needs a streaming replica (REPLICA_URL points at the primary)")
    return data_arch_services


def replica_caught_up(primary: str = "default", replica: str = "replica", timeout: float = 10) -> None:
    """Wait until ``replica`` has replayed everything ``primary`` has written so far."""
    from django.db import connections

    with connections[primary].cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_insert_lsn()")
        (lsn,) = cursor.fetchone()
    deadline = time.monotonic() + timeout
    with connections[replica].cursor() as cursor:
        while True:
            cursor.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn])
            if cursor.fetchone()[0]:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"replica {replica!r} did not replay {lsn} in {timeout}s")
            time.sleep(0.005)


@pytest.fixture
def wait_for_replica(streaming_replica) -> Callable[..., None]:
    return replica_caught_up


@pytest.fixture
def redis_cache():
    from django.core.cache import caches

    cache = caches["default"]
    cache.clear()
    yield cache
    cache.clear()


def _url_with_database(url: str, name: str) -> str:
    return urlsplit(url)._replace(path="/" + name).geturl()


@pytest.fixture(scope="session")
def celery_worker(request, django_db_setup, django_db_blocker) -> Iterator[subprocess.Popen]:
    """A real ``celery worker`` process consuming from the test broker, on the test database."""
    from django.conf import settings
    from django.db import connections

    app = request.config.getini("data_arch_celery_app") or os.environ.get("CELERY_APP")
    if not app:
        raise pytest.UsageError("set the ini option data_arch_celery_app to your Celery app")
    env = dict(os.environ)
    test_name = connections["default"].settings_dict["NAME"]
    env["DATABASE_URL"] = _url_with_database(os.environ["DATABASE_URL"], test_name)
    if os.environ.get("REPLICA_URL"):
        env["REPLICA_URL"] = _url_with_database(os.environ["REPLICA_URL"], test_name)
    env["DJANGO_SETTINGS_MODULE"] = settings.SETTINGS_MODULE
    env["PYTHONPATH"] = os.pathsep.join([str(request.config.rootpath), env.get("PYTHONPATH", "")])
    hostname = f"data-arch-test-{os.getpid()}@%h"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", app, "worker", "--pool=solo",
            "--concurrency=1", "--loglevel=INFO", "--without-gossip", "--without-mingle",
            "--without-heartbeat", "-n", hostname,
        ],
        env=env,
        cwd=str(request.config.rootpath),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline() if process.stdout else ""
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if " ready." in line:
            break
    else:
        process.kill()
    if process.poll() is not None or not any(" ready." in line for line in lines):
        process.kill()
        raise RuntimeError("celery worker did not start:\n" + "".join(lines[-50:]))
    # Keep draining its output so the pipe never fills and blocks the worker.
    import threading

    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
    yield process
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@pytest.fixture
def replica_replay_paused(streaming_replica, django_db_blocker) -> Iterator[str]:
    """Strict mode: the replica stops replaying WAL for the test, so any read the router
    sends there after a write misses that write -- deterministically. Replay always resumes
    in teardown. Yields the replica alias."""
    from django.db import connections

    alias = "replica"
    with django_db_blocker.unblock():
        replica_caught_up("default", alias)
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT pg_wal_replay_pause()")
    try:
        yield alias
    finally:
        with django_db_blocker.unblock():
            try:
                with connections[alias].cursor() as cursor:
                    cursor.execute("SELECT pg_wal_replay_resume()")
            except Exception:
                # The connection may have died with the test; resume over a fresh one.
                connections[alias].close()
                with connections[alias].cursor() as cursor:
                    cursor.execute("SELECT pg_wal_replay_resume()")


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    """Build the test databases with every read on the primary.

    While Django creates and migrates the test database, a mirror alias (the replica) still
    points at the non-test database; only afterwards is it switched to the test one. A read the
    router sent there during migrations (django-tenants lists tenants right after migrating the
    public schema) would look in the wrong database.
    """
    if fixturedef.argname != "django_db_setup":
        return (yield)
    from django.conf import settings

    if "data_arch.routers.ReplicaRouter" not in getattr(settings, "DATABASE_ROUTERS", []):
        return (yield)
    from data_arch.routing import use_primary

    with use_primary():
        return (yield)
