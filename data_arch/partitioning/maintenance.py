"""Plan and apply partition maintenance: create months ahead, drain the default, retention.

``plan()`` only reads the catalog and returns a :class:`Plan` (printable, JSON-serializable,
renderable as SQL). ``apply(plan)`` executes it under a PostgreSQL advisory lock, one commit per
partition, every DDL statement under ``lock_timeout`` with retry and backoff, re-checking the
catalog for each action so reruns and concurrent runs are idempotent.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.apps import apps
from django.db import OperationalError, connections, models, transaction

from data_arch.conf import PartitionSettings, partition_settings
from data_arch.partitioning import catalog, sql
from data_arch.partitioning.declaration import (
    MonthlyPartitioning,
    partitioned_models,
    partitioning_of,
)

__all__ = ["Action", "PartitionError", "Plan", "TablePlan", "apply", "plan", "status"]

logger = logging.getLogger("data_arch.partitioning")

ADVISORY_LOCK = (zlib.crc32(b"data_arch.partitions") & 0x7FFFFFFF, 1)


class PartitionError(ValueError):
    """Bad input to partition maintenance (unknown model, bad --ahead/--retain, ...)."""


# --------------------------------------------------------------------------- months


def month_start(moment: dt.datetime) -> dt.datetime:
    moment = moment.astimezone(dt.UTC)
    return dt.datetime(moment.year, moment.month, 1, tzinfo=dt.UTC)


def add_months(start: dt.datetime, months: int) -> dt.datetime:
    index = start.year * 12 + start.month - 1 + months
    return dt.datetime(index // 12, index % 12 + 1, 1, tzinfo=dt.UTC)


def subtract_months(moment: dt.datetime, months: int) -> dt.datetime:
    """``moment`` minus calendar months, clamping the day (31 Mar - 1 month = 28/29 Feb)."""
    first = add_months(month_start(moment), -months)
    following = add_months(first, 1)
    day = min(moment.day, (following - first).days)
    return moment.astimezone(dt.UTC).replace(year=first.year, month=first.month, day=day)


# --------------------------------------------------------------------------- plan


@dataclasses.dataclass(frozen=True)
class Action:
    #: create (standalone table + drain of the default + attach), drop, detach or archive
    kind: str
    partition: str
    start: dt.datetime
    end: dt.datetime
    #: rows of this month sitting in the default partition (moved before attaching)
    default_rows: int = 0
    statements: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "partition": self.partition,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "default_rows": self.default_rows,
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
        }


@dataclasses.dataclass(frozen=True)
class Plan:
    database: str
    now: dt.datetime
    tables: tuple[TablePlan, ...]

    @property
    def pending(self) -> bool:
        return any(t.actions for t in self.tables)

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "now": self.now.isoformat(),
            "pending": self.pending,
            "tables": [t.to_dict() for t in self.tables],
        }

    def sql(self) -> str:
        lines = []
        for table in self.tables:
            for action in table.actions:
                lines.append(f"-- {table.schema}.{table.table}: {action.kind} {action.partition}")
                lines.extend(f"{statement};" for statement in action.statements)
        return "\n".join(lines)

    def __str__(self) -> str:
        lines = []
        for table in self.tables:
            lines.append(f"{table.model} ({table.schema}.{table.table})")
            for action in table.actions:
                extra = (
                    f", moving {action.default_rows} row(s) from default"
                    if action.default_rows
                    else ""
                )
                lines.append(
                    f"  {action.kind:<8} {action.partition}  "
                    f"[{action.start:%Y-%m-%d}, {action.end:%Y-%m-%d}){extra}"
                )
            if not table.actions:
                lines.append("  nothing to do")
            lines.extend(f"  ! {problem}" for problem in table.problems)
        return "\n".join(lines) or "no partitioned tables"


def resolve_models(labels: list[str] | None) -> list[type[models.Model]]:
    if not labels:
        return partitioned_models()
    found = []
    for label in labels:
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


def _options(
    model: type[models.Model], settings: PartitionSettings, ahead: int | None, retain: int | None
) -> tuple[int, int | None, str]:
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
    if ahead is not None and (isinstance(ahead, bool) or not isinstance(ahead, int) or ahead < 1):
        raise PartitionError(f"--ahead must be >= 1, got {ahead}")
    if retain is not None and (
        isinstance(retain, bool) or not isinstance(retain, int) or retain < 1
    ):
        raise PartitionError(f"--retain must be >= 1, got {retain}")
    if ahead is not None and retain is not None and retain < ahead:
        raise PartitionError(
            f"--retain {retain} is shorter than --ahead {ahead}: partitions created ahead would be "
            "due for retention before they are ever written; retain at least as many months"
        )


def _table_plan(
    model: type[models.Model],
    using: str,
    schema: str,
    now: dt.datetime,
    settings: PartitionSettings,
    ahead: int | None,
    retain: int | None,
) -> TablePlan | None:
    declared = partitioning_of(model)
    assert isinstance(declared, MonthlyPartitioning)
    table = model._meta.db_table
    column = model._meta.get_field(declared.field).column
    state = catalog.read_table(using, schema, table, column)
    if state is None:
        return None
    the_ahead, the_retain, mode = _options(model, settings, ahead, retain)
    if not state.partitioned:
        return TablePlan(
            model._meta.label,
            schema,
            table,
            column,
            the_ahead,
            the_retain,
            mode,
            (),
            (f"{schema}.{table} exists but is not partitioned",),
        )
    problems = list(state.gaps_and_overlaps())
    ranged = state.ranged
    cutoff = subtract_months(now, the_retain) if the_retain else None

    def covered(start: dt.datetime, end: dt.datetime) -> bool:
        return any(
            (p.start is None or p.start <= start) and (p.end is None or p.end >= end)
            for p in ranged
        )

    def overlapping(start: dt.datetime, end: dt.datetime) -> bool:
        return any(
            (p.start is None or p.start < end) and (p.end is None or p.end > start) for p in ranged
        )

    current = month_start(now)
    months = {add_months(current, i) for i in range(the_ahead + 1)}
    in_default = (
        catalog.default_row_months(using, schema, state.default.name, column)
        if state.default
        else {}
    )
    horizon = add_months(current, the_ahead + 1)
    for month in in_default:
        if month < horizon and (cutoff is None or add_months(month, 1) > cutoff):
            months.add(month)
    actions: list[Action] = []
    for start in sorted(months):
        end = add_months(start, 1)
        if covered(start, end):
            continue
        name = sql.partition_name(table, start)
        if overlapping(start, end):
            problems.append(
                f"cannot create {name}: an existing partition overlaps [{start:%Y-%m-%d}, {end:%Y-%m-%d})"
            )
            continue
        statements = [*sql.create_standalone(schema, table, name, column, start, end)]
        if state.default:
            statements += [
                *sql.lock_for_attach(schema, table, state.default.name),
                sql.drain_batch(
                    schema, state.default.name, name, column,
                    catalog.columns(using, schema, table), start, end, None,
                ),
                sql.attach(schema, table, name, start, end),
            ]
        else:
            statements.append(sql.attach(schema, table, name, start, end))
        statements.append(sql.drop_bounds_check(schema, name))
        actions.append(
            Action("create", name, start, end, in_default.get(start, 0), tuple(statements))
        )
    if cutoff is not None:
        for partition in ranged:
            if partition.end is None or partition.start is None or partition.end > cutoff:
                continue  # retention by END: only a partition entirely older than the cutoff goes
            actions.append(
                Action(
                    mode,
                    partition.name,
                    partition.start,
                    partition.end,
                    0,
                    tuple(
                        _retention_sql(
                            mode, schema, table, partition.name, state.default is None, settings
                        )
                    ),
                )
            )
    for month, count in sorted(in_default.items()):
        if month >= horizon or (cutoff is not None and add_months(month, 1) <= cutoff):
            problems.append(
                f"{count} row(s) of {month:%Y-%m} sit in the default partition outside "
                "the months kept (check the data or widen --ahead/--retain)"
            )
    for index, missing in state.index_drift.items():
        problems.append(f"index drift: {index} missing on {', '.join(sorted(missing))}")
    return TablePlan(
        model._meta.label,
        schema,
        table,
        column,
        the_ahead,
        the_retain,
        mode,
        tuple(actions),
        tuple(problems),
    )


def archive_schema_for(schema: str, settings: PartitionSettings) -> str:
    """Each source schema archives into its own schema, so tenants' partitions never collide."""
    if schema == "public":
        return settings.archive_schema
    return sql.fit_name(schema, f"_{settings.archive_schema}")


def _retention_sql(
    mode: str, schema: str, table: str, name: str, no_default: bool, settings: PartitionSettings
) -> list[str]:
    concurrently = settings.detach_concurrently and no_default
    statements = [sql.detach(schema, table, name, concurrently)]
    if mode == "drop":
        statements.append(sql.drop(schema, name))
    elif mode == "archive":
        target = archive_schema_for(schema, settings)
        statements += [sql.create_schema(target), sql.set_schema(schema, name, target)]
    return statements


def plan(
    *,
    models_: list[str] | None = None,
    using: str = "default",
    ahead: int | None = None,
    retain: int | None = None,
    now: dt.datetime | None = None,
) -> Plan:
    """What ``apply`` would do now in the connection's current schema (tenant or public)."""
    validate_months(ahead, retain)
    settings = partition_settings()
    chosen = resolve_models(models_)
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    schema = catalog.current_schema(using)
    tables = []
    for model in chosen:
        table_plan = _table_plan(model, using, schema, now, settings, ahead, retain)
        if table_plan is None:
            if models_:
                raise PartitionError(
                    f"{model._meta.label}: table {model._meta.db_table!r} does not exist in schema "
                    f"{schema!r} (not migrated yet, or a tenant app: use --tenant/--all-tenants)"
                )
            continue
        a, r = table_plan.ahead, table_plan.retain
        if r is not None and r < a:
            raise PartitionError(f"{model._meta.label}: retain {r} is shorter than ahead {a}")
        tables.append(table_plan)
    return Plan(using, now, tuple(tables))


# --------------------------------------------------------------------------- apply


@dataclasses.dataclass
class ApplyResult:
    done: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    rows_moved: int = 0
    lock_retries: int = 0


def _is_lock_timeout(exc: BaseException) -> bool:
    cause = exc.__cause__ or exc
    return (
        getattr(getattr(cause, "diag", None), "sqlstate", None) == "55P03"
        or getattr(cause, "sqlstate", None) == "55P03"
    )


class _Runner:
    def __init__(
        self,
        using: str,
        settings: PartitionSettings,
        result: ApplyResult,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.using = using
        self.settings = settings
        self.result = result
        self.sleep = sleep

    def step(self, statements: list[str], *, atomic: bool = True) -> None:
        """Run ``statements`` in one transaction under lock_timeout, retrying on lock timeouts."""
        connection = connections[self.using]
        for attempt in range(1, self.settings.lock_retries + 1):
            try:
                if atomic:
                    with transaction.atomic(using=self.using), connection.cursor() as cursor:
                        cursor.execute(
                            "SELECT set_config('lock_timeout', %s, true)",
                            [f"{self.settings.lock_timeout_ms}ms"],
                        )
                        for statement in statements:
                            cursor.execute(statement)
                else:
                    with connection.cursor() as cursor:
                        cursor.execute(
                            "SELECT set_config('lock_timeout', %s, false)",
                            [f"{self.settings.lock_timeout_ms}ms"],
                        )
                        try:
                            for statement in statements:
                                cursor.execute(statement)
                        finally:
                            cursor.execute("RESET lock_timeout")
                return
            except OperationalError as exc:
                if not _is_lock_timeout(exc) or attempt == self.settings.lock_retries:
                    raise
                self.result.lock_retries += 1
                delay = min(0.05 * 2 ** (attempt - 1), 2.0) * (0.5 + random.random())
                logger.info("lock timeout (attempt %s), retrying in %.2fs", attempt, delay)
                self.sleep(delay)


@contextmanager
def advisory_lock(using: str) -> Iterator[None]:
    """Session-level lock: a second run waits here until the first finishes."""
    connection = connections[using]
    if connection.in_atomic_block:
        raise PartitionError(
            "apply() commits once per partition; call it outside transaction.atomic()"
        )
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s, %s)", list(ADVISORY_LOCK))
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", list(ADVISORY_LOCK))


def apply(the_plan: Plan, *, on_progress: Callable[[str], None] | None = None) -> ApplyResult:
    """Execute ``the_plan``; each action is re-checked against the catalog first."""
    settings = partition_settings()
    using = the_plan.database
    result = ApplyResult()
    runner = _Runner(using, settings, result)
    with advisory_lock(using):
        for table in the_plan.tables:
            for action in table.actions:
                label = f"{table.schema}.{table.table}: {action.kind} {action.partition}"
                if _apply_action(runner, table, action, settings):
                    result.done.append(label)
                else:
                    result.skipped.append(label)
                if on_progress:
                    on_progress(label)
    return result


def _apply_action(
    runner: _Runner, table: TablePlan, action: Action, settings: PartitionSettings
) -> bool:
    using, schema = runner.using, table.schema
    state = catalog.read_table(using, schema, table.table, table.column)
    if state is None:
        return False
    attached = {p.name: p for p in state.partitions}
    if action.kind == "create":
        if any(p.start == action.start and p.end == action.end for p in state.ranged):
            return False  # done by an earlier or concurrent run
        if catalog.table_oid(using, schema, action.partition) is None:
            runner.step(
                list(
                    sql.create_standalone(
                        schema,
                        table.table,
                        action.partition,
                        table.column,
                        action.start,
                        action.end,
                    )
                )
            )
        if state.default is None:
            runner.step(
                [
                    sql.attach(schema, table.table, action.partition, action.start, action.end),
                    sql.drop_bounds_check(schema, action.partition),
                ]
            )
            return True
        default = state.default.name
        _drain(runner, table, action, default)
        # One short transaction (see sql.lock_for_attach for the lock order): rows that slipped
        # into the default since the drain move in it, so ATTACH's scan of the default finds none
        # of the new month and no insert of that month fails or is lost.
        runner.step(
            [
                *sql.lock_for_attach(schema, table.table, default),
                sql.drain_batch(
                    schema, default, action.partition, table.column,
                    catalog.columns(using, schema, table.table), action.start, action.end, None,
                ),
                sql.attach(schema, table.table, action.partition, action.start, action.end),
            ]
        )
        runner.step([sql.drop_bounds_check(schema, action.partition)])
        return True
    if action.partition not in attached:
        return False
    statements = list(
        _retention_sql(
            action.kind, schema, table.table, action.partition, state.default is None, settings
        )
    )
    if settings.detach_concurrently and state.default is None:
        runner.step(statements[:1], atomic=False)  # DETACH CONCURRENTLY refuses a transaction
        statements = statements[1:]
    runner.step(statements)
    return True


def _drain(runner: _Runner, table: TablePlan, action: Action, default: str) -> int:
    """Move rows of the action's month from the default into the new table, one commit per batch."""
    columns = catalog.columns(runner.using, table.schema, table.table)
    statement = sql.drain_batch(
        table.schema,
        default,
        action.partition,
        table.column,
        columns,
        action.start,
        action.end,
        runner.settings.drain_batch_size,
    )
    moved_total = 0
    while True:
        with transaction.atomic(using=runner.using), connections[runner.using].cursor() as cursor:
            cursor.execute(statement)
            moved = cursor.rowcount
        moved_total += moved
        runner.result.rows_moved += moved
        if moved == 0:  # SKIP LOCKED may return short batches before the end
            return moved_total


# --------------------------------------------------------------------------- status


def status(
    *, models_: list[str] | None = None, using: str = "default", now: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """Every partitioned table in the current schema: partitions, coverage, default rows, drift."""
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    schema = catalog.current_schema(using)
    report = []
    for model in resolve_models(models_):
        declared = partitioning_of(model)
        assert declared is not None
        column = model._meta.get_field(declared.field).column
        state = catalog.read_table(
            using,
            schema,
            model._meta.db_table,
            column,
            [index.name for index in model._meta.indexes],
        )
        if state is None:
            continue
        current = month_start(now)

        ranged = state.ranged

        def covered(start: dt.datetime, ranged: list[catalog.Partition] = ranged) -> bool:
            end = add_months(start, 1)
            return any(
                (p.start is None or p.start <= start) and (p.end is None or p.end >= end)
                for p in ranged
            )

        months_ahead = -1
        while covered(add_months(current, months_ahead + 1)):
            months_ahead += 1
        report.append(
            {
                "model": model._meta.label,
                "schema": schema,
                "table": state.table,
                "partitions": [
                    {
                        "name": p.name,
                        "start": p.start.isoformat() if p.start else None,
                        "end": p.end.isoformat() if p.end else None,
                        "default": p.is_default,
                        "size_bytes": p.size_bytes,
                        "estimated_rows": p.estimated_rows,
                    }
                    for p in (*state.ranged, *([state.default] if state.default else []))
                ],
                "months_ahead": max(months_ahead, 0),
                "covers_current": months_ahead >= 0,
                "default_rows": state.default_rows,
                "problems": state.gaps_and_overlaps(),
                "index_drift": state.index_drift,
                "missing_indexes": state.missing_indexes,
            }
        )
    return report
