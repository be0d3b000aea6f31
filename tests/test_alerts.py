"""Alert rules: valid for promtool, each with a firing and a non-firing case, thresholds from
the settings, and the committed copy current."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import override_settings

from data_arch.alerts import render, rules

ROOT = Path(__file__).resolve().parent.parent

# alert -> (series that make it fire, labels of the alert, series that keep it quiet)
CASES = {
    "DataArchReplicaUnhealthy": (
        ['data_arch_replica_healthy{alias="replica"}', "0x20"], {"alias": "replica"},
        ['data_arch_replica_healthy{alias="replica"}', "1x20"]),
    "DataArchReplicaLagging": (
        ['data_arch_replica_lag_seconds{alias="replica"}', "7x20"], {"alias": "replica"},
        ['data_arch_replica_lag_seconds{alias="replica"}', "2x20"]),
    "DataArchPartitionsRunningOut": (
        ['data_arch_partition_months_ahead{table="events_event"}', "1x120"],
        {"table": "events_event"},
        ['data_arch_partition_months_ahead{table="events_event"}', "3x120"]),
    "DataArchCurrentMonthUncovered": (
        ['data_arch_partition_months_ahead{table="events_event"}', "-1x20"],
        {"table": "events_event"},
        ['data_arch_partition_months_ahead{table="events_event"}', "0x20"]),
    "DataArchRowsInDefaultPartition": (
        ['data_arch_default_partition_rows{table="events_event"}', "12x60"],
        {"table": "events_event"},
        ['data_arch_default_partition_rows{table="events_event"}', "0x60"]),
    "DataArchPendingDetach": (
        ['data_arch_partition_pending_detaches{table="events_event"}', "1x120"],
        {"table": "events_event"},
        ['data_arch_partition_pending_detaches{table="events_event"}', "0x120"]),
    # Last success at t=0 and never again: stale once 2 x 3600 s have passed.
    "DataArchMaintenanceStale": (
        ['data_arch_maintenance_last_success_timestamp_seconds{job="partitions"}', "0x200"],
        {"job": "partitions"},
        ['data_arch_maintenance_last_success_timestamp_seconds{job="partitions"}',
         "0+60x200"]),
    "DataArchMaintenanceNeverRan": (
        ['data_arch_maintenance_failures_24h{job="partitions"}', "0x200"], {"job": "partitions"},
        ['data_arch_maintenance_last_success_timestamp_seconds{job="partitions"}', "0+60x200"]),
    "DataArchMaintenanceFailing": (
        ['data_arch_maintenance_failures_24h{job="partitions"}', "2x20"], {"job": "partitions"},
        ['data_arch_maintenance_failures_24h{job="partitions"}', "0x20"]),
    "DataArchCacheErrors": (
        ['data_arch_cache_events_total{alias="default",name="f",event="error"}', "0+10x20",
         'data_arch_cache_events_total{alias="default",name="f",event="hit"}', "0+100x20"],
        {"alias": "default"},
        ['data_arch_cache_events_total{alias="default",name="f",event="error"}', "0x20",
         'data_arch_cache_events_total{alias="default",name="f",event="hit"}', "0+100x20"]),
}

EVAL_MINUTES = {"DataArchMaintenanceStale": 190, "DataArchMaintenanceNeverRan": 190,
                "DataArchPartitionsRunningOut": 110, "DataArchPendingDetach": 110,
                "DataArchRowsInDefaultPartition": 50}


@pytest.fixture(scope="module")
def promtool() -> str:
    from harness.tools import ToolMissing, promtool

    try:
        return promtool()
    except ToolMissing as exc:
        pytest.skip(str(exc))


def _series(pairs: list[str]) -> list[dict[str, str]]:
    return [{"series": pairs[i], "values": pairs[i + 1]} for i in range(0, len(pairs), 2)]


def _expand(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m[1], ""), template)


def _unit_tests(rules_file: Path) -> dict:
    tests = []
    for rule in rules():
        firing, labels, quiet = CASES[rule.alert]
        minutes = EVAL_MINUTES.get(rule.alert, 15)
        expected = {
            "exp_labels": {"severity": rule.severity, **labels},
            "exp_annotations": {"summary": _expand(rule.summary, labels),
                                "runbook": _expand(rule.runbook, labels)},
        }
        for series, alerts in ((firing, [expected]), (quiet, [])):
            tests.append({
                "interval": "1m",
                "input_series": _series(series),
                "alert_rule_test": [{"eval_time": f"{minutes}m", "alertname": rule.alert,
                                     "exp_alerts": alerts}],
            })
    return {"rule_files": [str(rules_file)], "evaluation_interval": "1m", "tests": tests}


def test_every_rule_has_cases():
    assert {r.alert for r in rules()} == set(CASES)


def test_promtool_checks_the_rules_and_every_case_passes(tmp_path, promtool):
    rules_file = tmp_path / "alerts.yml"
    rules_file.write_text(render())
    checked = subprocess.run([promtool, "check", "rules", str(rules_file)],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tests_file = tmp_path / "alerts_test.yml"
    tests_file.write_text(json.dumps(_unit_tests(rules_file), indent=1))  # JSON is YAML
    tested = subprocess.run([promtool, "test", "rules", str(tests_file)],
                            capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_thresholds_follow_the_settings():
    from django.conf import settings

    with override_settings(DATA_ARCH={**settings.DATA_ARCH,
                                      "ROUTER": {**settings.DATA_ARCH["ROUTER"],
                                                 "MAX_LAG_SECONDS": 30},
                                      "PARTITIONS": {"AHEAD": 6}}):
        by_name = {r.alert: r for r in rules()}
    assert by_name["DataArchReplicaLagging"].expr == "data_arch_replica_lag_seconds > 15"
    assert by_name["DataArchPartitionsRunningOut"].expr == "data_arch_partition_months_ahead < 6"


def test_the_committed_rules_are_current(capsys):
    call_command("data_arch_alerts")
    assert capsys.readouterr().out == (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()


def test_the_dashboard_queries_only_exported_series_and_is_current():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_dashboard",
                                                  ROOT / "deploy" / "build_dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = json.loads((ROOT / "deploy" / "grafana" / "data_arch.json").read_text())
    assert committed == module.dashboard()
    sources = [ROOT / "data_arch" / "prometheus.py", ROOT / "data_arch" / "caching" / "prometheus.py"]
    exported = {name for path in sources
                for name in re.findall(r'"(data_arch_[a-z0-9_]+)"', path.read_text())}
    ids, rows = set(), 0
    for panel in committed["panels"]:
        assert panel["id"] not in ids
        ids.add(panel["id"])
        if panel["type"] == "row":
            rows += 1
            continue
        assert panel["type"] in {"timeseries", "stat"}
        for target in panel["targets"]:
            for series in re.findall(r"data_arch_[a-z0-9_]+", target["expr"]):
                base = re.sub(r"_(bucket|count|sum|total)$", "", series)
                assert series in exported or base in exported, series
    assert rows == 4  # router, cache, partitions, maintenance


def test_docker_compose_monitoring_services_use_the_committed_files():
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name in ("prometheus", "grafana"):
        service = compose["services"][name]
        assert service["profiles"] == ["monitoring"]
        for volume in service["volumes"]:
            assert (ROOT / volume.split(":")[0]).exists(), volume
