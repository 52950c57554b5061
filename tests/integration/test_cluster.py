"""Herald on a real 3-broker cluster over SASL_SSL with SCRAM-SHA-512 (issue 13).

`make test` starts the cluster (`herald stack up --brokers 3 --security sasl_ssl`) beside the single node;
the fixtures read its connection from the stack's state file (``<home>/cluster/cluster.json``) and give each
test Settings pointing at it, with the test's own topic prefix and consumer groups (removed afterwards).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from infra.settings import Settings
from infra.tools.sandbox.server import RunningSandbox, free_port, running_sandbox, with_free_ports
from infra.tools.seed import seed_templates
from infra.tools.stack.cluster import KafkaCluster
from infra.topics import admin_client, describe, ensure_topics, topic_specs
from producers.sdk import Emitter
from tests.support.worker import wait_for

pytestmark = pytest.mark.integration

AGENTS = ["route", "deliver-email", "status"]


@pytest.fixture(scope="session")
def cluster(services: Settings) -> KafkaCluster:
    """The cluster `herald stack up --brokers 3 --security sasl_ssl` started; a failure (never a skip) when it is not."""
    c = KafkaCluster(Settings())
    state = c.state()
    if state is None or state.get("security") != "sasl_ssl" or c.brokers < 3 or not c.answers():
        pytest.fail("the 3-broker SASL_SSL cluster does not answer: "
                    "`herald stack up --brokers 3 --security sasl_ssl` (make test starts it)")
    return c


@pytest.fixture
def cluster_settings(settings: Settings, cluster: KafkaCluster) -> Iterator[Settings]:
    """The test's settings (prefixes, database) on the cluster's SASL_SSL listener; its topics deleted afterwards."""
    s = KafkaCluster(settings, cluster.brokers).client_settings("sasl_ssl")
    yield s
    remove_cluster_topics(s)


def remove_cluster_topics(s: Settings) -> None:
    try:
        admin = admin_client(s)
        mine = [t for t in admin.list_topics(timeout=10).topics
                if t.startswith((s.topic_prefix + ".", s.app_id + "-"))]
        if mine:
            for f in admin.delete_topics(mine, operation_timeout=15).values():
                f.result(20)
    except Exception as exc:  # noqa: BLE001 - clean-up must not turn a passing test red
        print(f"clean-up of {s.topic_prefix} on the cluster: {exc!r}")


@pytest.fixture
def cluster_sandbox(cluster_settings: Settings) -> Iterator[RunningSandbox]:
    with running_sandbox(with_free_ports(cluster_settings)) as sb:
        yield sb


def herald(settings: Settings, *args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env.update(settings.to_env())
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "infra.tools.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    return done, time.monotonic() - t0


def test_topics_are_created_with_rf_3_and_min_isr_2(cluster_settings: Settings):
    created = ensure_topics(cluster_settings)
    assert sorted(created) == sorted(s.name for s in topic_specs(cluster_settings))
    states = describe(cluster_settings, with_lag=False)
    assert {(s.name, s.replication_factor, s.min_insync_replicas) for s in states} == {
        (s.name, 3, 2) for s in topic_specs(cluster_settings)}
    # every partition has 3 replicas, all in sync, led by more than one broker
    md = admin_client(cluster_settings).list_topics(timeout=10)
    parts = [p for s in states for p in md.topics[s.name].partitions.values()]
    assert all(len(p.replicas) == 3 and len(p.isrs) == 3 for p in parts)
    assert len({p.leader for p in parts}) == 3


def test_order_placed_over_sasl_ssl_is_emailed_and_marked_sent(cluster_settings: Settings, cluster_sandbox, worker_factory):
    settings = cluster_sandbox.settings.model_copy(update={"email_provider": "smtp", "metrics_port": free_port()})
    assert settings.kafka.security_protocol == "SASL_SSL" and settings.kafka.sasl_mechanism == "SCRAM-SHA-512"
    ensure_topics(settings)
    uid = f"u-{uuid.uuid4().hex[:8]}"
    email = f"{uid}@example.org"
    with psycopg.connect(settings.dsn, autocommit=True) as db:
        seed_templates(db)
        db.execute("INSERT INTO users (id, email, locale, time_zone, first_name) VALUES (%s, %s, 'en', 'UTC', 'Ada')",
                   (uid, email))
    worker_factory(settings, agents=AGENTS)
    order = {"user_id": uid, "order_id": f"o-{uuid.uuid4().hex[:6]}", "currency": "EUR", "total_cents": 1495,
             "items": [{"sku": "MUG", "name": "Herald mug", "quantity": 1, "unit_price_cents": 1495}]}
    with Emitter(settings=settings) as sdk:
        event_id = sdk.emit("OrderPlaced", order, wait=True)

    mail = wait_for(lambda: cluster_sandbox.control.inbox("email", to=email), 120, interval=0.5,
                    message="the email in the SMTP sandbox")[0]
    assert order["order_id"] in mail["subject"] + mail["text"]

    def status() -> str | None:
        with psycopg.connect(settings.dsn, autocommit=True) as db:
            row = db.execute("SELECT status FROM notifications WHERE id = %s", (event_id,)).fetchone()
        return row[0] if row else None

    wait_for(lambda: status() == "sent", 60, interval=0.5, message="notification sent in PostgreSQL")
    # the topics the worker used are the durable ones Herald created, not ones a client declared with RF 1
    used = {settings.topic("events"), settings.topic("deliver.email"), settings.topic("status")}
    got = {s.name: (s.replication_factor, s.min_insync_replicas) for s in describe(settings, with_lag=False)}
    assert {t: got[t] for t in used} == dict.fromkeys(used, (3, 2))

    # herald topics list --json: every topic, and the route agent's group has read the events
    import json

    def events_lag():
        done, _ = herald(settings, "topics", "list", "--json")
        assert done.returncode == 0, done.stderr
        rows = {r["topic"]: r for r in map(json.loads, done.stdout.splitlines())}
        assert set(rows) == {s.name for s in topic_specs(settings)}
        return rows[settings.topic("events")]["lag"]

    lag = wait_for(lambda: (lag := events_lag()) and lag, 30, interval=1, message="a committed offset on events")
    assert lag == {settings.app_id: 0}   # the route is a Faust agent: the app's group


def test_a_wrong_password_is_one_line_naming_authentication_not_a_hang(cluster_settings: Settings, tmp_path):
    secret = tmp_path / "wrong.password"
    secret.write_text("not-the-password\n")
    wrong = cluster_settings.model_copy(update={"kafka": cluster_settings.kafka.model_copy(
        update={"sasl_password_file": secret})})
    done, took = herald(wrong, "topics", "list", timeout=30)
    assert done.returncode != 0
    assert took < 15, f"took {took:.1f}s"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "authentication" in lines[0].lower(), done.stderr
    assert "not-the-password" not in done.stderr + done.stdout


def test_topics_ensure_reports_a_topic_that_differs_from_the_settings(cluster_settings: Settings):
    ensure_topics(cluster_settings)
    more = cluster_settings.model_copy(update={"partitions": cluster_settings.partitions + 1})
    done, _ = herald(more, "topics", "ensure")
    assert done.returncode == 1
    differs = [line for line in done.stdout.splitlines() if line.startswith("differs:")]
    big = [s.name for s in topic_specs(more) if s.partitions == more.partitions]
    assert len(differs) == len(big) and all(any(name + ":" in line for line in differs) for name in big)
    again, _ = herald(cluster_settings, "topics", "ensure")
    assert again.returncode == 0 and "exist as the settings say" in again.stdout
