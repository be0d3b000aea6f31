"""The schema-editor hook that makes ``migrate`` create a partitioned parent.

For a model carrying :class:`MonthlyPartitioning`, ``CREATE TABLE`` gets ``PARTITION BY RANGE``,
the primary key moves from the pk column to the constraint ``(pk, key)``, and a DEFAULT partition
is created with the parent so no row is ever rejected. Dropping the model drops its partitions.

The mixin is installed on each configured PostgreSQL backend's ``DatabaseWrapper`` when the app
is ready (as django-pgtrigger does for its own schema editor), so any backend chain works:
django-tenants over django-prometheus over Django's PostgreSQL backend.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.postgresql.schema import DatabaseSchemaEditor as PostgresSchemaEditor

from data_arch.partitioning import sql
from data_arch.partitioning.declaration import partitioning_of

__all__ = ["PartitioningSchemaEditorMixin", "install"]


class PartitioningSchemaEditorMixin:
    def _iter_column_sql(self, column_db_type, params, model, field, *args, **kwargs):  # type: ignore[no-untyped-def]
        parts = super()._iter_column_sql(column_db_type, params, model, field, *args, **kwargs)  # type: ignore[misc]
        for part in parts:
            if part == "PRIMARY KEY" and partitioning_of(model) is not None:
                continue  # the (pk, key) primary key comes from MonthlyPartitioning
            yield part

    def table_sql(self, model):  # type: ignore[no-untyped-def]
        statement, params = super().table_sql(model)  # type: ignore[misc]
        partitioning = partitioning_of(model)
        if partitioning is None:
            return statement, params
        column = self.quote_name(model._meta.get_field(partitioning.field).column)  # type: ignore[attr-defined]
        clause = f" PARTITION BY RANGE ({column})"
        head, sep, tail = statement.rpartition(" TABLESPACE ")
        if sep:
            return f"{head}{clause}{sep}{tail}", params
        return f"{statement}{clause}", params

    def create_model(self, model):  # type: ignore[no-untyped-def]
        super().create_model(model)  # type: ignore[misc]
        declared = partitioning_of(model)
        if declared is not None and declared.default:
            self.execute(sql.create_default(model._meta.db_table))  # type: ignore[attr-defined]


def install() -> None:
    """Mix the hook into the schema editor of every configured PostgreSQL backend."""
    from django.conf import settings
    from django.db.utils import load_backend

    for config in settings.DATABASES.values():
        try:
            backend = load_backend(config["ENGINE"])
        except ImproperlyConfigured:  # Django reports an unloadable backend itself
            continue
        wrapper: Any = backend.DatabaseWrapper
        editor = wrapper.SchemaEditorClass
        if not issubclass(editor, PostgresSchemaEditor):
            continue
        if issubclass(editor, PartitioningSchemaEditorMixin):
            continue
        wrapper.SchemaEditorClass = type(
            editor.__name__, (PartitioningSchemaEditorMixin, editor), {"__module__": __name__}
        )
