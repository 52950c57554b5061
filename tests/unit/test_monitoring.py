"""The alert rules and the dashboard query what Herald's processes export, and the alerts fire when they should.

Every metric and label an expression uses must exist in the code's metric definitions (worker, scheduler, API);
`promtool test rules` runs infra/monitoring/alerts.test.yml, where each alert has a firing and a quiet case.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from producers.api.resources import ApiMetrics
from scheduler.metrics import SchedulerMetrics
from streams.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "infra" / "monitoring"
SCRAPE_LABELS = frozenset({"job", "instance"})   # added by Prometheus to every series it scrapes

# Metrics an alert needs that the code does not export yet (name, type, labels). Remove an entry once the
# metric exists: from then on its definition in the code is checked like every other.
PENDING: dict[str, tuple[str, frozenset[str]]] = {
    # the interactive-latency alert: seconds from when a delivery became due (occurred_at, its send_at or end of
    # quiet hours, its retry tier's due time) to provider acceptance; to be observed in streams/handlers/deliver.py
    "herald_delivery_latency_seconds": ("histogram", frozenset({"channel", "lane"})),
}


def _definitions() -> dict[str, frozenset[str]]:
    """Every sample name the processes expose → the labels it carries."""
    families: dict[str, tuple[str, frozenset[str]]] = dict(PENDING)
    for holder in (Metrics(), SchedulerMetrics(), ApiMetrics()):
        for m in vars(holder).values():
            if isinstance(m, MetricWrapperBase):
                families[m._name] = (m._type, frozenset(m._labelnames))
    samples: dict[str, frozenset[str]] = {}
    for name, (kind, labels) in families.items():
        # a metric's own label named like a scrape label is stored as exported_<label> (honor_labels: false)
        labels = frozenset(f"exported_{x}" if x in SCRAPE_LABELS else x for x in labels) | SCRAPE_LABELS
        if kind == "counter":
            samples[f"{name}_total"] = labels
        elif kind == "histogram":
            samples.update({f"{name}_bucket": labels | {"le"}, f"{name}_sum": labels, f"{name}_count": labels})
        else:
            samples[name] = labels
    return samples


_SELECTOR = re.compile(r"\b(herald_\w+)\s*(\{[^}]*\})?")
_MATCHER = re.compile(r'(\w+)\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"')
_GROUPING = re.compile(r"\b(?:by|on|without|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_LABEL_REPLACE = re.compile(r',\s*"(\w+)"\s*,\s*"[^"]*"\s*,\s*"(\w+)"\s*,\s*"(?:[^"\\]|\\.)*"\s*\)')


def problems(expr: str, defined: dict[str, frozenset[str]]) -> list[str]:
    """What in ``expr`` does not exist: unknown metrics, labels a metric does not have, groupings on no label."""
    out: list[str] = []
    available: set[str] = set()
    for name, matchers in _SELECTOR.findall(expr):
        if name not in defined:
            out.append(f"{name}: no such metric")
            continue
        available |= defined[name]
        for label in _MATCHER.findall(matchers):
            if label not in defined[name]:
                out.append(f"{name}: no label {label!r} (has {sorted(defined[name])})")
    for dst, src in _LABEL_REPLACE.findall(expr):
        if src not in available and src != dst:
            out.append(f"label_replace reads {src!r}, which no metric here has")
        available.add(dst)
    for group in _GROUPING.findall(expr):
        for label in (g.strip() for g in group.split(",") if g.strip()):
            if label not in available:
                out.append(f"by/on ({label}): no metric in the expression has it")
    return out


def _rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"] for r in g["rules"]]


def _dashboard() -> dict[str, Any]:
    return json.loads((MONITORING / "grafana-dashboard.json").read_text())


def _targets() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in _dashboard()["panels"] for t in p.get("targets", [])]


def test_the_checker_catches_unknown_metrics_and_labels():
    d = _definitions()
    assert problems('sum by (provider) (rate(herald_deliveries_total{outcome="sent"}[5m]))', d) == []
    assert problems("rate(herald_deliveries[5m])", d) == ["herald_deliveries: no such metric"]
    assert problems('herald_circuit_state{agent="x"}', d)[0].startswith("herald_circuit_state: no label 'agent'")
    assert problems("sum by (agent) (herald_circuit_state)", d) == ["by/on (agent): no metric in the expression has it"]
    assert problems('label_replace(herald_circuit_state, "agent", "$1", "provider", "(.+)") and on (agent) x', d) == []


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r["alert"])
def test_alert_rules_use_exported_metrics_and_labels_and_have_runbooks(rule: dict[str, Any]):
    assert rule["annotations"].get("runbook") and rule["annotations"].get("summary")
    assert rule["labels"]["severity"] in ("page", "warn")
    assert problems(rule["expr"], _definitions()) == []


def test_every_alert_has_a_promtool_test_that_fires_and_one_that_does_not():
    cases = [c for t in yaml.safe_load((MONITORING / "alerts.test.yml").read_text())["tests"] for c in t["alert_rule_test"]]
    for rule in _rules():
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c.get("exp_alerts") for c in mine), f"{rule['alert']}: no case where it fires"
        assert any(not c.get("exp_alerts") for c in mine), f"{rule['alert']}: no case where it stays quiet"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("promtool is missing: apt-get install -y prometheus (make test installs it)")
    pytest.skip("promtool is missing: apt-get install -y prometheus (make test installs it)")


def test_promtool_check_rules():
    done = subprocess.run([_promtool(), "check", "rules", "alerts.yml"], cwd=MONITORING, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_test_rules():
    done = subprocess.run([_promtool(), "test", "rules", "alerts.test.yml"], cwd=MONITORING, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_uses_exported_metrics_and_labels():
    targets = _targets()
    assert len(targets) >= 12
    d = _definitions()
    assert [(title, p) for title, e in targets for p in problems(e, d)] == []


def test_dashboard_has_job_and_instance_variables_used_in_every_query():
    names = {v["name"] for v in _dashboard()["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= names
    for title, expr in _targets():
        selectors = [m for _, m in _SELECTOR.findall(expr)]
        assert selectors, title
        for matchers in selectors:
            assert 'job=~"$job"' in matchers and 'instance=~"$instance"' in matchers, f"{title}: {expr}"


def test_dashboard_windows_follow_the_scrape_interval():
    for title, expr in _targets():
        windows = re.findall(r"\[([^\]]+)\]", expr)
        assert all(w == "$__rate_interval" for w in windows), f"{title}: {expr} (use [$__rate_interval])"


def test_dashboard_has_panels_for_the_api_and_the_scheduler():
    exprs = " ".join(e for _, e in _targets())
    assert "herald_api_requests_total" in exprs and "herald_api_request_seconds_bucket" in exprs
    assert "herald_scheduler_last_tick_timestamp" in exprs and "herald_scheduler_published_total" in exprs


def test_dashboard_queries_are_valid_promql(tmp_path: Path):
    """Grafana's variables substituted, each query must parse (promtool checks it as a recording rule)."""
    rules = [{"record": f"dashboard:query_{i}",
              "expr": e.replace("$__rate_interval", "5m").replace("$job", ".*").replace("$instance", ".*")}
             for i, (_, e) in enumerate(_targets())]
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([_promtool(), "check", "rules", "dashboard.yml"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def _deliver_outcomes() -> set[str]:
    """The outcome label values the deliver agent counts: its _count(...) calls and the stage's error classes."""
    agent = (ROOT / "streams" / "handlers" / "deliver.py").read_text()
    stage = (ROOT / "streams" / "stages" / "deliver.py").read_text()
    return set(re.findall(r'_count\("(\w+)"\)', agent)) | set(re.findall(r'return "(\w+)"', stage)) | set(
        re.findall(r'DeadLetterIt\("(\w+)"', stage))


def test_the_outcomes_the_alerts_name_are_counted_by_the_deliver_agent():
    known = _deliver_outcomes()
    assert {"sent", "retry", "duplicate", "already_sent", "handed_back", "permanent", "retries_exhausted"} <= known
    for rule in _rules():
        for values in re.findall(r'outcome\s*(?:=~|!~|=|!=)\s*"([^"]+)"', rule["expr"]):
            assert set(values.split("|")) <= known, f"{rule['alert']}: {sorted(set(values.split('|')) - known)}"
