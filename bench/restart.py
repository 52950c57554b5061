"""How long a SIGKILLed worker that its orchestrator restarts at once takes to commit again, with and without
static group membership (HERALD_WORKER__INSTANCE_ID → group.instance.id).

Without an instance id the restarted worker is a new member: the group waits for the dead member's session to
expire (session.timeout.ms, 10 s) before it hands the partitions over. With one, the restarted worker replaces
its old self at once and keeps its partitions.

One worker runs ``deliver-email-bulk`` against the sandbox (SendGrid) while a trickle of deliveries arrives; the
time measured is from the restart (process spawned) to the first batch its group commits after the kill, and,
for scale, a fresh start's time to its first commit. Needs the local stack (``herald stack up``).

    python bench/restart.py              # 3 rounds each
    python bench/restart.py --rounds 1
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support builders

from confluent_kafka import Consumer, KafkaException, TopicPartition

from infra.kafka.config import consumer_config
from infra.kafka.producer import Producer
from infra.settings import Settings, WorkerConfig
from infra.tools.sandbox.server import running_sandbox, with_free_ports
from infra.topics import deliver_topic, ensure_topics
from schemas.codec import Codec
from tests.support.sandbox import delivery, delivery_record

AGENT = "deliver-email-bulk"


def committed_total(probe: Consumer, parts: list[TopicPartition]) -> int:
    for _ in range(50):
        try:
            return sum(max(tp.offset, 0) for tp in probe.committed(parts, timeout=5))
        except KafkaException:   # the coordinator moving (a rebalance, a busy broker): ask again
            time.sleep(0.1)
    raise TimeoutError("no committed offsets from the coordinator")


def spawn(settings: Settings, log: Path) -> subprocess.Popen:
    env = {**os.environ, **settings.to_env(), "NO_PROXY": "127.0.0.1,localhost"}
    return subprocess.Popen([sys.executable, "-m", "infra.tools.cli.main", "worker", "--agent", AGENT, "--loglevel", "info"],
                            env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


def until_commit_beyond(probe: Consumer, parts: list[TopicPartition], floor: int, timeout: float = 120) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if committed_total(probe, parts) > floor:
            return time.monotonic() - t0
        time.sleep(0.05)
    raise TimeoutError(f"no commit beyond {floor} within {timeout} s")


def trickle(settings: Settings, stop: threading.Event) -> None:
    codec, out = Codec(), Producer(settings)
    topic = deliver_topic(settings, "email", "bulk")
    while not stop.is_set():
        out.send_all_blocking([delivery_record(codec, topic, delivery("email", lane="bulk", category="marketing"))
                               for _ in range(30)])
        stop.wait(0.05)
    out.close()


def measure(base: Settings, static: bool, rounds: int, logs: Path) -> tuple[float, list[float]]:
    tag = f"rs{uuid.uuid4().hex[:8]}"
    s = base.model_copy(update={
        "topic_prefix": tag, "redis_prefix": tag, "app_id": tag, "partitions": 3, "small_partitions": 1, "metrics_port": 0,
        "email_provider": "sendgrid",
        "worker": WorkerConfig(instance_id=f"{tag}-w1" if static else None),
    })
    ensure_topics(s)
    topic = deliver_topic(s, "email", "bulk")
    parts = [TopicPartition(topic, p) for p in range(s.partitions)]
    probe = Consumer(consumer_config(s, f"{s.app_id}-{AGENT}"))   # reads committed offsets; never subscribes
    stop = threading.Event()
    feeder = threading.Thread(target=trickle, args=(s, stop), daemon=True)
    feeder.start()
    log = logs / f"restart-{'static' if static else 'dynamic'}.log"
    try:
        proc = spawn(s, log)
        fresh = until_commit_beyond(probe, parts, committed_total(probe, parts))
        times = []
        for _ in range(rounds):
            time.sleep(2)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            floor = committed_total(probe, parts)
            proc = spawn(s, log)   # an orchestrator restarts it at once
            times.append(until_commit_beyond(probe, parts, floor))
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    finally:
        stop.set()
        feeder.join(10)
        probe.close()
        _remove_topics(s)
    return fresh, times


def _remove_topics(s: Settings) -> None:
    """The run's topics off the shared broker."""
    from infra.topics import admin_client

    admin = admin_client(s)
    mine = [t for t in admin.list_topics(timeout=10).topics if t.startswith((s.topic_prefix + ".", s.app_id + "-"))]
    for f in (admin.delete_topics(mine, operation_timeout=15) if mine else {}).values():
        f.result(20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / "herald-bench-restart"
    logs.mkdir(parents=True, exist_ok=True)
    with running_sandbox(with_free_ports(Settings(metrics_port=0))) as sb:
        for static in (False, True):
            fresh, times = measure(sb.settings, static, a.rounds, logs)
            label = "with an instance id   " if static else "without an instance id"
            print(f"{label}: restart → first commit {statistics.median(times):5.1f} s median "
                  f"({', '.join(f'{t:.1f}' for t in times)}); a fresh start: {fresh:.1f} s", flush=True)
    print(f"worker logs: {logs}")


if __name__ == "__main__":
    main()
