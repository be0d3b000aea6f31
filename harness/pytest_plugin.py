"""pytest plugin: start the harness's services before Django's settings are imported.

Enabled with ``-p harness.pytest_plugin`` (the project's pytest configuration does). It starts
a PostgreSQL primary, a streaming replica and Redis with :mod:`harness.services` -- each of
``DATABASE_URL``, ``REPLICA_URL`` and ``REDIS_URL`` that is set is checked and used instead --
exports the three variables and registers the servers with
:mod:`data_arch.testing.pytest_plugin`, whose fixtures the tests use.

SIGTERM and SIGHUP are handled like Ctrl-C: pytest stops, tears its fixtures down (the Celery
worker among them) and this plugin stops the services, instead of the process just dying.
"""

from __future__ import annotations

import os

import pytest

from data_arch.testing import pytest_plugin as fixtures
from harness import processes as _processes
from harness import services as _services

_STARTED: _services.Services | None = None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--no-data-arch-services",
        action="store_true",
        help="do not start PostgreSQL/Redis; use DATABASE_URL, REPLICA_URL and REDIS_URL as set",
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    # Runs before pytest-django imports settings, so they see the URLs exported here.
    global _STARTED
    _processes.signals_raise()
    wanted = not early_config.known_args_namespace.__dict__.get("no_data_arch_services")
    if wanted and not os.environ.get("DATA_ARCH_SERVICES_RUNNING"):
        try:
            _STARTED = _services.start_services()
        except _services.ServiceError as exc:
            raise pytest.UsageError(f"could not start the test services: {exc}") from exc
        os.environ.update(_STARTED.environ())
        os.environ["DATA_ARCH_SERVICES_RUNNING"] = "1"
        fixtures.register_services(_STARTED)
    return (yield)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # ``dev.py test`` runs the suite once per PostgreSQL version; a test marked
    # version_independent needs no particular version, so only the first pass runs it.
    ran_in = os.environ.get("DATA_ARCH_VERSION_INDEPENDENT_RAN")
    if not ran_in:
        return
    skip = pytest.mark.skip(reason=f"version-independent: this run's {ran_in} pass ran it")
    for item in items:
        if item.get_closest_marker("version_independent"):
            item.add_marker(skip)


def pytest_report_header(config: pytest.Config) -> list[str]:
    if _STARTED is None:
        return ["services: from DATABASE_URL / REPLICA_URL / REDIS_URL"]
    return ["services:", *("  " + line for line in _STARTED.describe().splitlines())]


def pytest_unconfigure(config: pytest.Config) -> None:
    global _STARTED
    if _STARTED is not None:
        with _processes.signals_deferred():
            _STARTED.stop()
        _STARTED = None
        fixtures.register_services(None)
        os.environ.pop("DATA_ARCH_SERVICES_RUNNING", None)


@pytest.fixture
def failover_pair():
    """A throwaway PostgreSQL primary + streaming replica for one test to promote (see
    :class:`harness.services.FailoverPair`); the session's servers are not touched."""
    binaries = _STARTED.binaries if _STARTED is not None else None
    try:
        pair = _services.start_failover_pair(binaries=binaries)
    except _services.ServiceError as exc:
        pytest.skip(f"cannot start a PostgreSQL pair to promote: {exc}")
    try:
        yield pair
    finally:
        pair.stop()
