"""The plan: what maintenance will do, step by step, built from the catalog without changing it.

``plan()`` returns a :class:`Plan` (printable, JSON-serializable, renderable as a ``psql -1``
script). Each :class:`Action` lists the :class:`Step` objects that ``apply`` executes, in order;
``apply`` re-checks each step against the catalog and skips what no longer applies.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

from django.apps import apps
from django.db import models

from data_arch.conf import PartitionSettings, partition_settings
from data_arch.partitioning import catalog, sql
from data_arch.partitioning.declaration import (
    MonthlyPartitioning,
    partitioned_models,
    partitioning_of,
)
from data_arch.partitioning.months import MAX_MONTHS, add_months, month_start, subtract_months

__all__ = [
    "Action",
    "PartitionError",
    "Plan",
    "Step",
    "TablePlan",
    "clean_up_transactions",
    "create_steps",
    "effective_options",
    "plan",
    "resolve_models",
    "shared_swap_statements",
    "validate_months",
]

RETENTION_KINDS = ("drop", "detach", "archive")
#: actions on a table's default partition rather than on one month: ``clean_up`` (what a run
#: killed after its shared swap left), ``record`` (before the drains: rows reaching the default
#: outside the drained months are recorded) and ``swap`` (after them: the shared swap)
DEFAULT_KINDS = ("clean_up", "record", "swap")


class PartitionError(ValueError):
    """Bad input to partition maintenance (unknown model, bad --ahead/--retain, ...)."""


@dataclasses.dataclass(frozen=True)
class Step:
    """One unit ``apply`` runs: a transaction (or, when not ``atomic``, one bare statement)."""

    #: stage, copy, swap, attach, detach, finalize, drop_foreign_keys, drop, archive, record,
    #: clean_up (``clean_up``: each of its months' statements in transactions of their own)
    name: str
    statements: tuple[str, ...]
    atomic: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sql": list(self.statements), "atomic": self.atomic}


@dataclasses.dataclass(frozen=True)
class Action:
    #: create (a month's partition, draining the default of its rows), drop, detach or archive;
    #: or, on the default partition (``partition`` is its name), one of DEFAULT_KINDS
    kind: str
    partition: str
    start: dt.datetime
    end: dt.datetime
    #: rows of this month sitting in the default partition when planned
    default_rows: int = 0
    steps: tuple[Step, ...] = ()
    #: a drop with CASCADE (opted in): the objects that depend on the partition and go with it
    cascade: tuple[str, ...] = ()
    #: a create's statements after CREATE TABLE (LIKE ...): storage parameters, comment,
    #: identity default, row-level security (also in ``steps``; :meth:`Plan.sql` uses them)
    setup: tuple[str, ...] = ()
    #: a swap, record or clean_up: the months it is for (a swap attaches them, in this order)
    months: tuple[str, ...] = ()

    @property
    def target(self) -> str:
        """What the action is on, as its steps are labelled: the months of a swap, record or
        clean_up, else the partition."""
        return ", ".join(self.months) if self.months else self.partition

    @property
    def statements(self) -> tuple[str, ...]:
        return tuple(s for step in self.steps for s in step.statements)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "partition": self.partition,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "default_rows": self.default_rows,
            "cascade": list(self.cascade),
            "months": list(self.months),
            "steps": [step.to_dict() for step in self.steps],
            "sql": list(self.statements),
        }


@dataclasses.dataclass(frozen=True)
class TablePlan:
    model: str
    schema: str
    table: str
    column: str
    ahead: int
    retain: int | None
    mode: str
    actions: tuple[Action, ...]
    problems: tuple[str, ...] = ()
    #: foreign-key targets of the parent, locked first by every step that attaches
    referenced: tuple[str, ...] = ()
    default: str | None = None
    #: the parent's insertable (not generated) columns
    columns: tuple[str, ...] = ()
    #: the problems that keep an action from being planned (apply reports them as failures)
    blocked: tuple[str, ...] = ()
    #: what the plan's new months were built from; apply starts from it, checking it against
    #: the catalog under each month's locks (not part of the plan's output)
    read: catalog.Snapshot | None = dataclasses.field(default=None, compare=False, repr=False)

    def step_labels(self) -> list[str]:
        """Every step of the table's actions, in the order ``apply`` runs them, labelled as
        ``ApplyResult.steps`` reports them: ``schema.table: step target``."""
        return [
            f"{self.schema}.{self.table}: {step.name} {action.target}"
            for action in self.actions
            for step in action.steps
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "schema": self.schema,
            "table": self.table,
            "column": self.column,
            "ahead": self.ahead,
            "retain": self.retain,
            "mode": self.mode,
            "actions": [a.to_dict() for a in self.actions],
            "problems": list(self.problems),
            "blocked": list(self.blocked),
        }


@dataclasses.dataclass(frozen=True)
class Plan:
    database: str
    now: dt.datetime
    tables: tuple[TablePlan, ...]

    @property
    def pending(self) -> bool:
        return any(t.actions for t in self.tables)

    @property
    def has_retention(self) -> bool:
        return any(a.kind in RETENTION_KINDS for t in self.tables for a in t.actions)

    def without_retention(self) -> Plan:
        """This plan with its retention actions left out (creation and draining stay)."""
        tables = tuple(
            dataclasses.replace(
                t, actions=tuple(a for a in t.actions if a.kind not in RETENTION_KINDS)
            )
            for t in self.tables
        )
        return dataclasses.replace(self, tables=tables)

    def step_labels(self) -> list[str]:
        return [label for t in self.tables for label in t.step_labels()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "now": self.now.isoformat(),
            "pending": self.pending,
            "tables": [t.to_dict() for t in self.tables],
        }

    def sql(self) -> str:
        """A script for ``psql -1`` (one transaction) doing what ``apply`` does.

        ``apply`` itself commits per step, waits for quiet and retries lock timeouts; the script
        takes every lock at once and moves rows of the default in one statement per month, so
        it is for review, or for running in a maintenance window. Holding its locks to the end,
        it needs no recorder: the shared swap moves every drained month out of the default,
        then attaches them all.
        """
        lines: list[str] = []
        for table in self.tables:
            swapped = {m for a in table.actions if a.kind == "swap" for m in a.months}
            for action in table.actions:
                lines.append(f"-- {table.schema}.{table.table}: {action.kind} {action.target}")
                lines.extend(f"{s};" for s in _script(table, action, swapped))
        if not lines:
            return ""
        settings = partition_settings()
        return "\n".join(
            [
                "-- partition maintenance; run in one transaction: psql -1 -f this.sql",
                f"{sql.lock_timeout(settings.lock_timeout_ms)};",
                *lines,
            ]
        )

    def __str__(self) -> str:
        lines = []
        for table in self.tables:
            lines.append(f"{table.model} ({table.schema}.{table.table})")
            for action in table.actions:
                lines.append(f"  {action.kind:<8} {_describe(action)}")
            if not table.actions:
                lines.append("  nothing to do")
            lines.extend(f"  ! {problem}" for problem in table.problems)
        return "\n".join(lines) or "no partitioned tables"


def _describe(action: Action) -> str:
    months = ", ".join(action.months)
    if action.kind == "record":
        return (
            f"{action.partition}: record the rows reaching it outside {months} until their "
            "shared swap"
        )
    if action.kind == "swap":
        return (
            f"{action.partition}: one shared swap (one TRUNCATE, keeping recorded rows), "
            f"then ATTACH {months}"
        )
    if action.kind == "clean_up":
        return f"{action.partition}: finish an earlier shared swap's clean-up of {months}"
    extra = f", moving {action.default_rows} row(s) from default" if action.default_rows else ""
    if action.kind == "create" and action.default_rows and not any(
        step.name == "swap" for step in action.steps
    ):
        extra += " (copied; attached by the shared swap)"
    if action.cascade:
        extra += f", CASCADE drops {', '.join(action.cascade)}"
    return f"{action.partition}  [{action.start:%Y-%m-%d}, {action.end:%Y-%m-%d}){extra}"


def _script(table: TablePlan, action: Action, swapped: set[str]) -> list[str]:
    """The one-transaction form of an action, for :meth:`Plan.sql`."""
    schema = table.schema
    if action.kind == "record":
        return []  # the script holds its locks to the end: nothing reaches the default unseen
    if action.kind == "swap":
        assert table.default is not None
        creates = {a.partition: a for a in table.actions if a.kind == "create"}
        months = [creates[name] for name in action.months]
        return [
            *sql.lock_in_dml_order(
                schema, table.table, table.default, list(table.referenced), "ACCESS EXCLUSIVE"
            ),
            *(
                sql.move_all(
                    schema, table.default, m.partition, table.column, list(table.columns),
                    m.start, m.end,
                )
                for m in months
            ),
            *(sql.attach(schema, table.table, m.partition, m.start, m.end) for m in months),
            *(sql.drop_bounds_check(schema, m.partition) for m in months),
        ]
    if action.kind != "create":
        statements = []
        for step in action.steps:
            for statement in step.statements:
                statements.append(statement.removesuffix(" CONCURRENTLY"))
        return statements
    name = action.partition
    statements = [
        *sql.create_standalone(schema, table.table, name, table.column, action.start, action.end),
        *action.setup,
    ]
    if name in swapped:
        return statements  # filled and attached by the table's swap
    statements += sql.lock_in_dml_order(
        schema,
        table.table,
        table.default,
        list(table.referenced),
        "ACCESS EXCLUSIVE" if action.default_rows else "SHARE ROW EXCLUSIVE",
    )
    if table.default:
        statements.append(
            sql.move_all(
                schema, table.default, name, table.column, list(table.columns),
                action.start, action.end,
            )
        )
    statements += [
        sql.attach(schema, table.table, name, action.start, action.end),
        sql.drop_bounds_check(schema, name),
    ]
    return statements


def shared_swap_statements(
    schema: str,
    table: str,
    default: str,
    run: str,
    key: list[str],
    column: str,
    columns: list[str],
    referenced: list[str],
    months: list[tuple[str, dt.datetime, dt.datetime]],
) -> list[str]:
    """The shared swap of ``months`` (name, start, end), copied while the run ``run`` recorded
    the rows reaching ``default`` outside them: one short transaction under ACCESS EXCLUSIVE.

    Under the lock everyone waits, so: statistics before it, one round trip for all the work
    under it (re-copy each month's changed rows and drop its capture trigger, then one TRUNCATE
    of the default keeping the recorded rows, then every ATTACH), the captures' leftovers and
    bounds CHECKs dropped after it (:func:`clean_up_transactions`). Once the months are
    attached, none of their rows can reach the default again, and TRUNCATE fires no row trigger.
    """
    ranges = [(start, end) for _name, start, end in months]
    locked = ["SET CONSTRAINTS ALL IMMEDIATE"]  # Django's FKs are DEFERRABLE: see sql.swap()
    for name, start, end in months:
        locked += sql.recopy(schema, default, name, key, column, columns, start, end)[1:-1]
    locked += sql.empty_default(schema, default, run, key, column, columns, ranges)
    locked += [sql.attach(schema, table, name, start, end) for name, start, end in months]
    return [
        *(sql.analyze_changes(schema, name) for name, _start, _end in months),
        f"ANALYZE {sql.qualified(schema, sql.strangers_name(default, run))}",
        *sql.lock_in_dml_order(schema, table, default, referenced, "ACCESS EXCLUSIVE"),
        ";\n".join(locked),
    ]


def clean_up_transactions(
    schema: str, default: str, names: list[str]
) -> list[tuple[list[str], str | None]]:
    """What a shared swap leaves for after it, one short transaction each: each month's
    capture (its trigger on the default, function and change table), then each month's bounds
    CHECK (which LIKE + CHECK + ATTACH needs only until the ATTACH). With each, the partition
    whose lock it waits to find quiet, if any."""
    captures: list[tuple[list[str], str | None]] = [
        ([
            (
                f"DROP TRIGGER IF EXISTS {sql.quote(sql.capture_name(name))} ON "
                f"{sql.qualified(schema, default)}"
            ),
            *sql.drop_capture(schema, name),
        ], None)
        for name in names
    ]
    return [*captures, *(([sql.drop_bounds_check(schema, name)], name) for name in names)]


def resolve_models(labels: list[str] | None) -> list[type[models.Model]]:
    if not labels:
        return partitioned_models()
    found = []
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise PartitionError(f"--model must be app_label.ModelName, got {label!r}")
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError):
            raise PartitionError(f"unknown model {label!r}: use app_label.ModelName") from None
        if partitioning_of(model) is None:
            raise PartitionError(
                f"{label} is not partitioned: add MonthlyPartitioning(field=...) to its Meta.constraints"
            )
        found.append(model)
    return found


def effective_options(
    model: type[models.Model], settings: PartitionSettings, ahead: int | None, retain: int | None
) -> tuple[int, int | None, str]:
    """(ahead, retain, mode) for ``model``: arguments, then its declaration, then settings."""
    declared = partitioning_of(model)
    assert declared is not None
    final_ahead = (
        ahead
        if ahead is not None
        else (declared.ahead if declared.ahead is not None else settings.ahead)
    )
    final_retain = (
        retain
        if retain is not None
        else (declared.retain if declared.retain is not None else settings.retain)
    )
    mode = declared.mode or settings.retention_mode
    return final_ahead, final_retain, mode


def validate_months(ahead: int | None, retain: int | None) -> None:
    """``--ahead`` 0..1200 (0: the current month only), ``--retain`` 1..1200.

    Nothing ties the two together: the cutoff is ``now - retain``, so months created ahead are
    never due for retention whatever ``ahead`` is.
    """
    for label, value, low in (("ahead", ahead, 0), ("retain", retain, 1)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise PartitionError(f"--{label} must be >= {low}, got {value}")
        if value > MAX_MONTHS:
            raise PartitionError(f"--{label} must be <= {MAX_MONTHS} (months), got {value}")


def archive_schema_for(schema: str, settings: PartitionSettings) -> str:
    """Where ``archive`` retention moves a partition of ``schema``.

    A tenant's partitions go to ``<schema>;<ARCHIVE_SCHEMA>``: tenant schema names cannot
    contain ``;`` (django-tenants and data_arch both refuse it), so no tenant can ever be given
    another tenant's archive as its own schema. Shared tables archive into ``ARCHIVE_SCHEMA``,
    which apply refuses to use while a tenant has that schema name.
    """
    from data_arch.tenancy.registry import public_schema_name

    if schema == public_schema_name():
        return settings.archive_schema
    return sql.fit_name(schema, f";{settings.archive_schema}")


def _tenant_schemas() -> set[str]:
    from data_arch.tenancy.registry import iter_tenants

    try:
        return {t.schema_name for t in iter_tenants() if getattr(t, "schema_name", None)}
    except Exception:  # noqa: BLE001 -- no tenant model: no tenant can collide
        return set()


def retention_steps(
    mode: str,
    schema: str,
    parent: str,
    partition: catalog.Partition,
    concurrently: bool,
    settings: PartitionSettings,
    foreign_keys: list[str],
    cascade: tuple[str, ...] = (),
) -> list[Step]:
    """The steps retiring ``partition``; ``concurrently``: see :func:`detach_concurrently`;
    ``cascade``: the dependents a drop takes along."""
    name = partition.name
    if partition.detach_pending:
        steps = [Step("finalize", (sql.finalize_detach(schema, parent, name),))]
    elif concurrently:
        steps = [Step("detach", (sql.detach(schema, parent, name, True),), atomic=False)]
    else:
        steps = [Step("detach", (sql.detach(schema, parent, name, False),))]
    if mode == "drop":
        steps.append(Step("drop", (sql.drop(schema, name, bool(cascade)),)))
        return steps
    if foreign_keys:
        # A detached table keeps the foreign keys it inherited: they would block deleting the
        # referenced rows (a user's erasure) forever. Its own transaction: it locks the
        # referenced tables, which must never be locked after the parent.
        steps.append(
            Step(
                "drop_foreign_keys",
                tuple(sql.drop_foreign_key(schema, name, fk) for fk in foreign_keys),
            )
        )
    if mode == "archive":
        target = archive_schema_for(schema, settings)
        steps.append(
            Step("archive", (sql.create_schema(target), sql.set_schema(schema, name, target)))
        )
    return steps


def detach_concurrently(using: str, settings: PartitionSettings, has_default: bool) -> bool:
    """Whether retention detaches with ``DETACH ... CONCURRENTLY``: asked for, no default
    partition (PostgreSQL refuses it then), and a direct connection. The statement cannot run
    in a transaction, so its ``lock_timeout`` is a session setting: behind a transaction pooler
    that setting would reach other clients, and the statement might not even run on the server
    connection that has it. Through a pooler, a plain DETACH under ``SET LOCAL`` instead."""
    return settings.detach_concurrently and not has_default and not catalog.behind_pooler(using)


def create_steps(
    schema: str,
    table: str,
    name: str,
    column: str,
    start: dt.datetime,
    end: dt.datetime,
    default: str | None,
    referenced: list[str],
    key: list[str],
    columns: list[str],
    batch: int,
    *,
    drain: bool,
    staged: bool,
    captured: bool = False,
    foreign_keys: list[tuple[str, str]] | None = None,
    row_security: catalog.RowSecurity | None = None,
    carried: catalog.Carried | None = None,
) -> list[Step]:
    """The steps that create one month's partition (see the README's lock table).

    Without rows of the month in the default: one transaction builds the table and attaches
    it. With rows: ``stage`` builds it and starts capturing changes to the month's rows,
    ``copy`` copies them in committed batches while they stay visible in the default, and
    ``swap`` re-copies what changed, empties the month from the default and attaches, in one
    short transaction under ACCESS EXCLUSIVE on the parent (so no reader plans the query
    with the old set of partitions and misses the rows).
    """
    stage = [] if staged else [
        *sql.create_standalone(schema, table, name, column, start, end),
        *sql.carry(schema, name, carried),
        *sql.copy_row_security(schema, name, row_security),
    ]
    finish = [sql.attach(schema, table, name, start, end), sql.drop_bounds_check(schema, name)]
    if not drain:
        mode = "SHARE ROW EXCLUSIVE" if default else "SHARE UPDATE EXCLUSIVE"
        return [
            Step(
                "attach",
                (*stage, *sql.lock_in_dml_order(schema, table, default, referenced, mode), *finish),
            )
        ]
    assert default is not None
    capture = [] if captured else sql.create_capture(schema, default, name, key, column, start, end)
    if stage and foreign_keys:
        # The parent's foreign keys made on the empty table now (the copy then checks each row
        # outside any lock) let ATTACH adopt them instead of validating every row under lock.
        stage = [
            *(f"LOCK TABLE {ref} IN SHARE ROW EXCLUSIVE MODE" for ref in referenced),
            *stage,
            *(sql.add_constraint(schema, name, fk, definition) for fk, definition in foreign_keys),
        ]
    steps = []
    if stage or capture:
        steps.append(Step("stage", (*stage, *capture)))
    steps += [
        Step("copy", (sql.copy_batch(schema, default, name, key, column, columns, start, end, batch),)),
        Step(
            "swap",
            (
                *sql.lock_in_dml_order(schema, table, default, referenced, "ACCESS EXCLUSIVE"),
                *sql.swap(schema, default, name, key, column, columns, start, end),
                *finish,
            ),
        ),
    ]
    return steps


def _table_plan(
    model: type[models.Model],
    using: str,
    schema: str,
    now: dt.datetime,
    settings: PartitionSettings,
    ahead: int | None,
    retain: int | None,
    cascade: bool,
) -> TablePlan | None:
    declared = partitioning_of(model)
    assert isinstance(declared, MonthlyPartitioning)
    table = model._meta.db_table
    column = model._meta.get_field(declared.field).column
    mark = catalog.fingerprint(using, schema, table)  # before what it covers
    state = catalog.read_table(using, schema, table, column)
    if state is None:
        return None
    the_ahead, the_retain, mode = effective_options(model, settings, ahead, retain)

    def table_plan(actions: list[Action], problems: list[str], **extra: Any) -> TablePlan:
        return TablePlan(
            model._meta.label, schema, table, column, the_ahead, the_retain, mode,
            tuple(actions), tuple(problems), **extra,
        )

    if not state.partitioned:
        return table_plan([], [f"{schema}.{table} exists but is not partitioned"])
    problems = list(state.gaps_and_overlaps())
    ranged = state.ranged
    cutoff = subtract_months(now, the_retain) if the_retain else None

    current = month_start(now)
    months = {add_months(current, i) for i in range(the_ahead + 1)}
    in_default = (
        catalog.default_row_months(using, schema, state.default.name, column)
        if state.default
        else {}
    )
    # Every month with rows in the default gets its partition, far-future and past months
    # within retention included: ATTACH scans the whole default, so it must stay near empty.
    for month in in_default:
        if cutoff is None or add_months(month, 1) > cutoff:
            months.add(month)
    referenced = tuple(catalog.referenced_tables(using, schema, table))
    security = catalog.row_security(using, schema, table)
    for partition in catalog.partitions_without_row_security(using, schema, table):
        problems.append(
            f"{partition} lacks the row-level security of {table}: read directly it shows every "
            "row; enable it and copy the policies (new partitions get them)"
        )
    default = state.default.name if state.default else None
    actions: list[Action] = []
    if default is not None:
        checks, captures = catalog.swap_leftovers(using, schema, table)
        left = sorted({*checks, *captures})
        if left:
            statements = [s for t, _ in clean_up_transactions(schema, default, left) for s in t]
            bounds = [(p.start, p.end) for p in ranged if p.name in left and p.start and p.end]
            start = min((b[0] for b in bounds), default=current)
            end = max((b[1] for b in bounds), default=add_months(current, 1))
            actions.append(
                Action("clean_up", default, start, end, 0,
                       (Step("clean_up", tuple(statements)),), months=tuple(left))
            )
    # In the order apply runs them: the months with rows in the default first (copied one by
    # one, then swapped in together), so the months attached after them find the default
    # (which every ATTACH scans under lock) already empty.
    drains: list[Action] = []
    creates: list[Action] = []
    parent: tuple[str | None, tuple[tuple[str, str], ...]] | None = None  # read once, if needed
    taken = catalog.relations(
        using, schema,
        [sql.partition_name(table, start) for start in months
         if not state.covers(start, add_months(start, 1))],
    )
    for start in sorted(months):
        end = add_months(start, 1)
        if state.covers(start, end):
            continue
        name = sql.partition_name(table, start)
        if state.overlaps(start, end):
            problems.append(
                f"cannot create {name}: an existing partition overlaps "
                f"[{start:%Y-%m-%d}, {end:%Y-%m-%d})"
            )
            continue
        clash = _clash(using, schema, table, name, taken.get(name))
        if clash:
            fresh = catalog.read_table(using, schema, table, column)
            if fresh is not None and fresh.covers(start, end):
                continue  # attached by a concurrent run since the read above
            problems.append(clash)
            continue
        drain = bool(in_default.get(start))
        if parent is None:
            parent = catalog.parent_carry(using, schema, table)
        carried = catalog.carried(using, schema, table, state, start, parent)
        steps = create_steps(
            schema, table, name, column, start, end, default, list(referenced),
            catalog.primary_key_columns(using, schema, table) if drain else [],
            catalog.columns(using, schema, table) if drain else [],
            settings.drain_batch_size, drain=drain, staged=False,
            foreign_keys=catalog.foreign_key_definitions(using, schema, table) if drain else None,
            row_security=security,
            carried=carried,
        )
        setup = (*sql.carry(schema, name, carried), *sql.copy_row_security(schema, name, security))
        (drains if drain else creates).append(
            Action(
                "create", name, start, end, in_default.get(start, 0), tuple(steps), setup=setup
            )
        )
    actions += _drain_actions(using, schema, table, column, default, referenced, in_default,
                              drains)
    actions += creates
    concurrently = detach_concurrently(using, settings, state.default is not None)
    if settings.detach_concurrently and state.default is None and not concurrently:
        problems.append(
            f"DETACH_CONCURRENTLY: {using!r} goes through a connection pooler, where the "
            "session lock_timeout of DETACH ... CONCURRENTLY would reach other clients; "
            "retention detaches in a transaction instead (use a direct connection to detach "
            "concurrently)"
        )
    if cutoff is not None:
        tenant_schemas: set[str] | None = None
        # retention by END: only a partition entirely older than the cutoff goes; foreign
        # tables and sub-partitioned children are reported, not touched
        due = [
            p for p in ranged
            if p.end is not None and p.start is not None and p.end <= cutoff and p.kind == "r"
        ]
        # Each one's dependents and foreign keys, all in one round trip.
        retiring = catalog.retirement_reads(using, schema, [p.name for p in due])
        for partition in due:
            depending, fks = retiring.get(partition.name, ([], []))
            if mode == "archive":
                target = archive_schema_for(schema, settings)
                if tenant_schemas is None:
                    tenant_schemas = _tenant_schemas()
                if target in tenant_schemas:
                    problems.append(
                        f"cannot archive {partition.name}: archive schema {target!r} is a "
                        "tenant's schema; set PARTITIONS.ARCHIVE_SCHEMA to a name no tenant has"
                    )
                    continue
            dependents: tuple[str, ...] = ()
            if mode == "drop":
                dependents = tuple(depending)
                if dependents and not cascade:
                    problems.append(
                        f"cannot drop {partition.name}: {', '.join(dependents)} depend(s) on "
                        "it; drop or change them, then rerun apply (or drop them along with "
                        "it: --cascade, or PARTITIONS.DROP_CASCADE)"
                    )
                    continue
            steps = retention_steps(
                mode, schema, table, partition, concurrently, settings, fks, dependents
            )
            actions.append(
                Action(
                    mode, partition.name, partition.start, partition.end, 0, tuple(steps),
                    dependents,
                )
            )
    for month, count in sorted(in_default.items()):
        if cutoff is not None and add_months(month, 1) <= cutoff:
            problems.append(
                f"{count} row(s) of {month:%Y-%m} sit in the default partition and are older "
                "than the months kept (delete them, or widen --retain)"
            )
    for staging in catalog.staging_tables(using, schema, table):
        problems.append(
            f"staging table {staging.name} ({staging.rows} row(s)) is not attached yet: "
            "an interrupted drain; apply resumes it"
        )
    for index, missing in state.index_drift.items():
        problems.append(f"index drift: {index} missing on {', '.join(sorted(missing))}")
    return table_plan(
        actions,
        problems,
        blocked=tuple(p for p in problems if p.startswith("cannot ")),
        referenced=referenced,
        default=default,
        columns=tuple(catalog.columns(using, schema, table)),
        read=(
            catalog.Snapshot(mark, state, referenced, security, parent)
            if mark is not None and parent is not None
            else None
        ),
    )


def _drain_actions(
    using: str,
    schema: str,
    table: str,
    column: str,
    default: str | None,
    referenced: tuple[str, ...],
    in_default: dict[dt.datetime, int],
    drains: list[Action],
) -> list[Action]:
    """The drains of one table, as apply runs them.

    When every row of the default belongs to a drained month: the shared swap. A ``record``
    step first (every row reaching the default outside those months is recorded from then on),
    each month staged and copied, then one ``swap`` (one TRUNCATE of the default, keeping the
    recorded rows, and every ATTACH) and its ``clean_up``. Otherwise (rows older than the
    retention cutoff, or of a month that cannot be created, stay in the default and TRUNCATE
    would lose them): each month is staged, copied and swapped alone, deleting its rows.
    The recorder's name carries a token: each apply run draws its own (the one shown here is
    this plan's).
    """
    if not drains or default is None or set(in_default) != {a.start for a in drains}:
        return drains
    key = catalog.primary_key_columns(using, schema, table)
    columns = catalog.columns(using, schema, table)
    token = uuid.uuid4().hex[:8]
    months = tuple(a.partition for a in drains)
    ranges = [(a.start, a.end) for a in drains]
    start, end = drains[0].start, drains[-1].end
    record = Action(
        "record", default, start, end, 0,
        (
            Step(
                "record",
                (
                    *sql.create_stranger_capture(schema, default, token, key, column, ranges),
                    sql.recorder_heartbeat(schema, default, token),
                ),
            ),
        ),
        months=months,
    )
    swap = shared_swap_statements(
        schema, table, default, token, key, column, columns, list(referenced),
        [(a.partition, a.start, a.end) for a in drains],
    )
    clean_up = [s for t, _ in clean_up_transactions(schema, default, list(months)) for s in t]
    swap_action = Action(
        "swap", default, start, end, 0,
        (Step("swap", tuple(swap)), Step("clean_up", tuple(clean_up))),
        months=months,
    )
    copied = [
        dataclasses.replace(a, steps=tuple(s for s in a.steps if s.name != "swap"))
        for a in drains
    ]
    return [record, *copied, swap_action]


def _clash(
    using: str, schema: str, table: str, name: str, found: tuple[str, bool] | None
) -> str | None:
    """Why ``name`` cannot be used for a new month's partition, or None when it can;
    ``found``: :func:`catalog.relation` of ``name``."""
    if found is None:
        return None
    kind, is_partition = found
    if kind == "r" and not is_partition and catalog.has_constraint(
        using, schema, name, sql.constraint_name(name, "_bounds")
    ):
        if catalog.column_signature(using, schema, name) == catalog.column_signature(
            using, schema, table
        ):
            return None  # our own staging table from an interrupted run: resumed
        return (
            f"cannot create {name}: a leftover staging table of that name has different "
            f"columns from {table}; drop it (DROP TABLE {sql.qualified(schema, name)}) and rerun"
        )
    what = "a partition with other bounds" if is_partition else "another table"
    return (
        f"cannot create {name}: {what} already has that name; rename it "
        f"(ALTER TABLE ... RENAME) and rerun"
    )


def plan(
    *,
    models_: list[str] | None = None,
    using: str = "default",
    ahead: int | None = None,
    retain: int | None = None,
    now: dt.datetime | None = None,
    cascade: bool | None = None,
) -> Plan:
    """What ``apply`` would do now in the connection's current schema (tenant or public).

    ``cascade`` (default: ``PARTITIONS.DROP_CASCADE``): retention may drop a partition that
    views depend on, and them with it; the plan lists them, and ``apply`` drops nothing else.
    """
    validate_months(ahead, retain)
    settings = partition_settings()
    if cascade is None:
        cascade = settings.drop_cascade
    chosen = resolve_models(models_)
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    schema = catalog.current_schema(using)
    tables = []
    for model in chosen:
        with catalog.one_cursor(using):
            table_plan = _table_plan(model, using, schema, now, settings, ahead, retain, cascade)
        if table_plan is None:
            if models_:
                raise PartitionError(
                    f"{model._meta.label}: table {model._meta.db_table!r} does not exist in schema "
                    f"{schema!r} (not migrated yet, or a tenant app: use --tenant/--all-tenants)"
                )
            continue
        tables.append(table_plan)
    return Plan(using, now, tuple(tables))
