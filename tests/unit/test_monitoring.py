"""The dashboard and the alert rules only use metrics that Herald's processes export."""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import generate_latest

from streams.metrics import Metrics

MONITORING = Path(__file__).resolve().parents[2] / "infra" / "monitoring"


def _exported_names() -> set[str]:
    m = Metrics()
    # touch labelled metrics so every series family shows up in the exposition
    m.events_in.labels("t").inc()
    m.stage_outcomes.labels("s", "o", "r").inc()
    m.deliveries.labels("email", "smtp", "sent").inc()
    m.provider_latency.labels("smtp").observe(0.1)
    m.retries.labels("1m").inc()
    m.dead_letters.labels("route", "no_route").inc()
    m.e2e_latency.labels("email", "interactive").observe(1)
    m.batch_seconds.labels("a").observe(0.1)
    m.batch_retries.labels("a", "E").inc()
    m.last_commit.labels("a").set(1)
    m.circuit_state.labels("smtp").set(0)
    m.consumer_lag.labels("t").set(0)
    text = generate_latest(m.registry).decode()
    return set(re.findall(r"^(herald_[a-z_]+)", text, flags=re.M))


def _referenced(exprs: list[str]) -> set[str]:
    return {name for e in exprs for name in re.findall(r"\b(herald_[a-z_]+)", e)}


def test_alert_rules_use_exported_metrics_and_have_runbooks():
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"][0]["rules"]
    assert rules and all(r["annotations"].get("runbook") for r in rules)
    missing = _referenced([r["expr"] for r in rules]) - _exported_names()
    assert not missing


def test_dashboard_uses_exported_metrics():
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    assert not (_referenced(exprs) - _exported_names())
