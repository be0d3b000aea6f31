"""A migration operation that indexes a large partitioned table without blocking writes."""

from __future__ import annotations

import hashlib
from typing import Any

from django.db import router
from django.db.migrations.operations import AddIndex

from data_arch.partitioning import sql

__all__ = ["AddIndexConcurrently", "AddPartitionedIndex"]


class AddPartitionedIndex(AddIndex):
    """``AddIndex`` for partitioned tables: ON ONLY parent, CONCURRENTLY per partition, ATTACH.

    ``CREATE INDEX CONCURRENTLY`` refuses a partitioned parent, and a plain ``CREATE INDEX`` on it
    holds a SHARE lock (no writes) on every partition while it builds. This builds the parent's
    index as an empty shell, each partition's index concurrently, then attaches them; the parent
    index becomes valid once every partition has one. Safe to rerun after an interruption.
    """

    atomic = False

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if schema_editor.connection.vendor != "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        table = model._meta.db_table
        index_sql = str(self.index.create_sql(model, schema_editor))
        # "CREATE INDEX "name" ON "table" (...)": make it ON ONLY for the parent.
        on = f" ON {schema_editor.quote_name(table)} "
        parent_sql = index_sql.replace("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1).replace(
            on, f" ON ONLY {schema_editor.quote_name(table)} ", 1
        )
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(parent_sql)
            cursor.execute(
                "SELECT c.relname, n.nspname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE i.inhparent = %s::regclass "
                "AND c.relkind = 'r' ORDER BY c.relname",
                [schema_editor.quote_name(table)],
            )
            partitions = cursor.fetchall()
            parent_index = schema_editor.quote_name(self.index.name)
            # Unique per (partition, index): the index name's tail for reading, a hash of the
            # whole name so two indexes ending alike never share a child.
            digest = hashlib.sha1(self.index.name.encode()).hexdigest()[:8]
            suffix = f"_{self.index.name[-12:]}_{digest}"
            for name, schema in partitions:
                cursor.execute(
                    "SELECT 1 FROM pg_inherits i JOIN pg_index x ON x.indexrelid = i.inhrelid "
                    "WHERE i.inhparent = %s::regclass AND x.indrelid = %s::regclass",
                    [parent_index, sql.qualified(schema, name)],
                )
                if cursor.fetchone():
                    continue  # this partition's index is already attached (a rerun)
                child = sql.fit_name(name, suffix)
                cursor.execute(
                    "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "JOIN pg_index x ON x.indexrelid = c.oid WHERE n.nspname = %s AND c.relname = %s "
                    "AND NOT x.indisvalid",
                    [schema, child],
                )
                if cursor.fetchone():  # an interrupted CONCURRENTLY build leaves an invalid index
                    cursor.execute(f"DROP INDEX CONCURRENTLY {sql.qualified(schema, child)}")
                child_sql = index_sql.replace(
                    f"CREATE INDEX {schema_editor.quote_name(self.index.name)} ON {schema_editor.quote_name(table)} ",
                    f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {sql.quote(child)} ON {sql.qualified(schema, name)} ",
                    1,
                )
                cursor.execute(child_sql)
                cursor.execute(
                    "SELECT 1 FROM pg_inherits WHERE inhrelid = %s::regclass",
                    [sql.qualified(schema, child)],
                )
                if not cursor.fetchone():
                    cursor.execute(
                        f"ALTER INDEX {schema_editor.quote_name(self.index.name)} "
                        f"ATTACH PARTITION {sql.qualified(schema, child)}"
                    )

    def describe(self) -> str:
        return f"Create index {self.index.name} concurrently on partitioned {self.model_name}"

    def allow_migrate_model(self, alias: str, model: Any) -> bool:
        return router.allow_migrate_model(alias, model)


#: The former name of :class:`AddPartitionedIndex`, kept so existing migrations still load. It
#: is not Django's ``django.contrib.postgres.operations.AddIndexConcurrently`` (which refuses a
#: partitioned table): new migrations should use ``AddPartitionedIndex``.
AddIndexConcurrently = AddPartitionedIndex
