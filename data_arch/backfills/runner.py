"""Running a backfill: keyset batches, each committed together with the cursor it advances.

One batch is one transaction on the table's database:

1. lock the cursor row (``SELECT ... FOR UPDATE``) and check it is still running and where this
   run left it (a pause, a cancel or a second runner is seen here);
2. select the next keys after the cursor (``key > position ORDER BY key LIMIT n``);
3. run the batch's SQL or callable on exactly those keys;
4. move the cursor to the last key and add the rows, then commit.

A crash anywhere before the commit rolls back the batch and the cursor together; after it, both
are durable. So a rerun starts right after the last committed batch and no batch is applied
twice. Every statement runs under ``lock_timeout`` and ``statement_timeout`` (``LOCK_TIMEOUT_MS``),
so a batch never makes other writers wait longer than that; a batch that hits either is rolled
back and retried with half the rows.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from django.db import OperationalError, connections, transaction
from django.utils import timezone

from data_arch.backfills import sql
from data_arch.backfills.models import BackfillCursor, State
from data_arch.backfills.registry import Backfill, BackfillError, get_backfill
from data_arch.backfills.throttle import Throttle

__all__ = [
    "BackfillFailed",
    "Batch",
    "Progress",
    "cancel",
    "pause",
    "resume",
    "run",
    "status",
]

logger = logging.getLogger("data_arch.backfills")

#: SQLSTATEs of a batch that waited too long: lock_timeout, and statement_timeout (query_canceled).
TIMEOUTS = ("55P03", "57014")


class BackfillFailed(BackfillError):
    """A batch raised: the run stopped at that batch, which is rolled back; fix it and rerun."""


@dataclasses.dataclass(frozen=True)
class Progress:
    name: str
    tenant: str
    partition: str
    state: str
    rows_done: int
    rows_estimated: int | None
    rate: float | None
    eta_seconds: float | None
    batches: int
    batch_size: int
    lock_timeouts: int
    throttled_seconds: float
    max_lag_bytes: int
    error: str

    @classmethod
    def of(cls, row: BackfillCursor) -> Progress:
        return cls(row.name, row.tenant, row.partition, row.state, row.rows_done,
                   row.rows_estimated, row.rate, row.eta_seconds, row.batches, row.batch_size,
                   row.lock_timeouts, row.throttled_seconds, row.max_lag_bytes, row.error)

    @property
    def percent(self) -> float | None:
        if not self.rows_estimated:
            return 100.0 if self.state == State.DONE else None
        return min(100.0, 100.0 * self.rows_done / self.rows_estimated)

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "percent": self.percent}


@dataclasses.dataclass
class Batch:
    """What a batch callable gets: the keys of its rows, and where they are."""

    backfill: Backfill
    keys: list[Any]
    #: The quoted table the keys were read from (a partition, for a partitioned table).
    table: str
    partition: str | None
    using: str
    #: A cursor on ``using``, inside the batch's transaction.
    cursor: Any

    @property
    def first(self) -> Any:
        return self.keys[0]

    @property
    def last(self) -> Any:
        return self.keys[-1]

    @property
    def queryset(self) -> Any:
        """The batch's rows as a QuerySet (queryset/model backfills only)."""
        base = self.backfill.queryset()
        if base is None:
            raise BackfillError(f"backfill {self.backfill.name!r} walks a table; use batch.keys")
        return base.using(self.using).filter(**{f"{self.backfill.key}__in": self.keys})


# --------------------------------------------------------------------------- targets


@dataclasses.dataclass(frozen=True)
class _Target:
    using: str
    schema: str
    table: str  # quoted, qualified
    partition: str  # '' when the table is not partitioned
    cast: str  # the key's SQL type
    relid: int


def _alias(backfill: Backfill) -> str:
    if backfill.using:
        return backfill.using
    queryset = backfill.queryset()
    if queryset is not None:
        from django.db import router

        return router.db_for_write(queryset.model) or "default"
    from data_arch import conf

    try:
        return conf.router_settings().primary
    except conf.SettingError:
        return "default"


def _schema(using: str) -> str:
    connection = connections[using]
    schema = getattr(connection, "schema_name", None)
    if schema:
        return schema
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        return cursor.fetchone()[0]


def targets(backfill: Backfill) -> list[_Target]:
    """Where the backfill runs (one target per partition of a partitioned table), after
    checking that its key is a unique, indexed column; BackfillError before any work if not."""
    using = _alias(backfill)
    schema = _schema(using)
    table = backfill.table_name()
    with connections[using].cursor() as cursor:
        cursor.execute(sql.KEY_INDEX, {"schema": schema, "table": table, "column": backfill.key})
        row = cursor.fetchone()
    where = f"backfill {backfill.name!r}: table {schema}.{table}"
    if row is None:
        raise BackfillError(f"{where} does not exist (database {using!r})")
    attnum, cast, partitioned, relid, indexes = row
    if attnum is None:
        raise BackfillError(f"{where} has no column {backfill.key!r} (the key= of the backfill)")
    fix = ("keyset batches need a unique, indexed key: the primary key, or a column with a "
           "UNIQUE index of its own")
    if not indexes:
        raise BackfillError(f"{where}: key column {backfill.key!r} is not indexed; {fix}")
    # On a partitioned table a unique index must include the partition key, so one led by the
    # key is accepted there (the key's values, e.g. from a sequence, are taken as unique).
    unique = any(is_unique == "true" and (partitioned or columns == "1")
                 for is_unique, columns in indexes)
    if not unique:
        raise BackfillError(f"{where}: key column {backfill.key!r} is not unique; {fix}")
    if not partitioned:
        return [_Target(using, schema, sql.qualified(schema, table), "", cast, relid)]
    from data_arch.partitioning.catalog import read_table

    state = read_table(using, schema, table, backfill.key)
    names = sorted(p.name for p in state.partitions) if state is not None else []
    out = []
    for name in names:
        with connections[using].cursor() as cursor:
            cursor.execute("SELECT %s::regclass::oid", [sql.qualified(schema, name)])
            (oid,) = cursor.fetchone()
        out.append(_Target(using, schema, sql.qualified(schema, name), name, cast, oid))
    return out


# --------------------------------------------------------------------------- keys


def _encode(value: Any) -> Any:
    return value if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _scoped(backfill: Backfill, target: _Target, after: Any, upper: Any) -> Any:
    """The backfill's QuerySet restricted to keys in (after, upper] and to the target partition."""
    queryset = backfill.queryset().using(target.using)
    field = queryset.model._meta.get_field(backfill.key)
    if after is not None:
        queryset = queryset.filter(**{f"{backfill.key}__gt": field.to_python(after)})
    if upper is not None:
        queryset = queryset.filter(**{f"{backfill.key}__lte": field.to_python(upper)})
    if target.partition:
        queryset = queryset.extra(where=["tableoid = %s"], params=[target.relid])
    return queryset


def _upper(backfill: Backfill, target: _Target) -> Any:
    """The largest key now: the backfill's last row."""
    from django.db.models import Max

    if backfill.queryset() is None:
        with connections[target.using].cursor() as cursor:
            cursor.execute(sql.max_key(target.table, backfill.key))
            value = cursor.fetchone()[0]
    else:
        value = _scoped(backfill, target, None, None).aggregate(upper=Max(backfill.key))["upper"]
    return None if value is None else _encode(value)


def _next_keys(backfill: Backfill, target: _Target, cursor: Any, after: Any, upper: Any,
               limit: int) -> list:
    if upper is None:
        return []
    if backfill.queryset() is None:
        cursor.execute(sql.next_keys(target.table, backfill.key, target.cast, after is None),
                       {"after": after, "upper": upper, "limit": limit})
        return [row[0] for row in cursor.fetchall()]
    queryset = _scoped(backfill, target, after, upper)
    return list(queryset.order_by(backfill.key).values_list(backfill.key, flat=True)[:limit])


def _estimate(backfill: Backfill, target: _Target, after: Any, upper: Any) -> int | None:
    if upper is None:
        return 0
    try:
        if backfill.queryset() is None:
            with connections[target.using].cursor() as cursor:
                cursor.execute(sql.estimate(target.table, backfill.key, target.cast, after is None),
                               {"after": after, "upper": upper})
                plan = cursor.fetchone()[0]
            plan = plan if isinstance(plan, list) else json.loads(plan)
        else:
            queryset = _scoped(backfill, target, after, upper)
            plan = json.loads(queryset.values_list(backfill.key).explain(format="json"))
        return int(plan[0]["Plan"]["Plan Rows"])
    except Exception:  # an estimate is a nicety, never a reason to stop
        logger.debug("no estimate for backfill %r", backfill.name, exc_info=True)
        return None


# --------------------------------------------------------------------------- running


def _sqlstate(exc: BaseException) -> str | None:
    cause = exc.__cause__ or exc
    return getattr(cause, "sqlstate", None) or getattr(getattr(cause, "diag", None), "sqlstate", None)


def _tenant_key() -> str:
    from data_arch.tenancy import current_tenant

    tenant = current_tenant()
    return tenant.key if tenant is not None else ""


def _claim(backfill: Backfill, target: _Target, tenant: str, restart: bool) -> BackfillCursor | None:
    """Lock and mark the cursor running; None when it is done already (and not restarted)."""
    manager = BackfillCursor.objects.using(target.using)
    with transaction.atomic(using=target.using):
        row, _ = manager.get_or_create(name=backfill.name, tenant=tenant, partition=target.partition)
        row = manager.select_for_update().get(pk=row.pk)
        label = _label(backfill.name, tenant, target.partition)
        if restart:
            row.position, row.rows_done, row.batches, row.seconds = None, 0, 0, 0.0
            row.throttled_seconds, row.lock_timeouts, row.max_lag_bytes = 0.0, 0, 0
            row.finished_at, row.upper = None, None
        elif row.state == State.DONE:
            return None
        elif row.state == State.PAUSED:
            raise BackfillError(f"backfill {label} is paused; resume it first "
                                f"(manage.py backfill resume {backfill.name})")
        elif row.state == State.CANCELLED:
            raise BackfillError(f"backfill {label} was cancelled; rerun it from the start with "
                                f"--restart (manage.py backfill run {backfill.name} --restart)")
        row.state, row.error = State.RUNNING, ""
        if row.position is None and row.rows_done == 0 and row.upper is None:
            row.upper = _upper(backfill, target)
        row.save()
    return row


def _label(name: str, tenant: str, partition: str) -> str:
    where = "/".join(part for part in (tenant, partition) if part)
    return repr(name) + (f" ({where})" if where else "")


def run(
    name: str,
    *,
    restart: bool = False,
    max_batches: int | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> list[Progress]:
    """Run the backfill ``name`` for the current tenant (or shared data), to the end, until it is
    paused or cancelled, or for ``max_batches`` batches per target. Returns each target's
    progress; raises :class:`BackfillFailed` when a batch raised (the cursor stays before it)."""
    from data_arch import conf

    backfill = get_backfill(name)
    tenant = _tenant_key()
    if backfill.per_tenant and not tenant:
        raise BackfillError(f"backfill {name!r} runs per tenant: run it in a tenant's context "
                            "(manage.py backfill run NAME --tenant SCHEMA or --all-tenants)")
    if max_batches is not None and max_batches < 1:
        raise BackfillError(f"max_batches must be >= 1, got {max_batches}")
    settings = conf.backfill_settings()
    results = []
    for target in targets(backfill):  # validated before any cursor is touched
        row = _claim(backfill, target, tenant, restart)
        if row is None:
            results.append(Progress.of(BackfillCursor.objects.using(target.using).get(
                name=name, tenant=tenant, partition=target.partition)))
            continue
        results.append(_run_target(backfill, target, row, settings, max_batches, on_progress))
        if results[-1].state in (State.PAUSED, State.CANCELLED):
            break
    return results


def _run_target(
    backfill: Backfill,
    target: _Target,
    row: BackfillCursor,
    settings: Any,
    max_batches: int | None,
    on_progress: Callable[[Progress], None] | None,
) -> Progress:
    using = target.using
    manager = BackfillCursor.objects.using(using)
    checked = [time.monotonic()]

    def stopped() -> bool:  # polled while waiting for replicas, at most once a second
        if time.monotonic() - checked[0] < 1.0:
            return False
        checked[0] = time.monotonic()
        return manager.filter(pk=row.pk).values_list("state", flat=True).first() != State.RUNNING

    def position() -> int:
        with connections[using].cursor() as cursor:
            cursor.execute(sql.WAL_POSITION)
            return int(cursor.fetchone()[0])

    throttle = Throttle(using, settings, cancelled=stopped, position=position)
    vacuum_checked = [0.0, False]

    def vacuuming() -> bool:  # at most once a second
        if time.monotonic() - vacuum_checked[0] >= 1.0:
            vacuum_checked[:] = [time.monotonic(), _vacuuming(using, target.relid)]
        return bool(vacuum_checked[1])

    throttle.size = max(settings.min_batch_size,
                        min(backfill.batch_size or row.batch_size or settings.batch_size,
                            settings.max_batch_size))
    base = {"seconds": row.seconds, "throttled": row.throttled_seconds,
            "timeouts": row.lock_timeouts, "lag": row.max_lag_bytes}
    started = time.monotonic()
    position = row.position
    upper = row.upper
    remaining = _estimate(backfill, target, position, upper)
    if remaining is not None:
        manager.filter(pk=row.pk).update(rows_estimated=row.rows_done + remaining)
    timeouts_in_a_row = 0
    batches = 0
    timeout = f"{settings.lock_timeout_ms}ms"
    while True:
        if max_batches is not None and batches >= max_batches:
            manager.filter(pk=row.pk, state=State.RUNNING).update(state=State.PENDING)
            break
        size = throttle.next_size()
        if size is None:
            break  # paused or cancelled while waiting for replicas
        keys: list[Any] = []
        try:
            with transaction.atomic(using=using), connections[using].cursor() as cursor:
                cursor.execute(sql.SET_TIMEOUTS, {"lock": timeout, "statement": timeout})
                current = manager.select_for_update().get(pk=row.pk)
                if current.state != State.RUNNING:
                    break
                if current.position != position:  # another runner went on meanwhile
                    position = current.position
                    continue
                cursor.execute(sql.WAL_POSITION)
                (wal_before,) = cursor.fetchone()
                began = time.monotonic()
                keys = _next_keys(backfill, target, cursor, position, upper, size)
                if not keys:
                    current.state, current.finished_at = State.DONE, timezone.now()
                    _account(current, started, base, throttle)
                    current.save()
                    break
                batch = Batch(backfill, keys, target.table, target.partition or None, using, cursor)
                _apply(backfill, batch)
                cursor.execute(sql.WAL_POSITION)
                (wal_after,) = cursor.fetchone()
                current.position = _encode(keys[-1])
                current.rows_done += len(keys)
                current.batches += 1
                current.batch_size = size
                _account(current, started, base, throttle)
                current.save()
                elapsed = time.monotonic() - began
        except OperationalError as exc:
            if _sqlstate(exc) not in TIMEOUTS:
                _fail(backfill, target, row, keys, position, exc)
            throttle.timed_out()
            timeouts_in_a_row += 1
            if timeouts_in_a_row > settings.lock_retries:
                _fail(backfill, target, row, keys, position, exc,
                      f"{timeouts_in_a_row} lock/statement timeouts in a row; ")
            logger.info("backfill %r: batch timed out (%s); retrying with %d rows",
                        backfill.name, _sqlstate(exc), throttle.size)
            time.sleep(min(0.05 * 2 ** timeouts_in_a_row, 1.0) * (0.5 + random.random()))
            continue
        except Exception as exc:
            _fail(backfill, target, row, keys, position, exc)
        timeouts_in_a_row = 0
        batches += 1
        position = current.position
        throttle.batch_done(len(keys), elapsed, int(wal_after - wal_before))
        if on_progress is not None:
            on_progress(Progress.of(current))
        throttle.between_batches(vacuuming())
    final = manager.get(pk=row.pk)
    if final.state == State.RUNNING:  # stopped while waiting: keep the accounting
        _account(final, started, base, throttle)
        final.save(update_fields=["seconds", "throttled_seconds", "lock_timeouts", "max_lag_bytes"])
    progress = Progress.of(final)
    if on_progress is not None:
        on_progress(progress)
    return progress


def _account(row: BackfillCursor, started: float, base: dict, throttle: Throttle) -> None:
    row.seconds = base["seconds"] + (time.monotonic() - started)
    row.throttled_seconds = base["throttled"] + throttle.throttled_seconds
    row.lock_timeouts = base["timeouts"] + throttle.lock_timeouts
    row.max_lag_bytes = max(base["lag"], throttle.max_lag_bytes)


def _apply(backfill: Backfill, batch: Batch) -> None:
    if callable(backfill.batch):
        backfill.batch(batch)
        return
    statement = backfill.batch.replace("{table}", batch.table)
    batch.cursor.execute(statement, {"first": batch.first, "last": batch.last, "keys": batch.keys})


def _vacuuming(using: str, relid: int) -> bool:
    with connections[using].cursor() as cursor:
        cursor.execute(sql.VACUUMING, [relid])
        return bool(cursor.fetchone()[0])


def _fail(backfill: Backfill, target: _Target, row: BackfillCursor, keys: list, position: Any,
          exc: BaseException, why: str = "") -> None:
    """Record why the run stopped (the batch is rolled back already) and raise BackfillFailed."""
    if keys:
        where = f"batch of {len(keys)} rows {backfill.key} {keys[0]!r}..{keys[-1]!r}"
    else:
        where = f"batch after {backfill.key} {position!r}"
    message = (f"backfill {_label(backfill.name, row.tenant, target.partition)} stopped at the "
               f"{where}: {why}{type(exc).__name__}: {exc}".strip())
    BackfillCursor.objects.using(target.using).filter(pk=row.pk).update(
        state=State.FAILED, error=message[:4000])
    logger.error("%s", message)
    raise BackfillFailed(message) from exc


# --------------------------------------------------------------------------- control


def _rows(name: str, tenant: str | None) -> Any:
    backfill = get_backfill(name)
    rows = BackfillCursor.objects.using(_alias(backfill)).filter(name=name)
    return rows if tenant is None else rows.filter(tenant=tenant)


def _set_state(name: str, tenant: str | None, to: str, from_states: tuple[str, ...]) -> int:
    rows = _rows(name, tenant)
    if not rows.exists():
        raise BackfillError(f"backfill {name!r} has not started{' for ' + tenant if tenant else ''}"
                            f"; nothing to {'pause' if to == State.PAUSED else 'change'}")
    return rows.filter(state__in=from_states).update(state=to, updated_at=timezone.now())


def pause(name: str, tenant: str | None = None) -> int:
    """Pause ``name`` (a running batch finishes first); returns the cursors paused."""
    return _set_state(name, tenant, State.PAUSED, (State.PENDING, State.RUNNING, State.FAILED))


def resume(name: str, tenant: str | None = None) -> int:
    """Make a paused ``name`` runnable again (``run`` then continues from its cursor)."""
    return _set_state(name, tenant, State.PENDING, (State.PAUSED,))


def cancel(name: str, tenant: str | None = None) -> int:
    """Stop ``name`` for good: ``run`` refuses it until ``--restart``."""
    return _set_state(name, tenant, State.CANCELLED,
                      (State.PENDING, State.RUNNING, State.PAUSED, State.FAILED))


def status(name: str | None = None, tenant: str | None = None) -> list[Progress]:
    """The progress of every cursor of ``name`` (of every registered backfill when None)."""
    from data_arch.backfills.registry import registered_backfills

    names = [name] if name is not None else list(registered_backfills())
    out = []
    for item in names:
        rows = list(_rows(item, tenant).order_by("tenant", "partition"))
        if not rows:
            out.append(Progress(item, tenant or "", "", "not started", 0, None, None, None, 0, 0,
                                0, 0.0, 0, ""))
        out.extend(Progress.of(r) for r in rows)
    return out

