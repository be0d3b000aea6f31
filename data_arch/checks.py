"""Django system checks for data_arch (ids ``data_arch.E0xx`` / ``data_arch.W0xx``)."""

from __future__ import annotations

from typing import Any

from django.core import checks

from data_arch import conf


@checks.register(checks.Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E001: ``DATA_ARCH`` is malformed."""
    return [
        checks.Error(message, hint="Fix the DATA_ARCH setting.", id="data_arch.E001")
        for message in conf.configuration_errors()
    ]


@checks.register()
def check_postgresql(app_configs: Any = None, databases: Any = None, **kwargs: Any):
    """E002: a database data_arch manages is not PostgreSQL."""
    from django.conf import settings

    errors = []
    for alias, config in settings.DATABASES.items():
        engine = config.get("ENGINE", "")
        original = getattr(settings, "ORIGINAL_BACKEND", "")
        if "postgresql" not in engine and "postgresql" not in original:
            errors.append(
                checks.Error(
                    f"DATABASES[{alias!r}] uses {engine!r}; data_arch needs PostgreSQL 15+.",
                    hint="Use django.db.backends.postgresql (directly or as ORIGINAL_BACKEND).",
                    id="data_arch.E002",
                )
            )
    return errors


def _several_processes() -> str | None:
    """What says this process is one of several serving the same metrics, if anything."""
    import os
    import sys

    if "gunicorn" in sys.modules or "gunicorn" in os.environ.get("SERVER_SOFTWARE", ""):
        return "gunicorn"
    if "uwsgi" in sys.modules:
        return "uWSGI"
    if (os.environ.get("WEB_CONCURRENCY") or "1") not in ("", "0", "1"):
        return "WEB_CONCURRENCY"
    return None


@checks.register()
def check_metrics_processes(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W020: several processes serve /metrics but prometheus_client is not in multiprocess mode."""
    import os

    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return []
    try:
        if not conf.metrics_settings().enabled:
            return []
    except conf.SettingError:
        return []
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir"):
        return []
    server = _several_processes()
    if server is None:
        return []
    return [checks.Warning(
        f"{server} runs several processes but PROMETHEUS_MULTIPROC_DIR is not set: each scrape "
        "of /metrics shows one process's counters",
        hint="Set PROMETHEUS_MULTIPROC_DIR to an empty folder shared by the processes and "
        "route /metrics to data_arch.prometheus.metrics_view.",
        id="data_arch.W020",
    )]
