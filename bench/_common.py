"""What every benchmark shares: its command line, its services, its figures and its result file.

A benchmark is a script ``bench/<name>.py`` whose ``main()`` builds a :class:`Report`, adds one
:class:`Row` per compared measure (data_arch next to the tool a user would otherwise pick, same
run, same data) and writes it. ``python3 scripts/dev.py bench`` runs them one after another and
renders ``bench/results/README.md`` from the result files; each also runs on its own:

    python bench/<name>.py [--quick] [--result PATH]

A missed target is reported, never raised: the exit status says whether the benchmark ran.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import operator
import os
import platform
import statistics
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq}


def arguments(
    doc: str | None = None,
    argv: list[str] | None = None,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """``--quick`` and ``--result``; ``extra(parser)`` may add a benchmark's own options."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    parser.add_argument("--quick", action="store_true", help="the short run (under a minute)")
    parser.add_argument("--result", type=Path, help="where to write the JSON result")
    if extra is not None:
        extra(parser)
    return parser.parse_args(argv)


@contextmanager
def services(**kwargs) -> Iterator:
    """Throwaway PostgreSQL primary + streaming replica + Redis (or the servers named by
    ``DATABASE_URL`` / ``REPLICA_URL`` / ``REDIS_URL``), exported to ``os.environ``."""
    from harness.services import start_services

    with start_services(**kwargs) as started:
        os.environ.update(started.environ())
        yield started


def django_setup(settings_module: str = "tests.settings") -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    import django

    django.setup()
    _postgres_version()  # remembered for the result file, written after the servers stop


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50 / p99 / max of durations in seconds, as milliseconds."""
    if not seconds:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0, "count": 0}
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "p50": round(statistics.median(ordered) * 1000, 3),
        "p99": round(p99 * 1000, 3),
        "max": round(ordered[-1] * 1000, 3),
        "count": len(ordered),
    }


@dataclass
class Row:
    """One compared measure. ``ratio`` is data_arch's value over the alternative's; ``target``
    is a condition on that ratio, e.g. ``("<=", 0.1)`` for "at least 10 x faster"."""

    measure: str
    unit: str
    data_arch: float | None
    alternative: str
    alternative_value: float | None
    target: tuple[str, float] | None = None
    target_text: str = ""
    note: str = ""
    ratio: float | None = field(default=None)
    met: bool | None = field(default=None)

    def __post_init__(self) -> None:
        if self.ratio is None and self.data_arch is not None and self.alternative_value:
            self.ratio = round(self.data_arch / self.alternative_value, 4)
        if self.target and self.ratio is not None:
            op, value = self.target
            self.met = bool(_OPS[op](self.ratio, value))


@dataclass
class Report:
    name: str
    title: str
    quick: bool
    rows: list[Row] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def add(self, *args, **kwargs) -> Row:
        row = Row(*args, **kwargs)
        self.rows.append(row)
        return row

    def skip(self, what: str, reason: str) -> None:
        """A comparison that could not run here, and why (shown in the table)."""
        self.skipped.append(f"{what}: {reason}")

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "title": self.title,
            "quick": self.quick,
            "command": f"python3 scripts/dev.py bench {'--quick ' if self.quick else ''}{self.name}",
            "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "rows": [asdict(row) for row in self.rows],
            "skipped": self.skipped,
            "details": self.details,
        }

    def write(self, path: Path | None = None) -> Path:
        path = path or RESULTS / f"{self.name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        print(render_rows(self.to_dict()))
        return path


def machine() -> dict:
    info = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.machine()}",
    }
    try:
        info["load_1min"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    version = _postgres_version()
    if version:
        info["postgres"] = version
    return info


_SERVER: dict[str, str] = {}


def _postgres_version() -> str | None:
    """The server's version, read once (Django may not be set up: the version is optional)."""
    if "version" not in _SERVER:
        with contextlib.suppress(Exception):
            from django.db import connection

            with connection.cursor() as cursor:
                cursor.execute("SHOW server_version")
                _SERVER["version"] = cursor.fetchone()[0].split()[0]
    return _SERVER.get("version")


def _figure(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    if 0 < ratio < 1:
        return f"{ratio:.3g} × ({1 / ratio:.3g} × less)"
    return f"{ratio:.3g} ×"


def render_rows(result: dict, with_header: bool = True) -> str:
    lines = []
    if with_header:
        lines += [
            "| Benchmark | Measure | data_arch | Alternative | Ratio | Target | Met |",
            "|---|---|---|---|---|---|---|",
        ]
    for row in result["rows"]:
        met = {True: "yes", False: "**no**", None: "-"}[row["met"]]
        note = f" — {row['note']}" if row.get("note") else ""
        lines.append(
            f"| {result['name']} | {row['measure']}{note} | {_figure(row['data_arch'])} {row['unit']} "
            f"| {row['alternative']}: {_figure(row['alternative_value'])} {row['unit']} "
            f"| {_ratio(row['ratio'])} | {row['target_text'] or '-'} | {met} |"
        )
    for skipped in result.get("skipped", []):
        lines.append(f"| {result['name']} | not measured: {skipped} | | | | | |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- shared by the
# partition benchmarks: a throwaway events model, plain psycopg connections, WAL and sizes.


def event_model(name: str, table: str, *, partitioned: bool = True, default: bool = True,
                app_label: str = "data_arch", retain: int | None = None):
    """A model ``(id, at, kind, payload)`` with an index on ``at``, monthly-partitioned by
    ``at`` (data_arch's declaration) unless ``partitioned=False``. Create its table with
    :func:`create_table`; call only after :func:`django_setup`."""
    from django.db import models

    from data_arch.partitioning import MonthlyPartitioning

    meta = {"app_label": app_label, "db_table": table,
            "indexes": [models.Index(fields=["at"], name=f"{table[:24]}_at")]}
    if partitioned:
        meta["constraints"] = [MonthlyPartitioning(
            field="at", default=default, retain=retain, mode="drop", name=f"{table[:24]}_pk")]
    return type(name, (models.Model,), {
        "__module__": __name__,
        "at": models.DateTimeField(),
        "kind": models.CharField(max_length=16, default="view"),
        "payload": models.TextField(default=""),
        "Meta": type("Meta", (), meta),
    })


def create_table(model, using: str = "default") -> None:
    """(Re)create ``model``'s table through the schema editor (data_arch's partitioning hook
    makes a declared model's table a partitioned parent with its default partition)."""
    from django.db import connections

    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {connection.ops.quote_name(model._meta.db_table)} CASCADE")
    with connection.schema_editor() as editor:
        editor.create_model(model)


def drop_tables(*tables: str, using: str = "default") -> None:
    from django.db import connections

    connection = connections[using]
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"DROP TABLE IF EXISTS {connection.ops.quote_name(table)} CASCADE")


def connect(url: str | None = None, **kwargs):
    """A plain psycopg connection (autocommit) to the primary, outside Django."""
    import psycopg

    return psycopg.connect(url or os.environ["DATABASE_URL"], autocommit=True, **kwargs)


def wal_position(conn) -> int:
    """The primary's current WAL position, in bytes (for WAL written between two reads)."""
    return int(conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()[0])


def tree_size(conn, table: str) -> int:
    """Bytes on disk of ``table`` with its indexes, TOAST and every partition."""
    return int(conn.execute(
        "SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree(%s)",
        [table]).fetchone()[0] or 0)


def database_size(conn) -> int:
    return int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])
