"""Migration operations that change a big, busy table without stalling its writers.

Each runs its statements through :func:`~data_arch.backfills.ddl.run_ddl` (``lock_timeout``
with retries):

* :class:`AddIndexConcurrently` -- ``CREATE INDEX CONCURRENTLY`` (the migration needs
  ``atomic = False``); a failed build drops the invalid index it left, so nothing is half-made;
* :class:`AddForeignKey` -- a foreign key column added with ``db_constraint=False`` gets its
  constraint ``NOT VALID`` (a short lock), then ``VALIDATE CONSTRAINT`` (no writer blocked);
* :class:`AddCheckConstraint` -- the same for a CHECK constraint;
* :class:`SetNotNull` -- NOT NULL through a validated ``CHECK (col IS NOT NULL)``, so
  ``SET NOT NULL`` skips its full-table scan under ACCESS EXCLUSIVE;
* :class:`EnqueueBackfill` -- marks a registered backfill pending (and sends it to Celery when
  ``enqueue=True``) instead of updating rows inside the migration.
"""

from __future__ import annotations

from typing import Any

from django.contrib.postgres.operations import AddIndexConcurrently as _AddIndexConcurrently
from django.db import migrations
from django.db.migrations.operations.base import Operation

from data_arch.backfills import sql
from data_arch.backfills.ddl import run_ddl

__all__ = [
    "AddCheckConstraint",
    "AddForeignKey",
    "AddIndexConcurrently",
    "EnqueueBackfill",
    "SetNotNull",
]


def _allowed(schema_editor: Any, app_label: str, model: Any) -> bool:
    from django.db import router

    return (schema_editor.connection.vendor == "postgresql"
            and router.allow_migrate_model(schema_editor.connection.alias, model))


class AddIndexConcurrently(_AddIndexConcurrently):
    """Django's ``AddIndexConcurrently``; a failed build leaves no invalid index behind."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):  # type: ignore[no-untyped-def]
        self._ensure_not_in_transaction(schema_editor)
        model = to_state.apps.get_model(app_label, self.model_name)
        if not _allowed(schema_editor, app_label, model):
            return
        try:
            schema_editor.add_index(model, self.index, concurrently=True)
        except Exception:
            run_ddl(schema_editor.connection,
                    f"DROP INDEX CONCURRENTLY IF EXISTS {schema_editor.quote_name(self.index.name)}")
            raise


class _FieldOperation(Operation):
    """An operation on one field, ``model_name.name``, that changes the field's state."""

    reversible = True

    def __init__(self, model_name: str, name: str) -> None:
        self.model_name = model_name
        self.name = name

    def deconstruct(self):  # type: ignore[no-untyped-def]
        return self.__class__.__qualname__, [], {"model_name": self.model_name, "name": self.name}

    def state_forwards(self, app_label, state):  # type: ignore[no-untyped-def]
        model_state = state.models[app_label, self.model_name.lower()]
        field = model_state.fields[self.name].clone()
        self.change_field(field)
        state.alter_field(app_label, self.model_name.lower(), self.name, field, True)

    def change_field(self, field: Any) -> None:
        raise NotImplementedError


class AddForeignKey(_FieldOperation):
    """Create the FOREIGN KEY constraint of ``model_name.name`` (declared ``db_constraint=False``
    in an earlier operation) as ``NOT VALID``, then validate it; the field's state becomes
    ``db_constraint=True``."""

    def change_field(self, field: Any) -> None:
        field.db_constraint = True

    def _names(self, schema_editor: Any, model: Any) -> tuple[Any, str, str]:
        field = model._meta.get_field(self.name)
        statement = schema_editor._create_fk_sql(model, field, "_fk_%(to_table)s_%(to_column)s")
        return field, str(statement), str(statement.parts["name"])

    def database_forwards(self, app_label, schema_editor, from_state, to_state):  # type: ignore[no-untyped-def]
        model = to_state.apps.get_model(app_label, self.model_name)
        if not _allowed(schema_editor, app_label, model):
            return
        _field, create, name = self._names(schema_editor, model)
        table = schema_editor.quote_name(model._meta.db_table)
        run_ddl(schema_editor.connection, f"{create} NOT VALID")
        run_ddl(schema_editor.connection, f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")

    def database_backwards(self, app_label, schema_editor, from_state, to_state):  # type: ignore[no-untyped-def]
        model = from_state.apps.get_model(app_label, self.model_name)
        if not _allowed(schema_editor, app_label, model):
            return
        _field, _create, name = self._names(schema_editor, model)
        table = schema_editor.quote_name(model._meta.db_table)
        run_ddl(schema_editor.connection, f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}")

    def describe(self) -> str:
        return f"Add the foreign key of {self.model_name}.{self.name} NOT VALID, then validate it"

    @property
    def migration_name_fragment(self) -> str:
        return f"{self.model_name.lower()}_{self.name.lower()}_fk"


class AddCheckConstraint(migrations.AddConstraint):
    """``AddConstraint`` for a CheckConstraint: added ``NOT VALID``, then validated."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):  # type: ignore[no-untyped-def]
        model = to_state.apps.get_model(app_label, self.model_name)
        if not _allowed(schema_editor, app_label, model):
            return
        statement = self.constraint.create_sql(model, schema_editor)
        table = schema_editor.quote_name(model._meta.db_table)
        name = schema_editor.quote_name(self.constraint.name)
        run_ddl(schema_editor.connection, f"{statement} NOT VALID")
        run_ddl(schema_editor.connection, f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")


class SetNotNull(_FieldOperation):
    """Make ``model_name.name`` NOT NULL without a scan under ACCESS EXCLUSIVE: a ``CHECK (col IS
    NOT NULL) NOT VALID``, ``VALIDATE`` (no writer blocked), ``SET NOT NULL`` (PostgreSQL uses
    the valid check instead of scanning), then the check is dropped."""

    def change_field(self, field: Any) -> None:
        field.null = False

    def database_forwards(self, app_label, schema_editor, from_state, to_state):  # type: ignore[no-untyped-def]
        model = to_state.apps.get_model(app_label, self.model_name)
        if not _allowed(schema_editor, app_label, model):
            return
        column = model._meta.get_field(self.name).column
        table = model._meta.db_table
        check = schema_editor.quote_name(f"{table}_{column}_notnull"[:63])
        t, c = schema_editor.quote_name(table), schema_editor.quote_name(column)
        connection = schema_editor.connection
        run_ddl(connection, f"ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {check}")
        run_ddl(connection, f"ALTER TABLE {t} ADD CONSTRAINT {check} CHECK ({c} IS NOT NULL) NOT VALID")
        run_ddl(connection, f"ALTER TABLE {t} VALIDATE CONSTRAINT {check}")
        run_ddl(connection, f"ALTER TABLE {t} ALTER COLUMN {c} SET NOT NULL")
        run_ddl(connection, f"ALTER TABLE {t} DROP CONSTRAINT {check}")

    def database_backwards(self, app_label, schema_editor, from_state, to_state):  # type: ignore[no-untyped-def]
        model = from_state.apps.get_model(app_label, self.model_name)
        if not _allowed(schema_editor, app_label, model):
            return
        column = model._meta.get_field(self.name).column
        run_ddl(schema_editor.connection,
                f"ALTER TABLE {schema_editor.quote_name(model._meta.db_table)} "
                f"ALTER COLUMN {schema_editor.quote_name(column)} DROP NOT NULL")

    def describe(self) -> str:
        return f"Set {self.model_name}.{self.name} NOT NULL through a validated CHECK"

    @property
    def migration_name_fragment(self) -> str:
        return f"{self.model_name.lower()}_{self.name.lower()}_not_null"


class EnqueueBackfill(Operation):
    """Mark the backfill ``name`` pending for the migrated database instead of running it inline;
    with ``enqueue=True`` it is also sent to Celery (``data_arch.backfills.run``) after commit.
    Backwards it does nothing (the rows it filled keep their values)."""

    reversible = True
    reduces_to_sql = False

    def __init__(self, name: str, enqueue: bool = False) -> None:
        self.name = name
        self.enqueue = enqueue

    def deconstruct(self):  # type: ignore[no-untyped-def]
        kwargs: dict[str, Any] = {"name": self.name}
        if self.enqueue:
            kwargs["enqueue"] = True
        return self.__class__.__qualname__, [], kwargs

    def state_forwards(self, app_label, state):  # type: ignore[no-untyped-def]
        pass

    def database_forwards(self, app_label, schema_editor, from_state, to_state):  # type: ignore[no-untyped-def]
        from django.db import router, transaction

        connection = schema_editor.connection
        if connection.vendor != "postgresql" or not router.allow_migrate(connection.alias,
                                                                          app_label):
            return
        tenant = getattr(connection, "schema_name", None)
        from data_arch.tenancy.registry import public_schema_name

        key = "" if tenant in (None, public_schema_name()) else tenant
        with connection.cursor() as cursor:
            cursor.execute(sql.ENQUEUE, {"name": self.name, "tenant": key})
        if self.enqueue:
            from data_arch.backfills.tasks import run_backfill

            kwargs = {"name": self.name, "tenant": key or None}
            transaction.on_commit(lambda: run_backfill.apply_async(kwargs=kwargs),
                                  using=connection.alias)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):  # type: ignore[no-untyped-def]
        pass

    def describe(self) -> str:
        return f"Enqueue the backfill {self.name!r}"

    @property
    def migration_name_fragment(self) -> str:
        return f"enqueue_{self.name}"
