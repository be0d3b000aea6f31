"""Writes deploy/grafana/data_arch.json, the Grafana dashboard of data_arch's series.

    python deploy/build_dashboard.py

One row per capability; every panel queries series data_arch exports (a test checks both).
"""

from __future__ import annotations

import json
from pathlib import Path

ROWS = {
    "Router and replicas": [
        ("Reads by destination and reason", "timeseries",
         "sum by (alias, reason) (rate(data_arch_router_reads_total[5m]))", "reqps"),
        ("Replica healthy", "stat", "min by (alias) (data_arch_replica_healthy)", "none"),
        ("Replica lag (seconds)", "timeseries", "max by (alias) (data_arch_replica_lag_seconds)",
         "s"),
        ("Replica lag (bytes)", "timeseries", "max by (alias) (data_arch_replica_lag_bytes)",
         "bytes"),
        ("Probes and retries", "timeseries",
         "sum by (alias, outcome) (rate(data_arch_replica_probes_total[5m])) or "
         "sum by (alias, kind) (rate(data_arch_replica_retries_total[5m]))", "ops"),
    ],
    "Cache": [
        ("Cache events", "timeseries",
         "sum by (alias, event) (rate(data_arch_cache_events_total[5m]))", "ops"),
        ("Hit ratio", "timeseries",
         "sum by (alias) (rate(data_arch_cache_events_total{event=~\"hit|l1_hit\"}[5m])) / "
         "clamp_min(sum by (alias) (rate(data_arch_cache_events_total"
         "{event=~\"hit|l1_hit|miss\"}[5m])), 0.001)", "percentunit"),
        ("Loader time p99", "timeseries",
         "histogram_quantile(0.99, sum by (le, name) "
         "(rate(data_arch_cache_load_seconds_bucket[5m])))", "s"),
    ],
    "Partitions": [
        ("Months covered ahead", "stat", "min by (table) (data_arch_partition_months_ahead)",
         "none"),
        ("Rows in default partitions", "timeseries",
         "sum by (table) (data_arch_default_partition_rows)", "short"),
        ("Partitions", "timeseries", "sum by (table) (data_arch_partitions)", "short"),
        ("Pending detaches", "stat", "sum by (table) (data_arch_partition_pending_detaches)",
         "none"),
    ],
    "Maintenance": [
        ("Since last success", "stat",
         "time() - max by (job) (data_arch_maintenance_last_success_timestamp_seconds)", "s"),
        ("Failures (24 h)", "stat", "max by (job) (data_arch_maintenance_failures_24h)", "none"),
    ],
}


def dashboard() -> dict:
    panels, panel_id, y = [], 1, 0
    for title, row in ROWS.items():
        panels.append({"id": panel_id, "type": "row", "title": title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        panel_id, y = panel_id + 1, y + 1
        width = 24 // len(row)
        for column, (name, kind, expr, unit) in enumerate(row):
            panels.append({
                "id": panel_id,
                "type": kind,
                "title": name,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": width, "x": column * width, "y": y},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {},
                "targets": [{"refId": "A", "expr": expr, "legendFormat": "__auto",
                             "datasource": {"type": "prometheus", "uid": "${datasource}"}}],
            })
            panel_id += 1
        y += 8
    return {
        "uid": "data-arch",
        "title": "data_arch",
        "tags": ["data_arch", "postgresql", "redis"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "type": "datasource",
                                 "query": "prometheus", "label": "Prometheus"}]},
        "annotations": {"list": []},
        "panels": panels,
    }


if __name__ == "__main__":
    target = Path(__file__).resolve().parent / "grafana" / "data_arch.json"
    target.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(target)
