"""A million-user email campaign end to end, on this machine, in one run.

users imported (COPY) → campaign producer → herald.bulk → route-bulk → deliver-email-bulk
(SendGrid batching, into the sandbox) → status → PostgreSQL. Prints:

* the producer's events/s (``herald campaign send`` code path, ``--procs`` processes);
* the time from the first produced message until the sandbox received the last email,
  and until the last ``sent`` status is in PostgreSQL; end-to-end notifications/s;
* CPU per notification: the workers' process CPU (utime+stime from /proc), and the
  sandbox's separately (it stands in for SendGrid's servers);
* the raw Kafka pass-through rate (confluent-kafka consume → produce of the same
  records) measured in the same run, after the pipeline finished.

Everything runs in a private database, topic prefix, Redis prefix and consumer
group, all removed at the end. Targets: producer ≥ 200k events/s; the million
delivered in ≤ 60 s.

    python bench/campaign.py --users 20000        # while developing
    python bench/campaign.py                      # the million (only on an idle machine)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from confluent_kafka.admin import AdminClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rawkafka import pass_through

from infra.db import migrate
from infra.settings import Settings
from infra.tools.children import spawn as start, stop
from infra.tools.sandbox.server import free_port
from infra.tools.seed import seed_templates
from infra.topics import ensure_topics, topic_specs
from producers.campaign import CampaignSpec, create, produce, set_progress
from producers.campaign_source import Recipient
from producers.users_import import import_users, rows_of

TICK = os.sysconf("SC_CLK_TCK")
AGENTS = ["route-bulk", "deliver-email-bulk", "status"]


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    except (OSError, IndexError, ValueError):
        return 0.0


def infra_pids() -> dict[str, list[int]]:
    """The shared services' processes (Kafka broker, PostgreSQL backends, Redis), by name."""
    out: dict[str, list[int]] = {"kafka": [], "postgresql": [], "redis": []}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "kafka.Kafka" in cmd:
            out["kafka"].append(int(d.name))
        elif cmd.startswith("postgres") or "/bin/postgres" in cmd:
            out["postgresql"].append(int(d.name))
        elif cmd.startswith("redis-server"):
            out["redis"].append(int(d.name))
    return out


def infra_cpu() -> dict[str, float]:
    """CPU seconds so far of the services (PostgreSQL backends that ended are not counted: a lower bound)."""
    return {name: sum(cpu_seconds(p) for p in pids) for name, pids in infra_pids().items()}


def env_for(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    from tests.support.env import settings_env

    return {**os.environ, **settings_env(settings), "NO_PROXY": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1", **(extra or {})}


def peak_rss_mb(pid: int, field: str = "VmHWM") -> float:
    """VmHWM: the process's peak resident set so far (VmRSS: the current one)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


QUARTERS = (0.25, 0.5, 0.75, 1.0)


def write_singles(settings: Settings, spec: CampaignSpec, n: int, topic: str) -> None:
    """``n`` one-recipient CampaignMessage records (what the bulk topic held per recipient before chunks)."""
    from infra.kafka.producer import Producer
    from producers.campaign import message
    from schemas.codec import Codec

    codec = Codec()
    producer = Producer(settings, **{"linger.ms": 20, "queue.buffering.max.messages": 2_000_000})
    base = json.dumps(spec.variables, separators=(",", ":"))
    for i in range(n):
        user = f"raw-{i:07d}"
        producer.produce_value(topic, codec.encode("CampaignMessage", message(spec, Recipient(user), 0, base)), user.encode(), [])
    producer.flush(120)


def sandbox_count(http: httpx.Client) -> int:
    """Messages in the sandbox; -1 when it did not answer in time (a garbage collection over millions of messages)."""
    try:
        return http.get("/_sandbox/inbox", params={"summary": "1"}).json()["count"]
    except httpx.TimeoutException:
        return -1


def write_users(path: Path, n: int, tag: str) -> None:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"{tag}-{i:07d}", "email": f"{tag}-{i}@example.test", "locale": "en",
                                "time_zone": "Europe/Vienna", "first_name": "Ada"}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1_000_000, help="recipients (default: a million)")
    ap.add_argument("--procs", type=int, default=1, help="campaign producer processes")
    ap.add_argument("--workers", type=int, default=2, help="worker processes, each running route-bulk, deliver-email-bulk and status")
    ap.add_argument("--split", action="store_true", help="one worker process per agent instead, to see each agent's CPU")
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--timeout", type=float, default=None, help="seconds to wait for the last delivery (default: scaled to --users)")
    ap.add_argument("--keep", action="store_true", help="keep the database and topics (to inspect them)")
    ap.add_argument("--html-kb", type=int, default=0,
                    help="pad the campaign's HTML body with this many KB of static markup (a real newsletter: 20-100 KB; "
                         "default 0: the seed template's ~150 bytes)")
    a = ap.parse_args()
    n = a.users
    timeout = a.timeout or max(120.0, n / 2000)
    tag = f"bench{uuid.uuid4().hex[:6]}"
    base = Settings()
    admin_dsn = base.dsn.rsplit("/", 1)[0] + "/postgres"
    db_name = f"herald_{tag}"
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{db_name}"')
    h = "127.0.0.1"
    settings = Settings(database_url=base.dsn.rsplit("/", 1)[0] + f"/{db_name}", topic_prefix=tag, redis_prefix=tag, app_id=tag,
                        partitions=a.partitions, metrics_port=0, email_provider="sendgrid",
                        sendgrid_host=f"http://{h}:{free_port()}", twilio_base_url=f"http://{h}:{free_port()}",
                        fcm_url=f"http://{h}:{free_port()}", smtp_port=free_port())
    settings = settings.model_copy(update={"apns": settings.apns.model_copy(update={"url": f"https://{h}:{free_port()}"})})
    work = Path(tempfile.mkdtemp(prefix=f"{tag}-"))
    procs: list[subprocess.Popen] = []
    print(f"bench {tag}: {n:,} users, {a.workers} worker(s), {a.procs} producer process(es), {a.partitions} partitions; logs in {work}")
    try:
        migrate(settings)
        ensure_topics(settings)
        with psycopg.connect(settings.dsn, autocommit=True) as conn:
            seed_templates(conn)
            if a.html_kb:
                block = "<tr><td style=\"padding:8px\">This week's story, with its picture and a link.</td></tr>"
                padding = f"<table>{block * (a.html_kb * 1024 // len(block))}</table>"
                conn.execute("UPDATE templates SET body_html = body_html || %s WHERE code = 'weekly_digest' AND channel = 'email'",
                             (padding,))
                print(f"template            : HTML body padded with {len(padding) / 1024:.0f} KB of static markup")
            users_file = work / "users.jsonl"
            write_users(users_file, n, tag)
            t = time.perf_counter()
            report = import_users(conn, rows_of(users_file))
            print(f"users import        : {report.inserted:,} users in {time.perf_counter() - t:.1f}s")

        env = env_for(settings)
        sandbox = start(["sandbox", "run", "--registry-port", "0"], env, work / "sandbox.log")
        procs.append(sandbox)
        http = httpx.Client(base_url=settings.sendgrid_host, trust_env=False, timeout=60)
        for _ in range(300):
            try:
                sandbox_count(http)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        alone = produce(settings, settings.topic("bench-prod"), CampaignSpec(f"{tag}-alone", "weekly_digest", {"bench": "alone"}),
                        (Recipient(f"{tag}-{i:07d}") for i in range(n)), procs=a.procs)
        print(f"producer alone      : {alone.produced:,} events in {alone.seconds:.1f}s = {alone.rate:,.0f} events/s "
              f"(no worker running; target ≥ 200,000)")
        groups = {ag: [ag] for ag in AGENTS} if a.split else {f"worker-{i}": AGENTS for i in range(a.workers)}
        workers = [start(["worker", *[arg for ag in ags for arg in ("-a", ag)]], env, work / f"{name}.log") for name, ags in groups.items()]
        procs += workers

        db = psycopg.connect(settings.dsn, autocommit=True)

        def sent_statuses(cid: str) -> int:
            return db.execute("SELECT count(*) FROM notifications WHERE campaign_id = %s AND status_rank >= 50", (cid,)).fetchone()[0]

        # warm-up: workers joined their groups, connections open, templates cached
        warm = CampaignSpec(f"{tag}-warm", "weekly_digest", {"bench": "warm-up"})
        create(db, warm, 20)
        produce(settings, settings.topic("bulk"), warm, [Recipient(f"{tag}-{i:07d}") for i in range(20)])
        deadline = time.monotonic() + 180
        while sent_statuses(warm.id) < 20:
            if time.monotonic() > deadline:
                raise SystemExit(f"warm-up: workers did not deliver 20 messages in 180 s; see {work}")
            time.sleep(0.5)
        base_count = sandbox_count(http)
        cpu0 = {w.pid: cpu_seconds(w.pid) for w in workers}
        sandbox_cpu0 = cpu_seconds(sandbox.pid)
        infra0 = infra_cpu()

        spec = CampaignSpec(f"{tag}-main", "weekly_digest", {"bench": "generated"}, variables={"headline": "Spring is here"})
        create(db, spec, n)
        recipients = (Recipient(f"{tag}-{i:07d}") for i in range(n))
        t0 = time.perf_counter()
        prod = produce(settings, settings.topic("bulk"), spec, recipients, procs=a.procs)
        set_progress(db, spec.id, prod.produced, "produced", total=n)
        print(f"producer            : {prod.produced:,} events in {prod.seconds:.1f}s = {prod.rate:,.0f} events/s "
              f"({a.procs} process(es), while the workers run)")

        last_delivery = last_status = None
        deadline = time.monotonic() + timeout
        delivered = statuses = 0
        # each worker's resident set when a quarter, half... of the campaign was delivered: flat, or growing with it
        rss_at: dict[float, list[float]] = {}
        while time.monotonic() < deadline and (last_delivery is None or last_status is None):
            if last_delivery is None:
                delivered = sandbox_count(http) - base_count
                for q in QUARTERS:
                    if q not in rss_at and delivered >= q * n:
                        rss_at[q] = [peak_rss_mb(w.pid, "VmRSS") for w in workers]
                if delivered >= n:
                    last_delivery = time.perf_counter() - t0
            # counting a million status rows costs PostgreSQL ~0.1 s: only once the emails are all in the sandbox
            if last_status is None and last_delivery is not None:
                statuses = sent_statuses(spec.id)
                if statuses >= n:
                    last_status = time.perf_counter() - t0
            time.sleep(0.5)
        elapsed = time.perf_counter() - t0
        if last_status is None:
            statuses = sent_statuses(spec.id)
        worker_cpu = sum(cpu_seconds(w.pid) - cpu0[w.pid] for w in workers)
        sandbox_cpu = cpu_seconds(sandbox.pid) - sandbox_cpu0
        infra1 = infra_cpu()
        if last_delivery is None:
            print(f"NOT DONE            : {delivered:,} of {n:,} emails at the sandbox, {statuses:,} sent statuses after {elapsed:.0f}s")
        else:
            print(f"last delivery       : {last_delivery:.1f}s after the first produced message (target ≤ 60 s for a million)")
        if last_status is not None:
            print(f"last 'sent' status  : {last_status:.1f}s")
        done = max(delivered, 1)
        print(f"end to end          : {done / (last_delivery or elapsed):,.0f} notifications/s")
        print(f"worker CPU          : {worker_cpu:.1f}s = {worker_cpu / done * 1e6:,.0f} µs per notification "
              f"(sandbox: {sandbox_cpu / done * 1e6:,.0f} µs)")
        print("services CPU        : " + ", ".join(
            f"{k} {infra1[k] - infra0.get(k, 0.0):.1f}s = {(infra1[k] - infra0.get(k, 0.0)) / done * 1e6:,.0f} µs" for k in infra1)
            + " per notification (whole services: other users of the stack count too)")
        if a.split:
            for name, w in zip(groups, workers, strict=True):
                print(f"  {name:<18}: {(cpu_seconds(w.pid) - cpu0[w.pid]) / done * 1e6:,.0f} µs per notification")
        summary = db.execute("SELECT status, count(*) FROM notifications WHERE campaign_id = %s GROUP BY 1 ORDER BY 2 DESC",
                             (spec.id,)).fetchall()
        print(f"statuses            : {', '.join(f'{s} {c:,}' for s, c in summary)}")

        for i, (name, w) in enumerate(zip(groups, workers, strict=True)):
            along = " / ".join(f"{rss_at[q][i]:,.0f}" if q in rss_at else "-" for q in QUARTERS)
            print(f"  {name:<18}: peak RSS {peak_rss_mb(w.pid):,.0f} MB; RSS at 25/50/75/100 % delivered {along} MB")
        for w in workers:
            stop(w)
        # the baseline moves one record per recipient, as the bulk topic carried before campaign chunks: the
        # pipeline's notifications/s is compared with what Kafka alone does for the same count of messages
        write_singles(settings, spec, n, settings.topic("bench-src"))
        rate = pass_through(settings.kafka_bootstrap, settings.topic("bench-src"), settings.topic("bench-raw"), n,
                            timeout=300, batch=5000).rate
        print(f"raw Kafka           : {rate:,.0f} records/s consume→produce of {n:,} one-recipient CampaignMessage records "
              "(confluent-kafka, one process)")
        e2e = done / (last_delivery or elapsed)
        print(f"ratio               : {e2e / rate:.3f} of the raw Kafka pass-through (target ≥ 0.14)")
        db.close()
    finally:
        for p in procs:
            stop(p)
        if not a.keep:
            admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
            names = [s.name for s in topic_specs(settings)] + [settings.topic(t) for t in ("bench-raw", "bench-src", "bench-prod")]
            for f in admin.delete_topics(names, operation_timeout=30).values():
                with contextlib.suppress(Exception):  # a topic that was never created
                    f.result(30)
            with psycopg.connect(admin_dsn, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
            import redis

            r = redis.Redis.from_url(settings.redis_dsn)
            batch: list[bytes] = []
            for key in r.scan_iter(f"{tag}:*", count=10_000):
                batch.append(key)
                if len(batch) >= 10_000:
                    r.unlink(*batch)
                    batch = []
            if batch:
                r.unlink(*batch)
            r.close()


if __name__ == "__main__":
    main()
