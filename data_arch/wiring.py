"""Every hook data_arch installs, by name, in one place: called from ``DataArchConfig.ready()``.

Nothing is installed by importing a module. :func:`install` connects:

* ``connection_created`` -> :func:`install_wrappers`, which puts data_arch's statement wrappers
  at the front of each PostgreSQL connection's ``execute_wrappers``, in this declared order
  (Django runs the first one outermost):

  1. ``routing.writes.watch_writes`` -- on primaries: after a statement succeeded, notes that
     the context wrote. Outermost, so it sees the statement exactly as the ORM wrote it.
     (``cursor.callproc()`` bypasses execute wrappers: ``routing.writes.watch_callproc`` gives
     the connection cursors that note it.)
  2. ``routing.failover.retry_reads`` -- on replicas: a read whose connection broke (or that a
     hot-standby conflict cancelled) is re-run on another connection through that connection's
     own cursor, so every inner wrapper runs again there, on the statement the ORM wrote.
  3. ``tenancy.rls.set_tenant`` -- everywhere: runs the statement with the current tenant's
     RLS setting and search_path set for its own transaction. Innermost, so what it adds to a
     statement (and the result set it skips) is seen by no other wrapper.

  Each wrapper decides per call whether it applies (the alias's role comes from the current
  settings), so a connection never carries a stale chain after a setting changes;
* the routing signals (migrations), the Celery signals of tenancy and routing (when Celery is
  installed), the schema-editor hook of partitioning, the cache's write hooks and its
  start-up discovery of cached models (``caching.invalidation.install``), data_arch's
  Prometheus metrics (when prometheus_client is installed and ``METRICS.ENABLED``), and the
  ``setting_changed`` receiver that clears the memoised settings.
"""

from __future__ import annotations

from typing import Any

from django.core.signals import setting_changed
from django.db.backends.signals import connection_created
from django.db.models.signals import post_migrate, pre_migrate

from data_arch import conf
from data_arch.routing.failover import retry_reads
from data_arch.routing.migrations import on_post_migrate, on_pre_migrate
from data_arch.routing.writes import watch_callproc, watch_writes
from data_arch.tenancy import connection as tenancy_connection
from data_arch.tenancy.rls import set_tenant

__all__ = ["WRAPPERS", "install", "install_wrappers"]

#: data_arch's execute wrappers, outermost first (see the module docstring for why).
WRAPPERS = (watch_writes, retry_reads, set_tenant)


def install_wrappers(connection: Any) -> None:
    """Put :data:`WRAPPERS` first in ``connection.execute_wrappers``, in order (idempotent).

    A caller's own ``with connection.execute_wrapper(...)`` is appended after them (inner) and
    removed again by Django; wrappers placed before ours stay outside.
    """
    if connection.vendor != "postgresql":
        return
    watch_callproc(connection)  # callproc() never reaches a wrapper
    tenancy_connection.prepare(connection)  # nor do COPY and stream()
    wrappers = connection.execute_wrappers
    if wrappers[: len(WRAPPERS)] == list(WRAPPERS):
        return
    others = [w for w in wrappers if w not in WRAPPERS]
    wrappers[:] = [*WRAPPERS, *others]


def _on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    install_wrappers(connection)


def _install_metrics() -> None:
    try:
        import prometheus_client  # noqa: F401 -- metrics exist only where the client does
    except ImportError:
        return
    try:
        if not conf.metrics_settings().enabled:
            return
    except conf.SettingError:
        return  # data_arch.E001 reports it
    from data_arch import prometheus

    prometheus.install()


def install() -> None:
    """Connect every data_arch hook (idempotent)."""
    from django.db import connections

    setting_changed.connect(conf.clear_cache, dispatch_uid="data_arch.conf.clear_cache")
    connection_created.connect(
        _on_connection_created, weak=False, dispatch_uid="data_arch.wiring.wrappers"
    )
    tenancy_connection.install()
    for alias in connections:  # connections opened before ready() (rare) get them too
        connection = connections[alias]
        if connection.connection is not None:
            install_wrappers(connection)
    pre_migrate.connect(on_pre_migrate, dispatch_uid="data_arch.routing.pre_migrate")
    post_migrate.connect(on_post_migrate, dispatch_uid="data_arch.routing.post_migrate")

    from data_arch.backfills import ddl
    from data_arch.caching import invalidation
    from data_arch.partitioning import schema

    schema.install()
    ddl.install()
    invalidation.install()
    _install_metrics()
    try:
        import celery  # noqa: F401 -- the Celery hooks exist only where Celery does
    except ImportError:
        return
    from data_arch.routing import celery as routing_celery
    from data_arch.tenancy import celery as tenancy_celery

    tenancy_celery.install()
    routing_celery.install()
