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
