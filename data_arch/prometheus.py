"""data_arch's metrics on Prometheus (``prometheus_client`` is imported only here).

Installed by :func:`data_arch.wiring.install` when ``prometheus_client`` is importable (unless
``DATA_ARCH["METRICS"]["ENABLED"]`` is False), on the registry django-prometheus exposes:

* events, counted in every process: cache events and load times (:mod:`data_arch.caching`),
  router decisions by alias and reason, health probes by outcome, reads retried elsewhere;
* state, computed at scrape time by :class:`StateCollector` and cached for
  ``METRICS.CACHE_SECONDS``, so a scrape costs a handful of cheap queries however many tenant
  schemas there are: replica health and lag (this process's verdicts), partitions per table,
  months covered ahead (the fewest over all schemas), rows in default partitions (summed, each
  counted up to 100,001), pending detaches, index drift, maintenance runs (last success, last duration,
  failures in the last 24 hours, last duration), backfill progress (cursors by state, rows done
  and estimated, rate, ETA; one aggregate query); and data_arch's Celery task runs by outcome.

Labels are bounded: aliases, table names, job and backfill names, fixed reasons and states --
never a tenant or a key.
Under several processes (gunicorn, Celery) set ``PROMETHEUS_MULTIPROC_DIR`` and route
``/metrics`` to :func:`metrics_view`, which merges every process's counters and adds the state.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from data_arch.extras import require

logger = logging.getLogger("data_arch.metrics")

__all__ = ["StateCollector", "install", "metrics_view", "multiprocess_dir"]

_installed: dict[int, Any] = {}
_lock = threading.Lock()

#: Rows counted per default partition at most (the gauge says "at least this many" beyond it).
DEFAULT_ROWS_CAP = 100_000

_PARTITIONS_SQL = """
SELECT parent.relname, child.relname, pg_get_expr(child.relpartbound, child.oid),
       i.inhdetachpending, n.nspname,
       CASE WHEN child.relkind = 'r' AND pg_get_expr(child.relpartbound, child.oid) = 'DEFAULT'
            THEN pg_relation_size(child.oid) > 0 END
  FROM pg_inherits i
  JOIN pg_class parent ON parent.oid = i.inhparent AND parent.relkind = 'p'
  JOIN pg_namespace n ON n.oid = parent.relnamespace
  JOIN pg_class child ON child.oid = i.inhrelid
 WHERE parent.relname = ANY(%s)
"""


#: Partitions that lack a child of a partitioned index of their table (index drift), per table.
_INDEX_DRIFT_SQL = """
SELECT t.relname, sum(parts.n - attached.n)::bigint
  FROM pg_index i
  JOIN pg_class idx ON idx.oid = i.indexrelid AND idx.relkind = 'I'
  JOIN pg_class t ON t.oid = i.indrelid AND t.relkind = 'p'
  CROSS JOIN LATERAL (SELECT count(*) AS n FROM pg_inherits WHERE inhparent = t.oid) parts
  CROSS JOIN LATERAL (SELECT count(*) AS n FROM pg_inherits WHERE inhparent = idx.oid) attached
 WHERE t.relname = ANY(%s)
 GROUP BY t.relname
"""


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


def _client() -> Any:
    return require("prometheus_client", "data_arch.prometheus")


class StateCollector:
    """Gauges read from the database and this process's replica verdicts, cached."""

    def __init__(self, cache_seconds: float | None = None) -> None:
        #: None: ``METRICS.CACHE_SECONDS``, read at each scrape.
        self.cache_seconds = cache_seconds
        self._cached: list[Any] = []
        self._at = -1e9
        self._lock = threading.Lock()

    def describe(self) -> list[Any]:
        return []  # computed at collect time only (no query when registered)

    def collect(self) -> Iterator[Any]:
        from data_arch import conf

        ttl = self.cache_seconds
        if ttl is None:
            try:
                ttl = conf.metrics_settings().cache_seconds
            except conf.SettingError:
                ttl = 15.0
        with self._lock:
            if time.monotonic() - self._at >= ttl:
                try:
                    self._cached = list(self._compute())
                except Exception:  # noqa: BLE001 -- a scrape never fails because of us
                    logger.exception("data_arch metrics: computing state failed")
                    self._cached = []
                self._at = time.monotonic()
            yield from self._cached

    def _compute(self) -> Iterator[Any]:
        yield from self._replicas()
        yield from self._partitions()
        yield from self._maintenance()
        yield from self._backfills()

    def _replicas(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from data_arch import conf
        from data_arch.routing import health
        from data_arch.routing.sets import router_sets

        try:
            sets = router_sets()
        except conf.SettingError:
            return
        healthy = GaugeMetricFamily("data_arch_replica_healthy",
                                    "1 when the replica serves reads (this process's verdict).",
                                    labels=["alias"])
        lag_s = GaugeMetricFamily("data_arch_replica_lag_seconds",
                                  "Seconds the replica's replay is behind the primary.",
                                  labels=["alias"])
        lag_b = GaugeMetricFamily("data_arch_replica_lag_bytes",
                                  "Bytes of WAL the replica has not replayed.", labels=["alias"])
        for rset in sets:
            for alias in rset.replicas:
                verdict = health.health_of(alias, rset.primary)
                healthy.add_metric([alias], 1.0 if verdict.healthy else 0.0)
                if verdict.lag_seconds is not None:
                    lag_s.add_metric([alias], verdict.lag_seconds)
                if verdict.lag_bytes is not None:
                    lag_b.add_metric([alias], float(verdict.lag_bytes))
        yield from (healthy, lag_s, lag_b)

    def _partitions(self) -> Iterator[Any]:
        from django.db import connections
        from prometheus_client.core import GaugeMetricFamily

        from data_arch.partitioning import partitioned_models
        from data_arch.partitioning.catalog import parse_bounds
        from data_arch.partitioning.months import month_start

        tables = sorted({m._meta.db_table for m in partitioned_models()})
        if not tables:
            return
        with connections["default"].cursor() as cursor:
            cursor.execute(_PARTITIONS_SQL, [tables])
            rows = cursor.fetchall()
            # A table with a row has a page on disk; empty defaults (the normal case) are
            # not counted at all.
            defaults = [(schema, child) for table, child, bound, _, schema, used in rows
                        if bound == "DEFAULT" and used]
            counts: dict[tuple[str, str], int] = {}
            if defaults:
                quote = connections["default"].ops.quote_name
                union = " UNION ALL ".join(
                    f"SELECT %s, %s, count(*) FROM (SELECT 1 FROM {quote(s)}.{quote(c)} "
                    f"LIMIT {DEFAULT_ROWS_CAP + 1}) AS counted"
                    for s, c in defaults
                )
                cursor.execute(union, [v for pair in defaults for v in pair])
                counts = {(s, c): n for s, c, n in cursor.fetchall()}
            cursor.execute(_INDEX_DRIFT_SQL, [tables])
            drift_rows = dict(cursor.fetchall())
        current = month_start(dt.datetime.now(dt.UTC))
        per_table: dict[str, dict[str, Any]] = {
            t: {"partitions": 0, "default_rows": 0, "pending": 0, "ends": {}} for t in tables
        }
        for table, child, bound, pending, schema, _used in rows:
            entry = per_table[table]
            entry["ends"].setdefault(schema, None)
            entry["partitions"] += 1
            entry["pending"] += 1 if pending else 0
            is_default, _start, end = parse_bounds(bound)
            if is_default:
                entry["default_rows"] += counts.get((schema, child), 0)
                continue
            if end is None:
                end = dt.datetime.max.replace(tzinfo=dt.UTC)  # MAXVALUE: covered for good
            previous = entry["ends"].get(schema)
            entry["ends"][schema] = end if previous is None else max(previous, end)
        count = GaugeMetricFamily("data_arch_partitions",
                                  "Partitions of the table, summed over every schema.",
                                  labels=["table"])
        ahead = GaugeMetricFamily(
            "data_arch_partition_months_ahead",
            "Whole months after the current one covered by partitions (fewest over schemas; "
            "-1: the current month is not covered).",
            labels=["table"])
        default_rows = GaugeMetricFamily(
            "data_arch_default_partition_rows",
            f"Rows in the table's default partitions (each counted up to {DEFAULT_ROWS_CAP + 1}).",
            labels=["table"])
        pending = GaugeMetricFamily("data_arch_partition_pending_detaches",
                                    "Partitions left DETACH ... CONCURRENTLY pending.",
                                    labels=["table"])
        drift = GaugeMetricFamily(
            "data_arch_partition_index_drift",
            "Partition indexes missing: partitions lacking a child of one of the table's "
            "partitioned indexes, summed over every schema.", labels=["table"])
        for table, entry in per_table.items():
            drift.add_metric([table], float(drift_rows.get(table, 0)))
            count.add_metric([table], entry["partitions"])
            default_rows.add_metric([table], entry["default_rows"])
            pending.add_metric([table], entry["pending"])
            if entry["ends"]:
                ends = list(entry["ends"].values())
                if None in ends:  # a schema with only a default partition: nothing covered
                    ahead.add_metric([table], -1)
                    continue
                fewest = min(ends)
                months = (fewest.year - current.year) * 12 + fewest.month - current.month - 1
                ahead.add_metric([table], max(min(months, 1200), -1))
        yield from (count, ahead, default_rows, pending, drift)

    def _maintenance(self) -> Iterator[Any]:
        from django.db import DatabaseError, connections
        from django.db.models import Count, Max, Q
        from django.utils import timezone
        from prometheus_client.core import GaugeMetricFamily

        from data_arch.models import MaintenanceRun

        since = timezone.now() - dt.timedelta(hours=24)
        try:
            rows = list(
                MaintenanceRun.objects.using("default").values("job").annotate(
                    last_ok=Max("finished_at", filter=Q(outcome="ok")),
                    failures=Count("id", filter=Q(outcome="failed", started_at__gte=since)),
                )
            )
            durations = {
                job: (finished - started).total_seconds()
                for job, started, finished in MaintenanceRun.objects.using("default")
                .filter(outcome="ok").order_by("job", "-finished_at").distinct("job")
                .values_list("job", "started_at", "finished_at")
            }
        except DatabaseError:
            connections["default"].close()
            return  # not migrated yet
        last = GaugeMetricFamily("data_arch_maintenance_last_success_timestamp_seconds",
                                 "When the job last finished successfully (any tenant).",
                                 labels=["job"])
        failures = GaugeMetricFamily("data_arch_maintenance_failures_24h",
                                     "Failed runs of the job in the last 24 hours.",
                                     labels=["job"])
        duration = GaugeMetricFamily("data_arch_maintenance_last_duration_seconds",
                                     "How long the job's last successful run took.",
                                     labels=["job"])
        for row in rows:
            if row["last_ok"] is not None:
                last.add_metric([row["job"]], row["last_ok"].timestamp())
            failures.add_metric([row["job"]], row["failures"])
        for job, seconds in durations.items():
            duration.add_metric([job], seconds)
        yield from (last, failures, duration)


    def _backfills(self) -> Iterator[Any]:
        """Backfill progress per backfill (summed over its tenants and partitions): one
        aggregate query of the cursors."""
        from django.db import DatabaseError, connections
        from django.db.models import Count, Sum
        from prometheus_client.core import GaugeMetricFamily

        from data_arch.models import BackfillCursor

        try:
            rows = list(
                BackfillCursor.objects.using("default").values("name", "state").annotate(
                    cursors=Count("id"), done=Sum("rows_done"), estimated=Sum("rows_estimated"),
                    seconds=Sum("seconds"),
                ).order_by("name", "state")
            )
        except DatabaseError:
            connections["default"].close()
            return  # not migrated yet
        cursors = GaugeMetricFamily("data_arch_backfill_cursors",
                                    "Cursors (tenant x partition) of the backfill by state.",
                                    labels=["backfill", "state"])
        done = GaugeMetricFamily("data_arch_backfill_rows_done",
                                 "Rows the backfill has processed.", labels=["backfill"])
        estimated = GaugeMetricFamily("data_arch_backfill_rows_estimated",
                                      "Rows the backfill was estimated to process.",
                                      labels=["backfill"])
        rate = GaugeMetricFamily("data_arch_backfill_rows_per_second",
                                 "Rows per second over the backfill's runs so far.",
                                 labels=["backfill"])
        eta = GaugeMetricFamily("data_arch_backfill_eta_seconds",
                                "Estimated seconds of running left (unfinished backfills).",
                                labels=["backfill"])
        totals: dict[str, dict[str, float]] = {}
        for row in rows:
            cursors.add_metric([row["name"], row["state"]], row["cursors"])
            total = totals.setdefault(row["name"], {"done": 0, "estimated": 0, "seconds": 0.0,
                                                    "left": 0})
            total["done"] += row["done"] or 0
            total["estimated"] += row["estimated"] or 0
            total["seconds"] += row["seconds"] or 0.0
            if row["state"] not in ("done", "cancelled"):
                total["left"] += max((row["estimated"] or 0) - (row["done"] or 0), 0)
        for name, total in totals.items():
            done.add_metric([name], total["done"])
            estimated.add_metric([name], total["estimated"])
            if total["seconds"] > 0 and total["done"] > 0:
                per_second = total["done"] / total["seconds"]
                rate.add_metric([name], per_second)
                eta.add_metric([name], total["left"] / per_second)
        yield from (cursors, done, estimated, rate, eta)

def _count_tasks(client: Any, registry: Any) -> None:
    """``data_arch_task_runs_total{task, outcome}`` for data_arch's own Celery tasks."""
    try:
        from celery import signals
    except ImportError:
        return
    runs = client.Counter("data_arch_task_runs_total",
                          "data_arch Celery task runs by outcome (success, failure, retry).",
                          ["task", "outcome"], registry=registry)

    def counter(outcome: str) -> Any:
        def receive(sender: Any = None, request: Any = None, **kwargs: Any) -> None:
            name = getattr(sender, "name", None) or getattr(request, "task", None) or ""
            if isinstance(name, str) and name.startswith("data_arch."):
                runs.labels(name, outcome).inc()

        return receive

    for outcome, signal in (("success", signals.task_success), ("failure", signals.task_failure),
                            ("retry", signals.task_retry)):
        signal.connect(counter(outcome), weak=False, dispatch_uid=f"data_arch.metrics.{outcome}")


def install(registry: Any = None) -> StateCollector:
    """Register data_arch's counters and its state collector in ``registry`` (default: the
    global one); idempotent per registry."""
    client = _client()
    from data_arch.caching import prometheus as cache_prometheus
    from data_arch.routing import metrics as router_metrics

    registry = registry if registry is not None else client.REGISTRY
    with _lock:
        if id(registry) in _installed:
            return _installed[id(registry)]
        cache_prometheus.install(registry)
        reads = client.Counter("data_arch_router_reads_total",
                               "Router decisions: where reads went (alias) and why (reason).",
                               ["alias", "reason"], registry=registry)
        probes = client.Counter("data_arch_replica_probes_total",
                                "Replica health probes by outcome.", ["alias", "outcome"],
                                registry=registry)
        retries = client.Counter("data_arch_replica_retries_total",
                                 "Reads retried elsewhere after a replica failed them.",
                                 ["alias", "kind"], registry=registry)

        def listener(event: str, alias: str, label: str) -> None:
            if event == "read":
                reads.labels(alias, label).inc()
            elif event == "probe":
                probes.labels(alias, label).inc()
            elif event == "retry":
                retries.labels(alias, label).inc()

        router_metrics.add_listener(listener)
        _count_tasks(client, registry)
        collector = StateCollector()
        if not multiprocess_dir():
            registry.register(collector)  # multiprocess: metrics_view adds it per scrape
        _installed[id(registry)] = collector
        return collector


def metrics_view(request: Any) -> Any:
    """``/metrics``: every process's counters (multiprocess mode) or this process's, plus the
    state gauges; use it in place of django-prometheus' view."""
    from django.http import HttpResponse

    client = _client()
    collector = install()
    if multiprocess_dir():
        from prometheus_client import multiprocess

        registry = client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(collector)
    else:
        registry = client.REGISTRY
    return HttpResponse(client.generate_latest(registry), content_type=client.CONTENT_TYPE_LATEST)
