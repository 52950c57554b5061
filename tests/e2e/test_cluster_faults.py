"""A campaign to 20,000 users and interactive events over SASL_SSL on the 3-broker cluster while one broker
is SIGKILLed and restarted: partition leaders move, and nothing acknowledged is lost or sent twice.

The topics have replication factor 3 and min.insync.replicas 2, the producers acks=all: with one broker
gone every partition keeps a leader and two in-sync replicas, so producing and consuming go on. The victim
is the broker leading the most of the test's partitions; it comes back with its data and catches up.
"""
from __future__ import annotations

import threading
import time
from collections import Counter

import psycopg
import pytest
from confluent_kafka import KafkaError

from infra.kafka.producer import Producer
from infra.kafka.records import TRACE, OutRecord
from infra.tools.seed import seed_templates
from infra.topics import admin_client, ensure_topics, topic_specs
from producers.campaign import CampaignSpec, create, produce
from producers.campaign_source import Recipient
from schemas.codec import Codec
from tests.integration.test_cluster import cluster, cluster_sandbox, cluster_settings  # noqa: F401 - fixtures
from tests.support.worker import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

USERS = 20_000
WAVES = 4
RESETS = 120


def leaders(settings) -> dict[tuple[str, int], int]:
    md = admin_client(settings).list_topics(timeout=10)
    names = {s.name for s in topic_specs(settings)}
    return {(t, p): part.leader for t, meta in md.topics.items() if t in names for p, part in meta.partitions.items()}


def test_a_campaign_and_interactive_events_survive_a_broker_sigkill(cluster_sandbox, cluster, worker_factory, request):
    t_start = time.monotonic()
    settings = cluster_sandbox.settings.model_copy(update={"email_provider": "sendgrid"})
    ctl = cluster_sandbox.control
    ensure_topics(settings)
    tag = settings.app_id
    users = [f"{tag}-u{i:05d}" for i in range(USERS)]
    resets = [f"{tag}-r{i:03d}" for i in range(RESETS)]
    spec = CampaignSpec(f"{tag}-c", "weekly_digest", {"test": "cluster-faults"}, variables={"headline": "Still here"})
    with psycopg.connect(settings.dsn, autocommit=True) as db:
        seed_templates(db)
        db.execute("INSERT INTO users (id, email, locale, time_zone, first_name) "
                   "SELECT u, u || '@example.org', 'en', 'UTC', 'Ada' FROM unnest(%s::text[]) AS u", (users + resets,))
        create(db, spec, len(users))
    # the broker is killed mid-campaign, not mid-start: Faust's own start does not survive a broker crash
    # (the orchestrator restarts such a worker); what this test proves is the running pipeline's
    worker = worker_factory(settings).wait_ready()
    # and as the orchestrator would (deploy/k8s: a Deployment restarts its pods) a worker that dies is started again: librdkafka
    # 2.16 has been seen to abort a consumer while its coordinator was the killed broker (an assertion in
    # rd_kafka_enq_once_del_source_return); nothing acknowledged may be lost or sent twice across such a restart either
    restarts: list[int | None] = []
    watching = threading.Event()
    watching.set()

    def supervise() -> None:
        while watching.is_set():
            if not worker.alive():
                restarts.append(worker.proc.returncode if worker.proc else None)
                worker.start()
            time.sleep(0.5)

    supervisor = threading.Thread(target=supervise, daemon=True)
    supervisor.start()

    def stop_supervising() -> None:
        watching.clear()
        supervisor.join(10)

    # before worker_factory stops the worker, even when an assertion below fails: never a worker started after that
    request.addfinalizer(stop_supervising)

    # interactive events all along: one password reset every 50 ms, each counted once the broker acknowledged it
    codec, out = Codec(), Producer(settings)
    acked: set[str] = set()
    failed: list[KafkaError] = []
    stop = threading.Event()

    def interactive() -> None:
        for i, uid in enumerate(resets):
            if stop.is_set():
                break
            eid = f"{tag}-reset-{i}"
            ev = {"event_id": eid, "occurred_at": int(time.time() * 1000), "user_id": uid,
                  "reset_url": "https://example.test/r/1", "expires_in_minutes": 30}

            def report(err, _msg, uid=uid):
                (failed.append(err) if err else acked.add(uid))

            out.produce(OutRecord(settings.topic("events"), uid.encode(), codec.encode("PasswordResetRequested", ev),
                                  [(TRACE, eid.encode())]), on_delivery=report)
            out.poll(0.05)
        out.flush(90)

    sender = threading.Thread(target=interactive, daemon=True)
    sender.start()

    before = leaders(settings)
    victim_id = Counter(before.values()).most_common(1)[0][0]
    victim = next(n for n in cluster.nodes if n.node_id == victim_id)
    led = [tp for tp, leader in before.items() if leader == victim_id]
    produced = 0
    timings: dict[str, float] = {}
    per_wave = USERS // WAVES
    for k in range(WAVES):
        if k == 1:   # mid-campaign: the broker leading the most partitions crashes
            t_kill = time.monotonic()
            victim.kill()
        part = [Recipient(u) for u in users[k * per_wave:(k + 1) * per_wave]]
        produced += produce(settings, settings.topic("bulk"), spec, part, chunk_size=2_500).produced
        if k == 1:
            moved = wait_for(lambda: all(leaders(settings).get(tp) not in (victim_id, -1) for tp in led), 60,
                             interval=0.5, message="the victim's partitions led by the other brokers")
            assert moved
            timings["leaders moved after kill"] = time.monotonic() - t_kill
        if k == 2:   # and comes back with its data, while the rest is produced
            victim.start()
            wait_for(victim.answers, 90, interval=0.5, message="the restarted broker")
            timings["broker down"] = time.monotonic() - t_kill
    assert produced == USERS   # the campaign producer counts a chunk once acks=all came back
    sender.join(120)
    assert not sender.is_alive()
    assert not failed, f"interactive events not acknowledged: {failed[:3]}"
    assert acked == set(resets)

    expected = {f"{u}@example.org" for u in users} | {f"{u}@example.org" for u in acked}
    wait_for(lambda: expected <= {m["to"] for m in ctl.inbox("email")}, 240, interval=2,
             message="every acknowledged address's email at the sandbox")
    timings["all delivered"] = time.monotonic() - t_start
    time.sleep(3)   # a duplicate would arrive now
    got = Counter(m["to"] for m in ctl.inbox("email"))
    twice = {a: n for a, n in got.items() if n > 1}
    assert not twice, f"sent more than once: {sorted(twice.items())[:10]}"
    assert set(got) == expected

    def statuses() -> dict[str, int]:
        with psycopg.connect(settings.dsn, autocommit=True) as db:
            return dict(db.execute("SELECT status, count(*) FROM notifications WHERE user_id LIKE %s GROUP BY 1",
                                   (f"{tag}-%",)).fetchall())

    wait_for(lambda: statuses() == {"sent": len(expected)}, 120, interval=2, message=f"all sent, got {statuses()}")
    # the restarted broker is back in every in-sync replica set
    md_ok = wait_for(lambda: all(len(p.isrs) == 3 for t in (s.name for s in topic_specs(settings))
                                 for p in admin_client(settings).list_topics(timeout=10).topics[t].partitions.values()),
                     90, interval=1, message="the restarted broker back in sync")
    assert md_ok
    stop_supervising()
    timings["total"] = time.monotonic() - t_start
    print(f"cluster faults: {len(expected)} emails ({USERS} campaign, {len(acked)} interactive), broker {victim_id} "
          f"led {len(led)} partitions; " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
          + (f"; the worker died and was started again {len(restarts)} time(s), exit codes {restarts}" if restarts else ""))
