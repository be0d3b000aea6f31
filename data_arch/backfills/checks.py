"""System checks of backfills and the DDL guard (ids ``data_arch.E5xx``)."""

from __future__ import annotations

from typing import Any

from django.core import checks


@checks.register(checks.Tags.database)
def check_pending_migrations(app_configs: Any = None, databases: Any = None,
                             **kwargs: Any) -> list[checks.CheckMessage]:
    """E501: with DDL_GUARD on, a migration not applied yet rewrites or locks a table.

    ``migrate`` runs database checks before it applies anything, so a hazard stops the whole
    run with nothing half-applied.
    """
    from data_arch import conf

    try:
        if not databases or not conf.backfill_settings().ddl_guard:
            return []
    except conf.SettingError:
        return []  # reported by data_arch.E001
    from data_arch.backfills.lint import lint

    labels = [config.label for config in app_configs] if app_configs else None
    errors = []
    for alias in databases:
        try:
            hazards = lint(labels, pending_on=alias)
        except Exception as exc:  # noqa: BLE001 -- an unreachable database is not ours to report
            return [checks.Warning(f"could not lint pending migrations on {alias!r}: {exc}",
                                   id="data_arch.W501")]
        errors.extend(
            checks.Error(str(h), hint="Use the safe alternative named above, or list the code in "
                         "the migration's data_arch_ignore.", id="data_arch.E501")
            for h in hazards)
    return errors
