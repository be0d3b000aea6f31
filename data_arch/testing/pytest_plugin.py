"""pytest plugin: fixtures for a Django project's tests against real services.

Enable with ``-p data_arch.testing.pytest_plugin`` (or ``pytest_plugins = [...]`` in the root
conftest). It starts nothing: point ``DATABASE_URL``, ``REPLICA_URL`` and ``REDIS_URL`` at the
servers your tests use (your settings read them), or let a launcher started earlier in the same
run register what it started with :func:`register_services`.

Fixtures:

* ``data_arch_services`` -- the services in use (URLs, and the server handles when a launcher
  registered them);
* ``streaming_replica``  -- the same, skipping the test when there is no separate standby;
* ``wait_for_replica``   -- a function that waits until the replica has replayed the primary;
* ``redis_cache``        -- the default django-redis cache, flushed before the test;
* ``celery_worker``      -- a real ``celery worker`` process on the test database (session);
* ``replica_replay_paused`` -- replay paused on the replica for the test, always resumed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest


@dataclass(frozen=True)
class ServiceURLs:
    """The services given by environment variables."""

    database_url: str
    replica_url: str
    redis_url: str

    @property
    def has_streaming_replica(self) -> bool:
        return self.replica_url not in ("", self.database_url)

    def environ(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.database_url,
            "REPLICA_URL": self.replica_url,
            "REDIS_URL": self.redis_url,
        }


_REGISTERED: Any = None


def register_services(services: Any) -> None:
    """Make ``services`` (an object with ``database_url``, ``replica_url``, ``redis_url`` and
    ``has_streaming_replica``) what ``data_arch_services`` returns; None to unregister."""
    global _REGISTERED
    _REGISTERED = services


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "data_arch_celery_app",
        "Celery app (the -A argument) the celery_worker fixture starts",
        default="",
    )


@pytest.fixture(scope="session")
def data_arch_services() -> Any:
    if _REGISTERED is not None:
        return _REGISTERED
    return ServiceURLs(
        database_url=os.environ.get("DATABASE_URL", ""),
        replica_url=os.environ.get("REPLICA_URL") or os.environ.get("DATABASE_URL", ""),
        redis_url=os.environ.get("REDIS_URL", ""),
    )


@pytest.fixture(scope="session")
def streaming_replica(data_arch_services: Any) -> Any:
    if not data_arch_services.has_streaming_replica:
        pytest.skip("needs a streaming replica (REPLICA_URL points at the primary)")
    return data_arch_services


def replica_caught_up(primary: str = "default", replica: str = "replica", timeout: float = 30) -> None:
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


def celery_environ(config: pytest.Config, settings_module: str | None = None) -> dict[str, str]:
    """The environment of a Celery process (worker or beat) on the test database:
    ``settings_module`` or the tests' own settings."""
    from django.conf import settings
    from django.db import connections

    env = dict(os.environ)
    test_name = connections["default"].settings_dict["NAME"]
    env["DATABASE_URL"] = _url_with_database(os.environ["DATABASE_URL"], test_name)
    if os.environ.get("REPLICA_URL"):
        env["REPLICA_URL"] = _url_with_database(os.environ["REPLICA_URL"], test_name)
    env["DJANGO_SETTINGS_MODULE"] = settings_module or settings.SETTINGS_MODULE
    env["PYTHONPATH"] = os.pathsep.join([str(config.rootpath), env.get("PYTHONPATH", "")])
    return env


def celery_app_name(config: pytest.Config) -> str:
    """The -A argument of the Celery processes the fixtures start."""
    app = config.getini("data_arch_celery_app") or os.environ.get("CELERY_APP")
    if not app:
        raise pytest.UsageError("set the ini option data_arch_celery_app to your Celery app")
    return app


def start_celery_worker(
    config: pytest.Config, *args: str, name: str = "data-arch-test",
    settings_module: str | None = None, environ: dict[str, str] | None = None,
) -> subprocess.Popen:
    """Start a real ``celery worker`` on the test database and wait until it is ready.

    ``args`` replace the default pool options (``--pool=solo --concurrency=1``), e.g.
    ``"--pool=prefork", "--concurrency=8"``; ``settings_module`` replaces the tests' settings;
    ``environ`` adds to the worker's environment. Stop it with :func:`stop_celery_worker`.
    """
    app = celery_app_name(config)
    env = {**celery_environ(config, settings_module), **(environ or {})}
    hostname = f"{name}-{os.getpid()}@%h"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", app, "worker",
            *(args or ("--pool=solo", "--concurrency=1")),
            "--loglevel=INFO", "--without-gossip", "--without-mingle",
            "--without-heartbeat", "-n", hostname,
        ],
        env=env,
        cwd=str(config.rootpath),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
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
    if process.poll() is not None or not any(" ready." in line for line in lines):
        stop_celery_worker(process)
        raise RuntimeError("celery worker did not start:\n" + "".join(lines[-50:]))
    # Keep draining its output so the pipe never fills and blocks the worker.
    import threading

    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
    return process


def stop_celery_worker(process: subprocess.Popen) -> None:
    """Stop the worker and its pool children (its own process group)."""
    import signal

    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@pytest.fixture(scope="session")
def celery_worker(request, django_db_setup, django_db_blocker) -> Iterator[subprocess.Popen]:
    """A real ``celery worker`` process consuming from the test broker, on the test database."""
    process = start_celery_worker(request.config)
    yield process
    stop_celery_worker(process)


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
