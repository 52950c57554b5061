"""Scale-out on the 3-broker cluster: the same email campaign with 1, 2 and 4 worker processes (issue 13.8).

For each N of ``--workers`` the bench makes fresh topics (RF 3, min ISR 2, ``--partitions`` each) and
consumer groups on the cluster that ``herald stack up --brokers 3`` started, starts N ``herald worker``
processes (route-bulk, deliver-email-bulk, status: the batch engine), warms them up and prints:

* throughput: notifications/s from the first produced message to the last ``sent`` status in PostgreSQL;
* the partitions each worker held, read from the consumer groups' assignment (admin API
  ``describe_consumer_groups`` on ``{app_id}-route-bulk``, ``-deliver-email-bulk``, ``-status``);
* CPU µs per notification summed over the N worker processes (utime+stime from /proc);
* rebalance on join: an extra worker is started; seconds until every group is stable with it holding
  partitions (process start included; "in group" is the part after it first shows up as a member);
* rebalance on leave: one of the original workers gets SIGTERM; seconds until its partitions are owned
  by the others (every partition assigned, group stable, the leaver gone);
* the raw Kafka pass-through rate (bench/rawkafka.py) on the same cluster in the same run.

The rebalances are measured on idle groups, after the campaign. Everything is private to the run (database,
topic prefixes, app ids, Redis prefix) and removed at the end. The cluster's PLAINTEXT listeners are used
(cheaper than SASL_SSL, and what bench/rawkafka.py speaks).

On a 2-core machine the workers, PostgreSQL, Redis, the three brokers and the producer share the same two
cores: throughput cannot grow with N there; what must hold is that CPU per notification does not grow with N.

    python bench/scale.py --recipients 5000 --workers 1,2      # while developing
    python bench/scale.py --recipients 100000 --json           # the full run
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import psycopg
from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from campaign import AGENTS, cpu_seconds, env_for, sandbox_count, write_users  # bench/campaign.py: bench/ is on sys.path
from rawkafka import pass_through

from infra.db import migrate
from infra.settings import Settings
from infra.tools.children import spawn, stop
from infra.tools.sandbox.server import free_port
from infra.tools.seed import seed_templates
from infra.tools.stack.cluster import KafkaCluster
from infra.topics import admin_client, deliver_topic, describe, ensure_topics, herald_groups, topic_specs
from producers.campaign import CampaignSpec, create, produce, set_progress
from producers.campaign_source import Recipient
from producers.users_import import import_users, rows_of

WARM = 200   # warm-up messages: enough to reach every partition, so every worker opens its connections


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- the consumer groups, as the admin API sees them ---------------------------------------------------
def groups_of(s: Settings) -> list[str]:
    return [f"{s.app_id}-{a}" for a in AGENTS]


def snapshot(admin: AdminClient, groups: list[str]) -> dict[str, dict]:
    """{group: {"state": "STABLE", "members": {client_id: partitions}}}: one describe_consumer_groups call."""
    out: dict[str, dict] = {}
    for g, fut in admin.describe_consumer_groups(groups, request_timeout=10).items():
        try:
            d = fut.result(10)
        except Exception as exc:  # noqa: BLE001 - a coordinator moving: the caller polls again
            out[g] = {"state": f"error {exc}", "members": {}}
            continue
        members: dict[str, int] = {}
        for m in d.members:
            n = len(m.assignment.topic_partitions) if m.assignment else 0
            members[m.client_id] = members.get(m.client_id, 0) + n
        out[g] = {"state": d.state.name if isinstance(d.state, ConsumerGroupState) else str(d.state), "members": members}
    return out


def settled(snap: dict[str, dict], expected: set[str], partitions: dict[str, int]) -> bool:
    """Every group stable, its members exactly ``expected``, each holding partitions, all partitions owned."""
    for g, v in snap.items():
        m = v["members"]
        if v["state"] != "STABLE" or set(m) != expected or min(m.values(), default=0) < 1 or sum(m.values()) != partitions[g]:
            return False
    return True


def wait_settled(admin: AdminClient, groups: list[str], expected: set[str], partitions: dict[str, int],
                 timeout: float, seen_member: str | None = None,
                 alive: dict[str, subprocess.Popen] | None = None) -> tuple[float | None, float | None, dict]:
    """(seconds until settled, seconds until ``seen_member`` first was a member of every group, last snapshot)."""
    t0 = time.perf_counter()
    seen = None
    snap: dict = {}
    while time.perf_counter() - t0 < timeout:
        check_alive(alive or {})
        snap = snapshot(admin, groups)
        if seen_member and seen is None and all(seen_member in v["members"] for v in snap.values()):
            seen = time.perf_counter() - t0
        if settled(snap, expected, partitions):
            return time.perf_counter() - t0, seen, snap
        time.sleep(0.05)
    return None, seen, snap


class WorkerDied(RuntimeError):
    pass


def check_alive(workers: dict[str, subprocess.Popen]) -> None:
    for name, p in workers.items():
        if p.poll() is not None:
            raise WorkerDied(f"worker {name} exited with {p.returncode}")


# --- one N -----------------------------------------------------------------------------------------------
@dataclass
class Case:
    workers: int
    notifications: int = 0
    produced_s: float = 0.0
    last_sent_s: float | None = None
    rate: float = 0.0
    worker_cpu_s: float = 0.0
    cpu_us_per_notification: float = 0.0
    cpu_us_per_worker: dict[str, float] = field(default_factory=dict)
    sandbox_cpu_us_per_notification: float = 0.0
    partitions: dict[str, dict[str, int]] = field(default_factory=dict)     # group → client_id → partitions
    join_s: float | None = None
    join_in_group_s: float | None = None
    join_partitions: dict[str, dict[str, int]] = field(default_factory=dict)
    leave_s: float | None = None
    leaver_exit_s: float | None = None
    leave_partitions: dict[str, dict[str, int]] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)


def worker_settings(s: Settings, name: str) -> Settings:
    """``s`` with the worker's own librdkafka client.id: the admin API names each group member by it."""
    kafka = s.kafka.model_copy(update={"extra": {**s.kafka.extra, "client.id": name}})
    return s.model_copy(update={"kafka": kafka})


def run_case(n_workers: int, s: Settings, n: int, db: psycopg.Connection, http: httpx.Client, sandbox: subprocess.Popen,
             work: Path, procs: list[subprocess.Popen], timeout: float) -> Case:
    case = Case(n_workers)
    tag = s.app_id
    admin = admin_client(s)
    groups = groups_of(s)
    md = admin.list_topics(timeout=10)
    topic_of = {f"{s.app_id}-route-bulk": s.topic("bulk"), f"{s.app_id}-deliver-email-bulk": deliver_topic(s, "email", "bulk"),
                f"{s.app_id}-status": s.topic("status")}
    partitions = {g: len(md.topics[t].partitions) for g, t in topic_of.items()}

    def start(i: int) -> tuple[str, subprocess.Popen]:
        name = f"{tag}-w{i}"
        p = spawn(["worker", *[x for a in AGENTS for x in ("-a", a)]], env_for(worker_settings(s, name)), work / f"{name}.log")
        procs.append(p)
        return name, p

    workers = dict(start(i) for i in range(n_workers))

    def sent(cid: str) -> int:
        return db.execute("SELECT count(*) FROM notifications WHERE campaign_id = %s AND status_rank >= 50", (cid,)).fetchone()[0]

    warm = CampaignSpec(f"{tag}-warm", "weekly_digest", {"bench": "warm-up"})
    create(db, warm, WARM)
    produce(s, s.topic("bulk"), warm, [Recipient(f"{tag}-{i:07d}") for i in range(WARM)])
    deadline = time.monotonic() + 240
    while sent(warm.id) < WARM:
        check_alive(workers)
        if time.monotonic() > deadline:
            raise SystemExit(f"N={n_workers}: the workers did not send {WARM} warm-up messages in 240 s; see {work}")
        time.sleep(0.3)
    took, _, snap = wait_settled(admin, groups, set(workers), partitions, 60, alive=workers)
    if took is None:
        raise SystemExit(f"N={n_workers}: the groups are not stable with {n_workers} members: {snap}")
    case.partitions = {g: v["members"] for g, v in snap.items()}
    log(f"  N={n_workers}: warm, assignment {fmt_assignment(case.partitions, list(workers))}")

    base_sandbox = sandbox_count(http)
    cpu0 = {name: cpu_seconds(p.pid) for name, p in workers.items()}
    sandbox0 = cpu_seconds(sandbox.pid)
    spec = CampaignSpec(f"{tag}-main", "weekly_digest", {"bench": "generated"}, variables={"headline": "Spring is here"})
    create(db, spec, n)
    t0 = time.perf_counter()
    prod = produce(s, s.topic("bulk"), spec, (Recipient(f"{tag}-{i:07d}") for i in range(n)))
    case.produced_s = prod.seconds
    set_progress(db, spec.id, prod.produced, "produced", total=n)
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        check_alive(workers)
        done = sent(spec.id)
        if done >= n:
            case.last_sent_s = time.perf_counter() - t0
            break
        time.sleep(0.25)
    elapsed = case.last_sent_s or (time.perf_counter() - t0)
    cpu = {name: cpu_seconds(p.pid) - cpu0[name] for name, p in workers.items()}
    case.notifications = done
    case.rate = done / elapsed if elapsed > 0 else 0.0
    case.worker_cpu_s = sum(cpu.values())
    case.cpu_us_per_notification = case.worker_cpu_s / max(done, 1) * 1e6
    case.cpu_us_per_worker = {k: v / max(done, 1) * 1e6 for k, v in cpu.items()}
    case.sandbox_cpu_us_per_notification = (cpu_seconds(sandbox.pid) - sandbox0) / max(done, 1) * 1e6
    case.statuses = dict(db.execute("SELECT status, count(*) FROM notifications WHERE campaign_id = %s GROUP BY 1",
                                    (spec.id,)).fetchall())
    delivered = sandbox_count(http) - base_sandbox
    log(f"  N={n_workers}: {done:,}/{n:,} sent in {elapsed:.1f}s = {case.rate:,.0f}/s, {delivered:,} at the sandbox, "
        f"worker CPU {case.cpu_us_per_notification:,.0f} µs/notification")
    if case.last_sent_s is None:
        log(f"  N={n_workers}: NOT DONE after {timeout:.0f}s (statuses {case.statuses})")

    # join: one more worker, idle groups
    extra_name, extra = start(n_workers)
    took, seen, snap = wait_settled(admin, groups, set(workers) | {extra_name}, partitions, 120, seen_member=extra_name,
                                   alive={**workers, extra_name: extra})
    case.join_s, case.join_in_group_s = took, seen
    case.join_partitions = {g: v["members"] for g, v in snap.items()}
    log(f"  N={n_workers}: join → {n_workers + 1}: {fmt_s(took)} (in group after {fmt_s(seen)}), "
        f"{fmt_assignment(case.join_partitions, [*workers, extra_name])}")
    workers[extra_name] = extra

    # leave: SIGTERM the first worker; its partitions must go to the others
    leaver_name = next(iter(workers))
    leaver = workers.pop(leaver_name)
    t = time.perf_counter()
    os.killpg(leaver.pid, signal.SIGTERM)
    took, _, snap = wait_settled(admin, groups, set(workers), partitions, 120, alive=workers)
    case.leave_s = took
    try:
        leaver.wait(60)
        case.leaver_exit_s = time.perf_counter() - t
    except subprocess.TimeoutExpired:
        stop(leaver)
    case.leave_partitions = {g: v["members"] for g, v in snap.items()}
    log(f"  N={n_workers}: leave → {n_workers}: {fmt_s(took)} (leaver exited after {fmt_s(case.leaver_exit_s)}), "
        f"{fmt_assignment(case.leave_partitions, list(workers))}")
    for p in workers.values():
        stop(p)
    return case


def fmt_s(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}s"


def fmt_assignment(parts: dict[str, dict[str, int]], order: list[str]) -> str:
    """Per worker, the partitions held in route-bulk/deliver-email-bulk/status: ``w0 6/6/6, w1 6/6/6``."""
    gs = list(parts)
    return ", ".join(f"{w.rsplit('-', 1)[-1]} " + "/".join(str(parts[g].get(w, 0)) for g in gs) for w in order)


# --- clean-up ---------------------------------------------------------------------------------------------
def remove_kafka(admin: AdminClient, cases: list[Settings], raw_topic: str | None) -> None:
    names = [t.name for s in cases for t in topic_specs(s)] + ([raw_topic] if raw_topic else [])
    try:
        groups = sorted({g for s in cases for g in herald_groups(s, admin)})
        # bench/rawkafka.py's group has a random name: ours is the one that committed offsets on our bulk topic
        mine = {s.topic("bulk") for s in cases}
        listed = admin.list_consumer_groups(request_timeout=10).result(10).valid
        for g in (x.group_id for x in listed if x.group_id.startswith("bench-raw-")):
            offs = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(g)], request_timeout=10)[g].result(10)
            if any(tp.topic in mine for tp in offs.topic_partitions):
                groups.append(g)
        if groups:
            for f in admin.delete_consumer_groups(groups, request_timeout=15).values():
                try:
                    f.result(20)
                except Exception as exc:  # noqa: BLE001
                    log(f"clean-up: group {exc}")
    except Exception as exc:  # noqa: BLE001 - clean-up goes on with the topics
        log(f"clean-up of the groups: {exc!r}")
    existing = set(admin.list_topics(timeout=10).topics)
    # and what the workers' Faust app made for itself ({app_id}-__assignor-__leader, changelogs)
    doomed = [t for t in existing if t in names or any(t.startswith(s.app_id + "-") for s in cases)]
    if doomed:
        for f in admin.delete_topics(doomed, operation_timeout=30).values():
            try:
                f.result(40)
            except Exception as exc:  # noqa: BLE001
                log(f"clean-up: topic {exc}")


def remove_redis(url: str, tag: str) -> None:
    import redis

    r = redis.Redis.from_url(url)
    batch: list[bytes] = []
    for key in r.scan_iter(f"{tag}*", count=10_000):
        batch.append(key)
        if len(batch) >= 10_000:
            r.unlink(*batch)
            batch = []
    if batch:
        r.unlink(*batch)
    r.close()


# --- report -----------------------------------------------------------------------------------------------
def table(cases: list[Case], raw_rate: float) -> str:
    head = ("| workers | notifications/s | last `sent` | worker CPU µs/notification (per worker) | "
            "partitions per worker (route-bulk/deliver/status) | join → N+1 | leave → N |")
    lines = [head, "| ---: | ---: | ---: | --- | --- | ---: | ---: |"]
    for c in cases:
        order = sorted(c.cpu_us_per_worker)
        per = " + ".join(f"{c.cpu_us_per_worker[w]:,.0f}" for w in order)
        lines.append(f"| {c.workers} | {c.rate:,.0f} | {fmt_s(c.last_sent_s)} | {c.cpu_us_per_notification:,.0f} ({per}) | "
                     f"{fmt_assignment(c.partitions, order)} | {fmt_s(c.join_s)} | {fmt_s(c.leave_s)} |")
    return "\n".join(lines) + f"\n\nraw Kafka pass-through (same cluster, same run): {raw_rate:,.0f} records/s"


def verdict(cases: list[Case]) -> str:
    one = next((c for c in cases if c.workers == 1), cases[0])
    top = max(cases, key=lambda c: c.workers)
    if top is one or not one.rate or not one.cpu_us_per_notification:
        return ""
    speed = top.rate / one.rate
    cpu = top.cpu_us_per_notification / one.cpu_us_per_notification
    cores = os.cpu_count() or 0
    text = f"{top.workers} workers vs 1: throughput ×{speed:.2f}, worker CPU per notification ×{cpu:.2f}. "
    if cores <= 2:
        text += (f"This machine has {cores} cores, shared by the workers, PostgreSQL, Redis, the 3 brokers and the "
                 "producer: more worker processes cannot add throughput here. ")
    if cpu <= 1.10:
        text += "CPU per notification does not grow with N (within 10 %): the work spreads, it does not multiply."
    else:
        text += (f"CPU per notification grew {100 * (cpu - 1):.0f} % from 1 to {top.workers} workers (not separated "
                 "here: each process's fixed cost of polling, heartbeats and connections, and smaller batches per "
                 "worker, more so when the processes outnumber the cores).")
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipients", type=int, default=100_000)
    ap.add_argument("--workers", default="1,2,4", help="comma-separated worker counts (default 1,2,4)")
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--timeout", type=float, default=None, help="seconds to wait for the last status per case")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout (the table goes to stderr)")
    a = ap.parse_args()
    counts = [int(x) for x in a.workers.split(",") if x.strip()]
    n = a.recipients
    timeout = a.timeout or max(180.0, n / 300)

    def on_term(*_: object) -> None:
        raise SystemExit("SIGTERM: cleaning up")

    signal.signal(signal.SIGTERM, on_term)   # the finally below stops the workers and removes what the run made
    cluster = KafkaCluster(Settings())
    state = cluster.state()
    if state is None or cluster.brokers < 3 or not cluster.answers():
        raise SystemExit("the 3-broker cluster does not answer: `herald stack up --brokers 3 --security sasl_ssl`")
    on_cluster = cluster.client_settings("plaintext")       # PLAINTEXT listeners 127.0.0.1:19092..19094
    tag = f"scale{uuid.uuid4().hex[:6]}"
    work = Path(tempfile.mkdtemp(prefix=f"{tag}-"))
    admin_dsn = on_cluster.dsn.rsplit("/", 1)[0] + "/postgres"
    db_name = f"herald_{tag}"
    h = "127.0.0.1"
    base = on_cluster.model_copy(update={
        "database_url": SecretStr(on_cluster.dsn.rsplit("/", 1)[0] + f"/{db_name}"), "partitions": a.partitions, "metrics_port": 0,
        "email_provider": "sendgrid", "sendgrid_host": f"http://{h}:{free_port()}", "twilio_base_url": f"http://{h}:{free_port()}",
        "fcm_url": f"http://{h}:{free_port()}", "smtp_port": free_port(), "redis_prefix": tag,
        "apns": on_cluster.apns.model_copy(update={"url": f"https://{h}:{free_port()}"}),
        "home": work / "home"})   # the workers' Faust data folders: private, nobody else's clean-up removes them
    per_n = {k: base.model_copy(update={"topic_prefix": f"{tag}n{k}", "app_id": f"{tag}n{k}"}) for k in counts}
    procs: list[subprocess.Popen] = []
    cases: list[Case] = []
    raw_topic = None
    raw_rate = 0.0
    load = os.getloadavg()
    log(f"bench {tag}: {n:,} recipients × workers {counts}, {a.partitions} partitions, cluster "
        f"{on_cluster.kafka_bootstrap} (PLAINTEXT); load average {load[0]:.1f}; logs in {work}")
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{db_name}"')
    admin = admin_client(base)
    try:
        migrate(base)
        for s in per_n.values():
            ensure_topics(s)
        first = per_n[counts[0]]
        bulk = next(t for t in describe(first, with_lag=False) if t.name == first.topic("bulk"))
        log(f"topics: {bulk.name} and the rest, {bulk.partitions} partitions, RF {bulk.replication_factor}, "
            f"min ISR {bulk.min_insync_replicas}")
        with psycopg.connect(base.dsn, autocommit=True) as conn:
            seed_templates(conn)
            t = time.perf_counter()
            for s in per_n.values():
                users = work / f"{s.app_id}-users.jsonl"
                write_users(users, n, s.app_id)
                import_users(conn, rows_of(users))
                users.unlink()
            log(f"users: {n * len(per_n):,} imported in {time.perf_counter() - t:.1f}s")

        sandbox = spawn(["sandbox", "run", "--registry-port", "0"], env_for(base), work / "sandbox.log")
        procs.append(sandbox)
        http = httpx.Client(base_url=base.sendgrid_host, trust_env=False, timeout=10)
        for _ in range(300):
            try:
                sandbox_count(http)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        with psycopg.connect(base.dsn, autocommit=True) as db:
            for k, s in per_n.items():
                cases.append(run_case(k, s, n, db, http, sandbox, work, procs, timeout))

        last = per_n[counts[-1]]
        raw_topic = last.topic("bench-raw")
        for f in admin.create_topics([NewTopic(raw_topic, a.partitions, 3, config={"min.insync.replicas": "2"})]).values():
            f.result(30)
        raw = pass_through(last.kafka_bootstrap, last.topic("bulk"), raw_topic, n + WARM, timeout=300, batch=5000)
        raw_rate = raw.rate
        log(f"raw Kafka: {raw.records:,} records in {raw.seconds:.1f}s = {raw.rate:,.0f}/s, {raw.cpu_us_per_record:.1f} µs CPU each")
    finally:
        for p in procs:
            stop(p)
        try:
            remove_kafka(admin, list(per_n.values()), raw_topic)
        finally:
            with psycopg.connect(admin_dsn, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
            remove_redis(base.redis_dsn, tag)

    report = table(cases, raw_rate)
    note = verdict(cases)
    if a.json:
        log(report + ("\n\n" + note if note else ""))
        print(json.dumps({"tag": tag, "recipients": n, "partitions": a.partitions, "bootstrap": base.kafka_bootstrap,
                          "security_protocol": "PLAINTEXT", "replication_factor": 3, "cores": os.cpu_count(),
                          "load_average_at_start": load[0], "raw_kafka_records_per_s": raw_rate,
                          "cases": [asdict(c) for c in cases], "verdict": note}))
    else:
        print(report)
        if note:
            print("\n" + note)


if __name__ == "__main__":
    main()
