"""On-call's alert rules and dashboard as code: promtool (Debian's ``prometheus`` package)
checks and unit-tests the rules; every SEMS metric they or the dashboard name is one SEMS
exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from core.metrics import Metrics

pytestmark = pytest.mark.integration

INFRA = Path(__file__).resolve().parents[2] / "infra"
RULES = INFRA / "alerts" / "sems-rules.yml"
RULE_TESTS = INFRA / "alerts" / "sems-rules.test.yml"
DASHBOARD = INFRA / "grafana" / "sems-oncall.json"
SEMS_METRIC = re.compile(r"\b(sems_[a-z0-9_]+)\b(?!\s*=)")  # not a label (sems_role="...")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        raise RuntimeError("promtool is missing: run infra/local/install-services.sh")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120,
                          check=False)


def exported_names() -> set[str]:
    """Every series name SEMS's registry can expose (counters' _total, histograms' _bucket)."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        suffixes = {"counter": ["_total", "_created"],
                    "histogram": ["_bucket", "_sum", "_count", "_created"]}
        names.update(family.name + s for s in suffixes.get(family.type, []))
    return names


def test_the_rules_are_valid() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_passes_its_unit_tests() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_alert_has_a_test_case() -> None:
    alerts = set(re.findall(r"^\s*- alert: (\w+)", RULES.read_text(), re.M))
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert alerts, "no alerts found"
    assert alerts - tested == set()


def test_rules_and_dashboard_name_only_metrics_sems_exports() -> None:
    exported = exported_names()
    named = set(SEMS_METRIC.findall(RULES.read_text())) | set(
        SEMS_METRIC.findall(DASHBOARD.read_text()))
    assert named - exported == set()


def test_the_dashboard_is_provisioning_ready() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "sems-oncall"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert target["expr"], panel["title"]
