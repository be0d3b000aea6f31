"""System checks for partitioned models (ids data_arch.E200-E249 / W200-W249)."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import FieldDoesNotExist
from django.db import DatabaseError, connections, models

from data_arch.partitioning.declaration import partitioned_models, partitioning_of


@checks.register(checks.Tags.models)
def check_declarations(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E200 bad key field, E201 unique column without the key, E202 two declarations, E203 two
    models whose declarations share a constraint name."""
    errors: list[checks.CheckMessage] = []
    by_name: dict[str, list[str]] = {}
    for model in partitioned_models():
        declared = partitioning_of(model)
        assert declared is not None
        by_name.setdefault(declared.name, []).append(model._meta.label)
    for name, labels in sorted(by_name.items()):
        if len(labels) > 1:
            errors.append(
                checks.Error(
                    f"{', '.join(labels)} all declare MonthlyPartitioning named {name!r}; "
                    "constraint names must be unique across models.",
                    hint="Give each a name: MonthlyPartitioning(field=..., name=\"<table>_partitioning\").",
                    id="data_arch.E203",
                )
            )
    for model in partitioned_models():
        declared = partitioning_of(model)
        assert declared is not None
        found = [c for c in model._meta.constraints if type(c) is type(declared)]
        if len(found) > 1:
            errors.append(
                checks.Error(
                    f"{model._meta.label} declares MonthlyPartitioning twice.",
                    obj=model,
                    id="data_arch.E202",
                )
            )
        try:
            field = model._meta.get_field(declared.field)
        except FieldDoesNotExist:
            errors.append(
                checks.Error(
                    f"{model._meta.label}: MonthlyPartitioning(field={declared.field!r}) names no field.",
                    hint="Name a DateTimeField of the model.",
                    obj=model,
                    id="data_arch.E200",
                )
            )
            continue
        if not isinstance(field, models.DateTimeField) or field.null:
            errors.append(
                checks.Error(
                    f"{model._meta.label}.{declared.field} must be a non-null DateTimeField to partition by month.",
                    obj=model,
                    id="data_arch.E200",
                )
            )
        for other in model._meta.local_fields:
            if other.unique and not other.primary_key:
                errors.append(
                    checks.Error(
                        f"{model._meta.label}.{other.name} is unique=True; on a partitioned table a unique "
                        "constraint must include the partition key.",
                        hint=f"Use Meta.constraints UniqueConstraint(fields=[{other.name!r}, {declared.field!r}]).",
                        obj=model,
                        id="data_arch.E201",
                    )
                )
    return errors


@checks.register(checks.Tags.database)
def check_partition_health(app_configs: Any = None, databases: Any = None, **kwargs: Any):
    """W200 fewer months ahead than configured, W201 rows in the default partition, W202 status
    unreadable, W203 an interrupted drain or detach left work unfinished."""
    if not databases:
        return []
    from data_arch.conf import partition_settings
    from data_arch.partitioning.plan import effective_options
    from data_arch.partitioning.status import status
    from data_arch.tenancy import iter_tenants, tenant_context

    warnings: list[checks.CheckMessage] = []
    for alias in databases:
        if connections[alias].vendor != "postgresql":
            continue
        try:
            settings = partition_settings()
            reports = status(using=alias)
            for tenant in iter_tenants():
                with tenant_context(tenant):
                    reports += status(using=alias)
        except DatabaseError:
            continue  # an unreachable or unmigrated database is reported elsewhere
        except Exception as exc:  # noqa: BLE001 -- a health check must never break migrate
            warnings.append(
                checks.Warning(
                    f"partition status could not be read on {alias!r}: {exc}",
                    hint="Run `manage.py partitions status` to see the table that fails.",
                    id="data_arch.W202",
                )
            )
            continue
        from django.apps import apps

        for entry in reports:
            model = apps.get_model(entry.model)
            ahead, _, _ = effective_options(model, settings, None, None)
            where = f"{entry.schema}.{entry.table}"
            if entry.months_ahead < ahead or not entry.covers_current:
                warnings.append(
                    checks.Warning(
                        f"{where} has partitions for {entry.months_ahead} month(s) ahead"
                        f"{'' if entry.covers_current else ' and none for the current month'}; "
                        f"{ahead} configured.",
                        hint="Run `manage.py partitions apply` (schedule it, e.g. daily).",
                        id="data_arch.W200",
                    )
                )
            if entry.default_rows:
                warnings.append(
                    checks.Warning(
                        f"{where}: {entry.default_rows} row(s) sit in the default partition.",
                        hint="Run `manage.py partitions apply` to move them into their months.",
                        id="data_arch.W201",
                    )
                )
            if entry.staging or entry.pending_detach:
                unfinished = [*entry.staging, *entry.pending_detach]
                warnings.append(
                    checks.Warning(
                        f"{where}: unfinished maintenance on {', '.join(unfinished)} "
                        "(a drain not yet swapped in, or a DETACH ... CONCURRENTLY interrupted).",
                        hint="Run `manage.py partitions apply`; it resumes both.",
                        id="data_arch.W203",
                    )
                )
    return warnings
