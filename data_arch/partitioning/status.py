"""What maintenance sees: every partitioned table with its partitions, coverage and problems."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from data_arch.partitioning import catalog, sql
from data_arch.partitioning.declaration import partitioning_of
from data_arch.partitioning.months import MAX_MONTHS, add_months, month_start
from data_arch.partitioning.plan import resolve_models

__all__ = ["PartitionStatus", "TableStatus", "status"]


def _shown(moment: dt.datetime | None, printed: str | None, unbounded: str) -> str:
    """ISO for a month bound; PostgreSQL's own text for one datetime cannot hold (MINVALUE,
    ``-infinity``, ``infinity``, MAXVALUE, past year 9999, BC)."""
    if moment is not None and moment not in (catalog.FAR_PAST, catalog.FAR_FUTURE):
        return moment.isoformat()
    return printed or unbounded


@dataclasses.dataclass(frozen=True)
class PartitionStatus:
    name: str
    #: ISO timestamps; PostgreSQL's text for MINVALUE, MAXVALUE, '-infinity', 'infinity' and
    #: bounds outside years 1..9999; None for the default
    start: str | None
    end: str | None
    default: bool
    size_bytes: int
    estimated_rows: int
    detach_pending: bool = False


@dataclasses.dataclass(frozen=True)
class TableStatus:
    model: str
    schema: str
    table: str
    partitions: tuple[PartitionStatus, ...]
    months_ahead: int
    covers_current: bool
    default_rows: int
    problems: tuple[str, ...]
    index_drift: dict[str, list[str]]
    missing_indexes: tuple[str, ...]
    #: tables built for a month and not attached yet (an interrupted drain): name -> rows
    staging: dict[str, int]
    pending_detach: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["partitions"] = [dataclasses.asdict(p) for p in self.partitions]
        data["problems"] = list(self.problems)
        data["missing_indexes"] = list(self.missing_indexes)
        data["pending_detach"] = list(self.pending_detach)
        return data


def status(
    *, models_: list[str] | None = None, using: str = "default", now: dt.datetime | None = None
) -> list[TableStatus]:
    """Every partitioned table in the current schema: partitions, coverage, default rows, drift."""
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    schema = catalog.current_schema(using)
    report = []
    for model in resolve_models(models_):
        declared = partitioning_of(model)
        assert declared is not None
        column = model._meta.get_field(declared.field).column
        state = catalog.read_table(
            using, schema, model._meta.db_table, column, [i.name for i in model._meta.indexes]
        )
        if state is None:
            continue
        current = month_start(now)
        months_ahead = -1
        # Bounded: a MAXVALUE partition covers every month.
        while months_ahead < MAX_MONTHS:
            start = add_months(current, months_ahead + 1)
            if not state.covers(start, add_months(start, 1)):
                break
            months_ahead += 1
        staging = {
            s.name: s.rows for s in catalog.staging_tables(using, schema, state.table)
        }
        problems = list(state.gaps_and_overlaps())
        problems += [
            f"{name} lacks the row-level security of {state.table}: read directly it shows "
            "every row"
            for name in catalog.partitions_without_row_security(using, schema, state.table)
        ]
        problems += [
            f"staging table {name} ({rows} row(s)) is not attached: an interrupted drain; "
            "rerun apply to finish it"
            for name, rows in staging.items()
        ]
        if state.default is not None:
            problems += [
                f"trigger {trigger} on {state.default.name} records rows for a drain: unless "
                "an apply is running, it was left by a run that was killed; the next apply "
                f"drops it once it has been silent for {sql.RECORDER_SILENCE_SECONDS // 60} "
                "minutes"
                for trigger in catalog.recorders(using, schema, state.default.name)
            ]
        report.append(
            TableStatus(
                model=model._meta.label,
                schema=schema,
                table=state.table,
                partitions=tuple(
                    PartitionStatus(
                        p.name,
                        None if p.is_default
                        else _shown(p.start, p.bounds and p.bounds[0], "MINVALUE"),
                        None if p.is_default
                        else _shown(p.end, p.bounds and p.bounds[1], "MAXVALUE"),
                        p.is_default,
                        p.size_bytes,
                        p.estimated_rows,
                        p.detach_pending,
                    )
                    for p in (*state.ranged, *([state.default] if state.default else []))
                ),
                months_ahead=max(months_ahead, 0),
                covers_current=months_ahead >= 0,
                default_rows=state.default_rows,
                problems=tuple(problems),
                index_drift=state.index_drift,
                missing_indexes=tuple(state.missing_indexes),
                staging=staging,
                pending_detach=tuple(p.name for p in state.partitions if p.detach_pending),
            )
        )
    return report
