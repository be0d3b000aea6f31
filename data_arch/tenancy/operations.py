"""Migration operations for row-level tenant tables (reversible, PostgreSQL only).

Add them to the migration that creates the model, after its ``CreateModel``::

    operations = [
        migrations.CreateModel(name="Invoice", ...),
        TenantKeys("Invoice"),             # PK (tenant_id, id), composite foreign keys
        EnableRowLevelSecurity("Invoice"), # ENABLE + FORCE RLS, the tenant policy
    ]

``TenantKeys`` of a referenced model must run before that of the models pointing at it.
"""

from __future__ import annotations

from typing import Any

from django.db import router
from django.db.migrations.operations.base import Operation

from data_arch.tenancy import sql
from data_arch.tenancy.models import TENANT_FIELD, TenantForeignKey

__all__ = ["EnableRowLevelSecurity", "TenantKeys"]


class _ModelOperation(Operation):
    reversible = True
    reduces_to_sql = True

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name

    def deconstruct(self):
        return self.__class__.__name__, [self.model_name], {}

    def state_forwards(self, app_label: str, state: Any) -> None:
        pass

    def _model(self, app_label: str, schema_editor: Any, state: Any) -> Any:
        if schema_editor.connection.vendor != "postgresql":
            return None
        model = state.apps.get_model(app_label, self.model_name)
        if not router.allow_migrate_model(schema_editor.connection.alias, model):
            return None
        return model

    @property
    def migration_name_fragment(self) -> str:
        return f"{type(self).__name__.lower()}_{self.model_name.lower()}"


class EnableRowLevelSecurity(_ModelOperation):
    """ENABLE and FORCE Row-Level Security and create the tenant policy.

    FORCE makes the policy apply to the table's owner too; only superusers and BYPASSRLS roles
    skip it, which is why the application must connect as neither. With
    ``TENANCY.SIGNED_CONTEXT`` (the default) the policy compares the tenant column with what a
    SECURITY DEFINER function verified (see :mod:`data_arch.tenancy.rls`); that function and its
    secret table are created (or updated) here too, in the current schema.
    """

    def database_forwards(self, app_label, schema_editor, from_state, to_state) -> None:
        model = self._model(app_label, schema_editor, to_state)
        if model is None:
            return
        from data_arch.conf import tenancy_settings
        from data_arch.tenancy.rls import secret_pads

        config = tenancy_settings()
        quote = schema_editor.quote_name
        field = model._meta.get_field(TENANT_FIELD)
        cast = field.target_field.rel_db_type(schema_editor.connection)
        function = None
        statements = []
        if config.signed_context:
            with schema_editor.connection.cursor() as cursor:
                cursor.execute(sql.CURRENT_SCHEMA)
                schema = cursor.fetchone()[0]
            statements += sql.signed_context(quote, schema, *secret_pads())
            function = f"{quote(schema)}.{quote(sql.VERIFY_FUNCTION)}"
        statements += sql.enable_rls(
            quote, model._meta.db_table, field.column, cast, config.rls_setting, function
        )
        for statement, params in statements:
            schema_editor.execute(statement, params)

    def database_backwards(self, app_label, schema_editor, from_state, to_state) -> None:
        model = self._model(app_label, schema_editor, from_state)
        if model is None:
            return
        for statement, params in sql.disable_rls(schema_editor.quote_name, model._meta.db_table):
            schema_editor.execute(statement, params)

    def describe(self) -> str:
        return f"Enable and force row-level security with the tenant policy on {self.model_name}"


def _composite_fks(model: Any) -> list[tuple[Any, str]]:
    # Historical models rebuild their fields from deconstruct(), so these are real
    # TenantForeignKey instances in migrations too.
    return [
        (field, f"{model._meta.db_table}_{field.column}_tenant_fk")
        for field in model._meta.local_fields
        if isinstance(field, TenantForeignKey)
    ]


class TenantKeys(_ModelOperation):
    """Make every key of a row-level table include the tenant column (Citus-ready).

    The primary key becomes ``(tenant_id, id)`` and each :class:`TenantForeignKey` gets the
    composite constraint ``(tenant_id, <column>) REFERENCES target (tenant_id, id)``.
    """

    def database_forwards(self, app_label, schema_editor, from_state, to_state) -> None:
        model = self._model(app_label, schema_editor, to_state)
        if model is None:
            return
        quote, table = schema_editor.quote_name, model._meta.db_table
        tenant_column = model._meta.get_field(TENANT_FIELD).column
        schema_editor.execute(
            sql.replace_primary_key(
                quote, table, self._pk_name(schema_editor, model),
                [tenant_column, model._meta.pk.column],
            )
        )
        for field, name in _composite_fks(model):
            target = field.remote_field.model
            schema_editor.execute(
                sql.add_composite_fk(
                    quote, table, schema_editor._create_index_name(table, [name], "_fk")
                    if len(name) > 63 else name,
                    [tenant_column, field.column], target._meta.db_table,
                    [target._meta.get_field(TENANT_FIELD).column, field.target_field.column],
                )
            )

    def database_backwards(self, app_label, schema_editor, from_state, to_state) -> None:
        model = self._model(app_label, schema_editor, from_state)
        if model is None:
            return
        quote, table = schema_editor.quote_name, model._meta.db_table
        for _field, name in _composite_fks(model):
            if len(name) > 63:
                name = schema_editor._create_index_name(table, [name], "_fk")
            schema_editor.execute(sql.drop_constraint(quote, table, name))
        schema_editor.execute(
            sql.replace_primary_key(
                quote, table, self._pk_name(schema_editor, model), [model._meta.pk.column]
            )
        )

    @staticmethod
    def _pk_name(schema_editor: Any, model: Any) -> str:
        names = schema_editor._constraint_names(model, primary_key=True)
        if len(names) != 1:
            raise ValueError(
                f"expected one primary key on {model._meta.db_table}, found {len(names)}"
            )
        return names[0]

    def describe(self) -> str:
        return f"Make the primary and foreign keys of {self.model_name} include the tenant"
