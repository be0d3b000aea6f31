"""Apply a plan: each step in its own transaction, in DML lock order, retried from a clean state.

Every transaction that changes a table starts with a transaction-scoped try-lock on
(schema, table) — safe behind PgBouncer in transaction mode, and unrelated tables never wait for
each other — then sets ``lock_timeout``. Before a step that locks the parent, the runner waits
(holding nothing, so nobody queues behind it) until no transaction older than a few
milliseconds holds a lock on the tables involved (10 ms). A lock timeout (55P03) or a deadlock (40P01)
rolls the whole step back, so nothing half-made is left, and the step is retried with backoff.
A failing action is recorded and the run goes on with the next one.

Consecutive plain months of a table (no rows of theirs in the default) are built from one read
of the table (the plan's, else the run's own): each month's transaction checks that read
against the catalog right after its locks and, on any difference, rolls back and builds the
month from a fresh read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError, connections, transaction

from data_arch.conf import PartitionSettings, partition_settings
from data_arch.partitioning import catalog, sql
from data_arch.partitioning.plan import (
    RETENTION_KINDS,
    Action,
    PartitionError,
    Plan,
    Step,
    TablePlan,
    _clash,
    clean_up_transactions,
    create_steps,
    detach_concurrently,
    retention_steps,
    shared_swap_statements,
)

__all__ = ["ApplyResult", "Failure", "MaintenanceBusy", "MaintenanceError", "apply"]

logger = logging.getLogger("data_arch.partitioning")

#: lock_not_available (lock_timeout) and deadlock_detected: both safe to retry from scratch.
RETRYABLE = frozenset({"55P03", "40P01"})


class MaintenanceError(RuntimeError):
    """A step could not be completed; the catalog is as it was before the step."""


class MaintenanceBusy(MaintenanceError):
    """Another run holds the maintenance lock of this table."""


class _Changed(Exception):
    """A concurrent run changed the partition between our read and our lock: read again."""


class _Straggler(Exception):
    """Rows of the month reached the default after planning: take the drain path instead."""


@dataclasses.dataclass(frozen=True)
class Failure:
    schema: str
    table: str
    action: str
    error: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.table}: {self.action}: {self.error}"


@dataclasses.dataclass
class ApplyResult:
    done: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    failures: list[Failure] = dataclasses.field(default_factory=list)
    #: every step run, labelled as :meth:`Plan.step_labels` lists them
    steps: list[str] = dataclasses.field(default_factory=list)
    rows_moved: int = 0
    lock_retries: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "done": list(self.done),
            "skipped": list(self.skipped),
            "failures": [str(f) for f in self.failures],
            "steps": list(self.steps),
            "rows_moved": self.rows_moved,
            "lock_retries": self.lock_retries,
        }


def sqlstate(exc: BaseException) -> str | None:
    for candidate in (exc, exc.__cause__):
        state = getattr(candidate, "sqlstate", None) or getattr(
            getattr(candidate, "diag", None), "sqlstate", None
        )
        if state:
            return state
    return None


#: whether a transaction older than %s ms holds a lock on one of the relations %s
_BUSY = (
    "EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid() "
    "AND l.relation = ANY(%s::text[]::regclass[]) "
    "AND a.xact_start < clock_timestamp() - %s * interval '1 millisecond')"
)
_QUIET_SQL = f"SELECT {_BUSY}"


@dataclasses.dataclass
class Known:
    """A table's catalog state and what its new months copy from the parent (foreign-key
    targets, row-level security, comment, identity), read once and reused by the run's
    consecutive month creations on that table. Each of them compares ``fingerprint``
    (:func:`sql.definition_fingerprint`, read before the rest) with the catalog right after
    taking its locks, which every change it covers (but another partition's storage
    parameters) must wait for: on any difference its transaction is rolled back and the month
    is built again from a fresh read."""

    fingerprint: str
    state: catalog.TableState
    referenced: list[str]
    row_security: catalog.RowSecurity
    parent: tuple[str | None, tuple[tuple[str, str], ...]]
    #: months this run attached since the read (left out of the fingerprint)
    attached: list[str] = dataclasses.field(default_factory=list)


class Runner:
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
        #: drains copied and waiting for the table's shared swap (None: each swaps alone)
        self.pending: list[Action] | None = None
        #: names this run's recorder of rows reaching the default outside its drains
        self.token = uuid.uuid4().hex[:8]
        #: the default this run's recorder is installed on, while it is
        self.recording: str | None = None
        #: per (schema, table): what its month creations are built from (:meth:`known_of`)
        self.known: dict[tuple[str, str], Known] = {}
        #: tables whose plan's read (``TablePlan.read``) no longer serves
        self.spent: set[tuple[str, str]] = set()

    def known_of(self, table: TablePlan) -> Known | None:
        """What the table's months are built from, read once for the run's consecutive month
        creations (see :class:`Known`); None when the table is gone."""
        key = (table.schema, table.table)
        known = self.known.get(key)
        if known is None:
            read = table.read if key not in self.spent else None
            self.spent.add(key)  # the plan's read serves only the run's first months
            if read is not None:
                known = Known(
                    read.fingerprint, read.state, list(read.referenced), read.row_security,
                    read.parent,
                )
            else:
                using, schema = self.using, table.schema
                # The fingerprint first, then what it covers: a change in between shows as a
                # mismatch under the locks, never as a match.
                with catalog.one_cursor(using):
                    mark = catalog.fingerprint(using, schema, table.table)
                    state = catalog.read_table(using, schema, table.table, table.column)
                    if mark is None or state is None:
                        return None
                    known = Known(
                        mark, state,
                        catalog.referenced_tables(using, schema, table.table),
                        catalog.row_security(using, schema, table.table),
                        catalog.parent_carry(using, schema, table.table),
                    )
            self.known[key] = known
        return known

    def forget(self, table: TablePlan) -> None:
        key = (table.schema, table.table)
        self.known.pop(key, None)
        self.spent.add(key)

    def ran(self, table: TablePlan, step: str, target: str) -> None:
        self.result.steps.append(f"{table.schema}.{table.table}: {step} {target}")

    def drop_recorder(self, schema: str, table: str) -> None:
        """Remove this run's recorder. Without the table's try-lock: it is this run's own, and
        a busy table (twenty runs at once) must not keep it from going."""
        if self.recording is None:
            return
        statements = sql.drop_stranger_capture(schema, self.recording, self.token)
        for attempt in range(1, self.settings.lock_retries + 1):
            try:
                with transaction.atomic(using=self.using), connections[
                    self.using
                ].cursor() as cursor:
                    cursor.execute(sql.lock_timeout(self.settings.lock_timeout_ms))
                    for statement in statements:
                        cursor.execute(statement)
                self.recording = None
                return
            except DatabaseError as exc:
                if sqlstate(exc) not in RETRYABLE or attempt == self.settings.lock_retries:
                    raise
                self.result.lock_retries += 1
                self.sleep(min(0.05 * 2 ** (attempt - 1), 2.0) * (0.5 + random.random()))

    def young_ms(self) -> int:
        """How old a transaction holding a lock must be for :meth:`wait_for_quiet` to wait."""
        return min(10, self.settings.lock_timeout_ms // 2)

    def wait_for_quiet(
        self, relations: list[str], budget: list[float] | None = None, cursor: Any = None
    ) -> None:
        """Wait, holding no lock, until no long transaction holds a lock on ``relations``.

        A lock request queues everyone who comes after it; waiting here instead keeps writers
        and readers flowing while a long reader finishes. Bounded per step by
        ``LOCK_TIMEOUT_MS * LOCK_RETRIES``, kept between 1 and 10 s, shared by its attempts
        through ``budget``; past that the step's own lock_timeout bounds everyone's wait.
        Other roles' transaction starts are visible only to superusers and pg_read_all_stats:
        without that right this wait passes at once and lock_timeout alone bounds the waits.
        """
        if budget is None:
            budget = [self.quiet_budget()]
        started = time.monotonic()
        try:
            with (
                connections[self.using].cursor() if cursor is None
                else contextlib.nullcontext(cursor)
            ) as probe:
                while True:
                    probe.execute(_QUIET_SQL, [relations, self.young_ms()])
                    if not probe.fetchone()[0] or time.monotonic() - started >= budget[0]:
                        return
                    time.sleep(0.01)
        finally:
            budget[0] = max(0.0, budget[0] - (time.monotonic() - started))

    def quiet_budget(self) -> float:
        return min(10.0, max(1.0, self.settings.lock_timeout_ms * self.settings.lock_retries / 1000))

    def transaction(
        self,
        schema: str,
        table: str,
        statements: list[str | Callable[[Any], None]],
        quiet: list[str] | None = None,
        probed: bool = False,
        cursor: Any = None,
    ) -> int:
        """Run ``statements`` in one transaction under the table's try-lock and lock_timeout.

        Returns the row count of the last statement. Retries lock timeouts, deadlocks and a
        busy try-lock; each attempt starts from a clean state (the failed one rolled back).
        ``probed``: the caller has just found ``quiet`` quiet (holding nothing), so the first
        attempt does not wait again. ``cursor``: one of the caller's, used outside any
        transaction (else each attempt opens its own).
        """
        attempts = self.settings.lock_retries
        budget = [self.quiet_budget()]
        for attempt in range(1, attempts + 1):
            try:
                with (
                    connections[self.using].cursor() if cursor is None
                    else contextlib.nullcontext(cursor)
                ) as on:
                    if quiet and not (probed and attempt == 1):
                        self.wait_for_quiet(quiet, budget, on)  # before the transaction
                    count = self._attempt(on, schema, table, statements)
                return count
            except MaintenanceBusy:
                if attempt == attempts:
                    raise
            except DatabaseError as exc:
                if sqlstate(exc) not in RETRYABLE or attempt == attempts:
                    raise
                self.result.lock_retries += 1
            delay = min(0.05 * 2 ** (attempt - 1), 2.0) * (0.5 + random.random())
            logger.info("%s.%s: lock wait (attempt %s), retrying in %.2fs", schema, table,
                        attempt, delay)
            self.sleep(delay)
        raise AssertionError("unreachable")

    def _attempt(
        self, cursor: Any, schema: str, table: str, statements: list[str | Callable[[Any], None]]
    ) -> int:
        """One attempt of :meth:`transaction`, on ``cursor``."""
        with transaction.atomic(using=self.using):
            cursor.execute(sql.try_table_lock_with_timeout(
                schema, table, self.settings.lock_timeout_ms
            ))
            if not cursor.fetchone()[0]:
                raise MaintenanceBusy(
                    f"another run holds the maintenance lock of {schema}.{table}"
                )
            count = 0
            started = time.perf_counter()
            for statement in statements:
                began = time.perf_counter()
                if callable(statement):
                    statement(cursor)
                else:
                    cursor.execute(statement)
                    count = cursor.rowcount
                spent = (time.perf_counter() - began) * 1000
                if spent >= 20:
                    logger.debug("%s.%s: %.1f ms in %.200s", schema, table, spent,
                                 getattr(statement, "__name__", statement))
            logger.debug(
                "%s.%s: step of %s statement(s) ran in %.1f ms", schema, table,
                len(statements), (time.perf_counter() - started) * 1000,
            )
        return count

    def bare(self, statement: str) -> None:
        """One statement outside a transaction block (``DETACH ... CONCURRENTLY``)."""
        attempts = self.settings.lock_retries
        for attempt in range(1, attempts + 1):
            try:
                with connections[self.using].cursor() as cursor:
                    cursor.execute(
                        "SELECT set_config('lock_timeout', %s, false)",
                        [f"{self.settings.lock_timeout_ms}ms"],
                    )
                    try:
                        cursor.execute(statement)
                    finally:
                        cursor.execute("RESET lock_timeout")
                return
            except DatabaseError as exc:
                if sqlstate(exc) not in RETRYABLE or attempt == attempts:
                    raise
                self.result.lock_retries += 1
                self.sleep(min(0.05 * 2 ** (attempt - 1), 2.0) * (0.5 + random.random()))


def apply(the_plan: Plan, *, on_progress: Callable[[str], None] | None = None) -> ApplyResult:
    """Execute ``the_plan``: its actions and their steps, in the plan's order, each re-checked
    against the catalog first (what no longer applies is skipped).

    ``result.steps`` lists every step run, labelled as :meth:`Plan.step_labels` lists them.
    A failing action is recorded in ``result.failures`` and the run goes on; another run
    holding a table's lock skips that table (recorded as a failure naming the lock).
    """
    settings = partition_settings()
    using = the_plan.database
    if connections[using].in_atomic_block:
        raise PartitionError(
            "apply() commits once per step; call it outside transaction.atomic()"
        )
    result = ApplyResult()
    runner = Runner(using, settings, result)

    def label_of(table: TablePlan, action: Action) -> str:
        return f"{table.schema}.{table.table}: {action.kind} {action.partition}"

    def failed(table: TablePlan, action: Action, exc: BaseException) -> None:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        logger.warning("%s failed: %s", label_of(table, action), message)
        result.failures.append(
            Failure(table.schema, table.table, f"{action.kind} {action.target}", message)
        )

    def finished(table: TablePlan, action: Action, changed: bool) -> None:
        (result.done if changed else result.skipped).append(label_of(table, action))
        if on_progress:
            on_progress(label_of(table, action))

    def swap_pending(table: TablePlan, months: tuple[str, ...]) -> None:
        pending, runner.pending = runner.pending or [], None
        if not pending:
            return
        # Together only when every month of the planned swap is here: the TRUNCATE keeps rows
        # outside the drained months only if the recorder recorded them (a failed month's were
        # not).
        together = [a.partition for a in pending] == list(months)
        try:
            outcomes = _swap_together(runner, table, pending, together)
        except (DatabaseError, MaintenanceError) as exc:
            outcomes = [(action, exc) for action in pending]
        for action, error in outcomes:
            if error is None:
                finished(table, action, True)
            else:
                failed(table, action, error)

    for table in the_plan.tables:
        runner.pending = None
        try:
            for action in table.actions:
                if action.kind != "create" or action.default_rows:
                    runner.forget(table)  # the reused read is for plain month creations only
                try:
                    if action.kind == "clean_up":
                        try:
                            _finish_cleanups(runner, table, action)
                        except (DatabaseError, MaintenanceError) as exc:
                            # Only leftovers on attached months: the next run finishes them
                            # (a concurrent run may be doing it right now).
                            logger.warning("%s.%s: clean-up of an earlier run left for later: "
                                           "%s", table.schema, table.table, exc)
                        continue
                    if action.kind == "record":
                        if _prepare_shared_swap(runner, table, action):
                            runner.pending = []  # the drains' swaps wait for the shared one
                        continue
                    if action.kind == "swap":
                        swap_pending(table, action.months)
                        continue
                    changed = _apply_action(runner, table, action)
                except MaintenanceBusy as exc:
                    result.failures.append(
                        Failure(table.schema, table.table, action.kind, str(exc))
                    )
                    break  # the other run is maintaining this table
                except (DatabaseError, MaintenanceError) as exc:
                    failed(table, action, exc)
                    continue
                if runner.pending and runner.pending[-1] is action:
                    continue  # reported with the shared swap
                finished(table, action, changed)
            if runner.pending:  # a swap left out of the plan given: the copies still go in
                swap_pending(table, ())
        finally:
            runner.pending = None
            runner.forget(table)
            try:
                runner.drop_recorder(table.schema, table.table)
            except (DatabaseError, MaintenanceError) as exc:
                logger.warning("%s.%s: could not drop this run's recorder: %s",
                               table.schema, table.table, exc)
    return result


def _finish_cleanups(runner: Runner, table: TablePlan, action: Action) -> None:
    """Finish the clean-up of a shared swap whose run was killed before it (see
    :func:`_after_shared_swap`): attached months keep neither capture nor bounds CHECK."""
    if table.default is None:
        return
    checks, captures = catalog.swap_leftovers(runner.using, table.schema, table.table)
    left = [name for name in action.months if name in {*checks, *captures}]
    if left:
        _after_shared_swap(runner, table, table.default, left, action.target)


def _after_shared_swap(
    runner: Runner, table: TablePlan, default: str, partitions: list[str], target: str
) -> None:
    """What the shared swap left for later (:func:`clean_up_transactions`)."""
    schema = table.schema
    for statements, locked in clean_up_transactions(schema, default, partitions):
        quiet = [sql.qualified(schema, locked)] if locked else None
        runner.transaction(schema, table.table, list(statements), quiet)
    runner.ran(table, "clean_up", target)


def _prepare_shared_swap(runner: Runner, table: TablePlan, record: Action) -> bool:
    """Whether the table's drains can be swapped in together (see :func:`_swap_together`).

    Before any copy: a trigger starts recording every row that reaches the default outside
    the drained months; then, if the default holds no other row that trigger has not recorded,
    emptying it later with TRUNCATE loses nothing, provided the recorded rows are kept.
    """
    using, schema = runner.using, table.schema
    state = catalog.read_table(using, schema, table.table, table.column)
    default = state.default.name if state and state.default else None
    drains = [a for a in table.actions if a.kind == "create" and a.partition in record.months]
    if not drains or default is None:
        return False
    ranges = [(a.start, a.end) for a in drains]
    key = catalog.primary_key_columns(using, schema, table.table)
    try:
        with connections[using].cursor() as cursor:
            cursor.execute(sql.silent_recorders(schema, default))
            silent = [row[0] for row in cursor.fetchall()]
        for token in silent:  # left by runs that were killed
            runner.transaction(
                schema, table.table, list(sql.drop_stranger_capture(schema, default, token))
            )
        runner.recording = default
        runner.transaction(
            schema, table.table,
            [
                *sql.create_stranger_capture(
                    schema, default, runner.token, key, table.column, ranges
                ),
                sql.recorder_heartbeat(schema, default, runner.token),
            ],
        )
        with connections[using].cursor() as cursor:
            cursor.execute(sql.holds_only(schema, default, runner.token, key, table.column, ranges))
            if cursor.fetchone()[0]:
                runner.ran(table, "record", record.target)
                return True
        runner.drop_recorder(schema, table.table)
    except (DatabaseError, MaintenanceError) as exc:
        logger.info("%s.%s: drains swapped one by one: %s", schema, table.table, exc)
    return False


def _swap_together(
    runner: Runner, table: TablePlan, pending: list[Action], shared: bool
) -> list[tuple[Action, BaseException | None]]:
    """Swap in the copied months of one table in one short transaction.

    When ``shared`` (every month of the planned swap got this far), the default is emptied
    with one TRUNCATE, keeping the rows recorded as arriving outside the drained months, and
    every month is attached after it: no ATTACH scans a big default and nothing is deleted
    row by row under the lock. Otherwise (a drain failed, or a concurrent run swapped some
    in) each month is swapped alone, deleting its rows from the default.
    """
    using, schema = runner.using, table.schema
    state = catalog.read_table(using, schema, table.table, table.column)
    default = state.default.name if state and state.default else None
    if default is not None and shared:
        statements: list[Any] = [
            # First, under the table's try-lock (no other run's step can run meanwhile): every
            # month is still staged and unattached, so its change table is there to analyze.
            *(_guard(schema, a.partition, True) for a in pending),
            *shared_swap_statements(
                schema, table.table, default, runner.token,
                catalog.primary_key_columns(using, schema, table.table), table.column,
                catalog.columns(using, schema, table.table),
                catalog.referenced_tables(using, schema, table.table),
                [(a.partition, a.start, a.end) for a in pending],
            ),
        ]
        referenced = catalog.referenced_tables(using, schema, table.table)
        quiet = [*referenced, sql.qualified(schema, table.table), sql.qualified(schema, default)]
        try:
            runner.transaction(schema, table.table, statements, quiet)
        except _Changed:
            pass  # a concurrent run swapped some in: each goes on alone
        else:
            runner.recording = None  # dropped by the swap
            target = ", ".join(a.partition for a in pending)
            runner.ran(table, "swap", target)
            _after_shared_swap(runner, table, default, [a.partition for a in pending], target)
            return [(a, None) for a in pending]
    runner.drop_recorder(schema, table.table)
    outcomes: list[tuple[Action, BaseException | None]] = []
    for a in pending:
        try:
            fresh = catalog.read_table(using, schema, table.table, table.column)
            if fresh is not None:
                _create(runner, table, a, fresh)
            outcomes.append((a, None))
        except (DatabaseError, MaintenanceError) as exc:
            outcomes.append((a, exc))
    return outcomes


def _apply_action(runner: Runner, table: TablePlan, action: Action) -> bool:
    if action.kind == "create" and not action.default_rows:
        known = runner.known_of(table)
        if known is None:
            return False
        return _create(runner, table, action, known.state, known)
    if action.kind in RETENTION_KINDS:
        return _retire(runner, table, action)
    state = catalog.read_table(runner.using, table.schema, table.table, table.column)
    if state is None:
        return False
    if action.kind == "create":
        return _create(runner, table, action, state)
    return False


def _count_in_default(cursor: Any, schema: str, default: str, column: str, action: Action) -> int:
    cursor.execute(
        f"SELECT count(*) FROM {sql.qualified(schema, default)} WHERE {sql.quote(column)} >= "
        f"{sql.literal(action.start)} AND {sql.quote(column)} < {sql.literal(action.end)}"
    )
    return cursor.fetchone()[0]


def _create(
    runner: Runner,
    table: TablePlan,
    action: Action,
    state: catalog.TableState,
    known: Known | None = None,
) -> bool:
    """Create one month; ``known``: first try to build it from the run's earlier read (see
    :class:`Known`). Whatever that path cannot decide on its own goes to one that reads the
    catalog afresh."""
    if known is not None:
        try:
            return _create_from(runner, table, action, known)
        except _Changed:
            runner.forget(table)
            fresh = catalog.read_table(runner.using, table.schema, table.table, table.column)
            if fresh is None:
                return False
            state = fresh
    for _ in range(5):
        try:
            return _create_once(runner, table, action, state)
        except _Changed:
            fresh = catalog.read_table(runner.using, table.schema, table.table, table.column)
            if fresh is None:
                return False
            state = fresh
    raise MaintenanceError(f"{action.partition} kept changing under a concurrent run")


def _guard(schema: str, name: str, exists: bool) -> Callable[[Any], None]:
    """First statement under the try-lock: the table is still as this run last saw it."""

    def check(cursor: Any) -> None:
        cursor.execute(
            "SELECT c.relispartition FROM pg_class c JOIN pg_namespace n ON n.oid = "
            "c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
            [schema, name],
        )
        row = cursor.fetchone()
        if (row is not None) != exists or (row is not None and row[0]):
            raise _Changed

    return check


def _joined(statements: list[Any]) -> list[Any]:
    """Consecutive SQL strings sent as one (PostgreSQL runs them in turn, each under the
    transaction's lock_timeout, and the first error aborts the transaction): one round trip."""
    out: list[Any] = []
    for statement in statements:
        if isinstance(statement, str) and out and isinstance(out[-1], str):
            out[-1] = f"{out[-1]};\n{statement}"
        else:
            out.append(statement)
    return out


def _verbatim(text: str) -> str:
    """``text`` (identifiers, literals) inside a statement that also takes parameters."""
    return text.replace("%", "%%")


def _create_from(runner: Runner, table: TablePlan, action: Action, known: Known) -> bool:
    """The plain month (no rows of it in the default, its name free), built from ``known``.

    Before the transaction, holding nothing, one statement asks whether the name is taken,
    whether the default holds rows of the month and whether the tables are quiet. In the
    transaction, CREATE TABLE itself fails if the name was taken since; right after the
    locks, one statement checks the default again and compares the fingerprint. Raises
    :class:`_Changed` (nothing left behind) for anything else: a month the read says is done
    or overlapped, a taken name, rows to drain, a catalog that no longer matches the read.
    """
    using, schema, name = runner.using, table.schema, action.partition
    state = known.state
    if state.overlaps(action.start, action.end):
        raise _Changed  # done or overlapped: decided on a fresh read
    default = state.default.name if state.default else None
    quiet = [*known.referenced, sql.qualified(schema, table.table)]
    if default:
        quiet.append(sql.qualified(schema, default))
    rows_of_month = (
        f"EXISTS (SELECT 1 FROM {sql.qualified(schema, default)} WHERE "
        f"{sql.quote(table.column)} >= {sql.literal(action.start)} AND "
        f"{sql.quote(table.column)} < {sql.literal(action.end)})"
        if default else "false"
    )
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = "
            "c.relnamespace WHERE n.nspname = %s AND c.relname = %s), "
            f"{_verbatim(rows_of_month)}, {_BUSY}",
            [schema, name, quiet, runner.young_ms()],
        )
        taken, rows, busy = cursor.fetchone()
        if taken or rows:
            raise _Changed  # a staged or clashing table, or rows to drain: the path that reads
        _build_from(runner, table, action, known, default, rows_of_month, quiet, busy, cursor)
    return True


def _build_from(
    runner: Runner,
    table: TablePlan,
    action: Action,
    known: Known,
    default: str | None,
    rows_of_month: str,
    quiet: list[str],
    busy: bool,
    cursor: Any,
) -> None:
    """The transaction of :func:`_create_from`, on the cursor of its read."""
    using, schema, name = runner.using, table.schema, action.partition
    state = known.state
    carried = catalog.carried(using, schema, table.table, state, action.start, known.parent)
    steps = create_steps(
        schema, table.table, name, table.column, action.start, action.end, default,
        known.referenced, [], [], runner.settings.drain_batch_size, drain=False, staged=False,
        row_security=known.row_security, carried=carried,
    )

    def under_the_locks(on: Any) -> None:
        fingerprint, params = sql.definition_fingerprint(schema, table.table, known.attached)
        on.execute(f"SELECT {_verbatim(rows_of_month)}, ({fingerprint})", params)
        stragglers, now = on.fetchone()
        if stragglers or now != known.fingerprint:
            raise _Changed

    statements: list[Any] = list(steps[0].statements)
    # Right after the locks: a row that reached the default since the read above, and
    # whether the catalog still matches the run's read of it.
    statements.insert(len(statements) - 2, under_the_locks)
    try:
        runner.transaction(
            schema, table.table, _joined(statements), quiet, probed=not busy, cursor=cursor
        )
    except DatabaseError as exc:
        if sqlstate(exc) == "42P07":  # duplicate_table: the name was taken since the read
            raise _Changed from None
        raise
    runner.ran(table, steps[0].name, name)
    known.attached.append(name)
    known.state = dataclasses.replace(
        state,
        partitions=(
            *state.partitions,
            catalog.Partition(name, action.start, action.end, reloptions=carried.reloptions),
        ),
    )


def _create_once(
    runner: Runner, table: TablePlan, action: Action, state: catalog.TableState
) -> bool:
    using, schema, name = runner.using, table.schema, action.partition
    if any(p.start == action.start and p.end == action.end for p in state.ranged):
        return False  # done by an earlier or concurrent run
    if state.overlaps(action.start, action.end):
        raise MaintenanceError(f"a partition now overlaps [{action.start:%Y-%m-%d}, "
                               f"{action.end:%Y-%m-%d})")
    clash = _clash(using, schema, table.table, name, catalog.relation(using, schema, name))
    if clash:
        fresh = catalog.read_table(using, schema, table.table, table.column)
        if fresh and any(p.start == action.start and p.end == action.end for p in fresh.ranged):
            return False  # a concurrent run attached it since our read
        raise MaintenanceError(clash)
    staged = catalog.relation(using, schema, name) is not None
    default = state.default.name if state.default else None
    referenced = catalog.referenced_tables(using, schema, table.table)
    quiet = [*referenced, sql.qualified(schema, table.table)]
    if default:
        quiet.append(sql.qualified(schema, default))
    captured = staged and default is not None and catalog.has_trigger(
        using, schema, default, sql.capture_name(name)
    )
    if default is not None and not captured:
        with connections[using].cursor() as cursor:
            rows = _count_in_default(cursor, schema, default, table.column, action)
    else:
        rows = 0
    steps: list[Step]
    if not captured and rows == 0:
        steps = create_steps(
            schema, table.table, name, table.column, action.start, action.end, default,
            referenced, [], [], runner.settings.drain_batch_size, drain=False, staged=staged,
            row_security=catalog.row_security(using, schema, table.table),
            carried=catalog.carried(using, schema, table.table, state, action.start),
        )
        statements: list[Any] = [_guard(schema, name, staged), *steps[0].statements]
        if default:
            def no_stragglers(cursor: Any) -> None:
                if _count_in_default(cursor, schema, default, table.column, action):
                    raise _Straggler

            # Right after the locks: a row that reached the default since the count above.
            statements.insert(len(statements) - 2, no_stragglers)
        try:
            runner.transaction(schema, table.table, statements, quiet)
            runner.ran(table, steps[0].name, name)
            return True
        except _Straggler:
            staged = catalog.relation(using, schema, name) is not None
    assert default is not None
    steps = create_steps(
        schema, table.table, name, table.column, action.start, action.end, default, referenced,
        catalog.primary_key_columns(using, schema, table.table),
        catalog.columns(using, schema, table.table),
        runner.settings.drain_batch_size, drain=True, staged=staged, captured=captured,
        foreign_keys=catalog.foreign_key_definitions(using, schema, table.table),
        row_security=catalog.row_security(using, schema, table.table),
        carried=catalog.carried(using, schema, table.table, state, action.start),
    )
    for step in steps:
        guard = _guard(schema, name, staged)
        if step.name == "copy":
            beat = (
                [sql.recorder_heartbeat(schema, runner.recording, runner.token)]
                if runner.recording else []
            )
            while True:
                copied = runner.transaction(
                    schema, table.table, [guard, *beat, *step.statements]
                )
                runner.result.rows_moved += copied
                if copied == 0:
                    break
        elif step.name == "swap" and runner.pending is not None:
            runner.pending.append(action)  # swapped in with the table's other drains
            return True
        else:
            runner.transaction(schema, table.table, [guard, *step.statements], quiet)
        runner.ran(table, step.name, name)
        staged = True
    return True


def _retire(runner: Runner, table: TablePlan, action: Action) -> bool:
    """Retire one partition: its DETACH (or FINALIZE), then the drop, the foreign keys' drop
    or the move to the archive schema, each in its own transaction.

    One statement, before any transaction and holding nothing, reads what the steps are built
    from (the partition, whether the table has a default, the partition's foreign keys and
    dependents) and whether the table is quiet. The DETACH itself fails when the partition is
    no longer one; the drop locks the detached table, then compares its dependents with the
    plan's again.
    """
    using, schema = runner.using, table.schema
    with connections[using].cursor() as cursor:
        read = catalog.retired_partition(
            cursor, schema, table.table, action.partition, runner.young_ms()
        )
        if read is None:
            return False  # the table is gone, or the partition is no longer one of its
        partition, has_default, foreign_keys, dependents, busy = read
        if partition.is_default:
            return False
        concurrently = any(not step.atomic for step in action.steps) and detach_concurrently(
            using, runner.settings, has_default
        )
        steps = retention_steps(
            action.kind, schema, table.table, partition, concurrently, runner.settings,
            foreign_keys, action.cascade,
        )
        if action.kind == "drop":
            _refuse_unplanned(dependents, partition.name, action)
        parent = [sql.qualified(schema, table.table)]
        probed = not busy  # the read above found the parent quiet
        for step in steps:
            statements: list[Any] = list(step.statements)
            if step.name == "drop":
                # Locked, then compared again: a view made since the read above is not dropped.
                statements = [
                    _locked_without_unplanned(schema, partition.name, action), *statements
                ]
            quiet = step.name in ("detach", "finalize")
            if not step.atomic:
                if not probed:
                    runner.wait_for_quiet(parent, cursor=cursor)
                runner.bare(step.statements[0])
            else:
                runner.transaction(
                    schema, table.table, statements, parent if quiet else None,
                    probed=probed, cursor=cursor,
                )
            if quiet:
                probed = False  # a later step waits again
            runner.ran(table, step.name, partition.name)
    return True


def _locked_without_unplanned(schema: str, name: str, action: Action) -> Callable[[Any], None]:
    """Under the step's try-lock: lock the detached table, then compare its dependents with the
    plan's (one round trip); raises :class:`MaintenanceError` for any the plan did not list."""

    def check(cursor: Any) -> None:
        relation = f"{sql.text_literal(sql.qualified(schema, name))}::regclass"
        cursor.execute(
            f"{sql.lock_detached(schema, name)};\n{catalog.dependents_query(relation)}"
        )
        while cursor.description is None and cursor.nextset():
            pass  # past the LOCK's result, to the dependents'
        _refuse_unplanned([row[0] for row in cursor.fetchall()], name, action)

    return check


def _refuse_unplanned(dependents: list[str], name: str, action: Action) -> None:
    """A drop takes along only the dependents its plan listed (none without --cascade)."""
    unplanned = [d for d in dependents if d not in action.cascade]
    if not unplanned:
        return
    how = (
        "they appeared after the plan was made; plan again to see them"
        if action.cascade
        else "drop or change them, or drop them along with it: --cascade (PARTITIONS.DROP_CASCADE)"
    )
    raise MaintenanceError(f"{', '.join(unplanned)} depend(s) on {name}; not dropped ({how})")
