"""Migration hazards: operations that rewrite or lock a table that already exists.

Read from the migration files alone (no database needed): each operation is checked against the
project state just before it; an operation on a model created earlier in the same migration is
safe (the table is new and empty). A migration opts out of a rule with
``data_arch_ignore = ["DA101", ...]``.

=======  ==========================================================================
DA101    AddIndex / index or unique added by AlterUniqueTogether: SHARE lock for the
         whole build, writers blocked -> AddIndexConcurrently (``atomic = False``)
DA102    AddConstraint (CHECK) validated under lock -> AddCheckConstraint (NOT VALID +
         VALIDATE); UNIQUE: a unique index built CONCURRENTLY
DA103    AddField / AlterField with a foreign key constraint: validated under lock ->
         ``db_constraint=False`` then AddForeignKey (NOT VALID + VALIDATE)
DA104    AddField / AlterField with ``db_index`` or ``unique``: index built under lock ->
         declare it without, then AddIndexConcurrently
DA105    AlterField to NOT NULL: full scan under ACCESS EXCLUSIVE -> SetNotNull
DA106    AlterField changing the column type: table rewrite under ACCESS EXCLUSIVE ->
         a new column, a backfill, then switch reads and drop the old one
DA107    AddField NOT NULL with a database default that is not a constant
         (``db_default`` expression): table rewrite -> add it nullable, backfill, SetNotNull
=======  ==========================================================================
"""

from __future__ import annotations

import dataclasses
from typing import Any

from django.db import migrations, models

__all__ = ["Hazard", "lint", "lint_migration"]

_OPERATIONS = "data_arch.backfills.operations"


@dataclasses.dataclass(frozen=True)
class Hazard:
    code: str
    app_label: str
    migration: str
    operation: str
    message: str

    def __str__(self) -> str:
        return f"{self.app_label}.{self.migration}: {self.code} {self.operation}: {self.message}"


def _db_type(field: Any, connection: Any) -> str | None:
    try:
        return field.db_type(connection)
    except Exception:  # noqa: BLE001 -- a field that needs a live model: not comparable
        return None


def _operation_hazards(operation: Any, before: Any, created: set[str], app_label: str,
                       connection: Any) -> list[tuple[str, str]]:
    """(code, message) for ``operation`` given the project state ``before`` it."""
    model_name = getattr(operation, "model_name", None) or getattr(operation, "name", "")
    if isinstance(operation, migrations.CreateModel):
        return []
    if model_name and model_name.lower() in created:
        return []
    found = []
    if isinstance(operation, migrations.AddIndex) and not operation.__class__.__name__.endswith(
            "Concurrently"):
        found.append(("DA101", f"builds index {operation.index.name!r} under a SHARE lock that "
                      f"blocks every write for the whole build; use {_OPERATIONS}."
                      "AddIndexConcurrently in a migration with atomic = False"))
    elif isinstance(operation, (migrations.AlterUniqueTogether, migrations.AlterIndexTogether)):
        found.append(("DA101", "builds its indexes under a SHARE lock that blocks writes; declare "
                      f"the unique index with {_OPERATIONS}.AddIndexConcurrently (atomic = False)"))
    elif isinstance(operation, migrations.AddConstraint) and type(operation).__name__ not in (
            "AddCheckConstraint", "AddConstraintNotValid"):
        constraint = operation.constraint
        if isinstance(constraint, models.CheckConstraint):
            found.append(("DA102", f"validates CHECK {constraint.name!r} while holding ACCESS "
                          f"EXCLUSIVE; use {_OPERATIONS}.AddCheckConstraint (NOT VALID, then "
                          "VALIDATE)"))
        else:
            found.append(("DA102", f"builds the index of {constraint.name!r} while blocking "
                          "writes; build a unique index with "
                          f"{_OPERATIONS}.AddIndexConcurrently (atomic = False)"))
    elif isinstance(operation, (migrations.AddField, migrations.AlterField)):
        field = operation.field
        old = None
        if isinstance(operation, migrations.AlterField):
            try:
                old = before.models[app_label, operation.model_name.lower()].fields[operation.name]
            except KeyError:
                old = None
        verb = "adds" if old is None else "alters"
        if field.is_relation and field.many_to_one and getattr(field, "db_constraint", False) and (
                old is None or not getattr(old, "db_constraint", False)):
            found.append(("DA103", f"{verb} foreign key {operation.name!r} whose constraint is "
                          "validated under a lock that blocks writes; declare it with "
                          f"db_constraint=False, then {_OPERATIONS}.AddForeignKey (NOT VALID + "
                          "VALIDATE)"))
        indexed = field.db_index or field.unique
        was_indexed = old is not None and (old.db_index or old.unique)
        if indexed and not was_indexed and not field.primary_key:
            found.append(("DA104", f"{verb} {operation.name!r} with an index built under a SHARE "
                          "lock that blocks writes; declare it with db_index=False (and no "
                          f"unique), then {_OPERATIONS}.AddIndexConcurrently (atomic = False)"))
        if old is not None:
            if old.null and not field.null:
                found.append(("DA105", f"sets {operation.name!r} NOT NULL, scanning the whole "
                              f"table under ACCESS EXCLUSIVE; use {_OPERATIONS}.SetNotNull (a "
                              "validated CHECK first)"))
            old_type, new_type = _db_type(old, connection), _db_type(field, connection)
            if old_type and new_type and old_type != new_type and not _widening(old_type, new_type):
                found.append(("DA106", f"changes {operation.name!r} from {old_type} to "
                              f"{new_type}: a table rewrite under ACCESS EXCLUSIVE; add a new "
                              "column, fill it with a data_arch backfill, switch reads to it, "
                              "then drop the old one"))
        elif not field.null and getattr(field, "db_default", models.NOT_PROVIDED) is not \
                models.NOT_PROVIDED and hasattr(field.db_default, "resolve_expression") and \
                not isinstance(field.db_default, models.Value):
            found.append(("DA107", f"adds NOT NULL {operation.name!r} with a computed database "
                          "default: the table is rewritten under ACCESS EXCLUSIVE; add it "
                          "nullable, fill it with a data_arch backfill, then "
                          f"{_OPERATIONS}.SetNotNull"))
    return found


def _widening(old: str, new: str) -> bool:
    """varchar(n) -> varchar(m >= n) or -> text: PostgreSQL changes only the catalog."""
    if old.startswith("varchar(") and new == "text":
        return True
    if old.startswith("varchar(") and new.startswith("varchar("):
        return int(new[8:-1]) >= int(old[8:-1])
    return False


def lint_migration(loader: Any, key: tuple[str, str], connection: Any) -> list[Hazard]:
    """The hazards of migration ``key`` (``(app_label, name)``) from ``loader``'s graph."""
    migration = loader.graph.nodes[key]
    ignore = set(getattr(migration, "data_arch_ignore", ()))
    state = loader.project_state(key, at_end=False)
    created: set[str] = set()
    hazards = []
    for operation in migration.operations:
        for code, message in _operation_hazards(operation, state, created, key[0], connection):
            if code not in ignore:
                hazards.append(Hazard(code, key[0], key[1], operation.describe(), message))
        if isinstance(operation, migrations.CreateModel):
            created.add(operation.name.lower())
        state = state.clone()
        operation.state_forwards(key[0], state)
    return hazards


def lint(app_labels: list[str] | None = None, *, pending_on: str | None = None) -> list[Hazard]:
    """The hazards of the migrations of ``app_labels`` (all apps when None): every migration,
    or with ``pending_on=alias`` only those not applied on that database yet."""
    from django.db import connections
    from django.db.migrations.loader import MigrationLoader

    connection = connections[pending_on or "default"]
    loader = MigrationLoader(connection if pending_on else None, ignore_no_migrations=True)
    applied = set(loader.applied_migrations or {}) if pending_on else set()
    keys = [key for key in loader.graph.nodes
            if (app_labels is None or key[0] in app_labels) and key not in applied]
    hazards = []
    for key in sorted(keys):
        hazards.extend(lint_migration(loader, key, connection))
    return hazards
