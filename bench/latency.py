"""How long a user waits: from an SDK emit (or an HTTP request) to the provider sandbox's receipt, through the real
pipeline (route and deliver-email agents in one `herald worker`, the SMTP sandbox, the local stack).

    python bench/latency.py                 # idle, then under 500 OrderPlaced/s, then through the HTTP API
    python bench/latency.py --quick         # fewer events, shorter load
    python bench/latency.py --rate 500 --seconds 20 --resets 200 --json

Phases, each with its own users so that every email names its event:
  idle    password resets one at a time (20 a second), nothing else running;
  warm    `--warmup` seconds of OrderPlaced at `--rate`, delivered and not counted: the idle phase warms only the
          critical lane, and a production worker's order path is warm (its first seconds measured p50 0.5-0.66 s);
  load    `--rate` OrderPlaced a second for `--seconds` as background, with password resets (10 a second) among them;
  api     password resets as POST /v1/notifications (a 202 means Kafka has the record), 20 a second.
Prints p50/p95/p99/max in ms per phase and kind, and the worker's CPU (share of one core) per phase.
Latency is the sandbox's receipt time minus the emit time (one machine, one clock). Not a pass/fail test.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import psycopg
from deliver import start_sandbox

from infra.db import migrate
from infra.settings import Settings
from infra.tools.sandbox.control import SandboxControl
from infra.tools.sandbox.server import free_port
from infra.tools.seed import seed_templates
from infra.topics import ensure_topics
from producers.api.keys import new_key
from producers.sdk import Emitter
from tests.support.env import settings_env

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK   # utime + stime


def start(cmd: list[str], settings: Settings, log: Path, ready, extra: dict[str, str] | None = None) -> subprocess.Popen:
    """``herald cmd`` in its own process, once ``ready()`` is true."""
    env = {**os.environ, **settings_env(settings), **(extra or {}), "PYTHONUNBUFFERED": "1", "NO_PROXY": "127.0.0.1,localhost"}
    proc = subprocess.Popen([sys.executable, "-m", "infra.tools.cli.main", *cmd], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"{' '.join(cmd)} did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)
    return proc


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def users(settings: Settings, prefix: str, n: int) -> list[str]:
    ids = [f"{prefix}-{i}" for i in range(n)]
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO users (id, email, locale, time_zone, first_name) "
                     "SELECT u, u || '@example.org', 'en', 'UTC', 'Ada' FROM unnest(%s::text[]) AS u "
                     "ON CONFLICT (id) DO NOTHING", (ids,))
    return ids


def reset(uid: str) -> dict[str, object]:
    return {"user_id": uid, "reset_url": "https://example.test/r/1", "expires_in_minutes": 30}


def order(uid: str, i: int) -> dict[str, object]:
    return {"user_id": uid, "order_id": f"B-{i}", "currency": "EUR", "total_cents": 1495,
            "items": [{"sku": "MUG", "name": "Herald mug", "quantity": 1, "unit_price_cents": 1495}]}


def paced(n: int, per_second: float, fire) -> None:
    """Call ``fire(i)`` n times at a fixed rate (open loop: a slow pipeline shows as latency, not as a lower rate)."""
    t0 = time.perf_counter()
    for i in range(n):
        delay = t0 + i / per_second - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        fire(i)


def collect(ctl: SandboxControl, sent: dict[str, float], timeout: float = 120) -> list[float]:
    """Latencies (ms) of the emails to ``sent``'s addresses, once all arrived or the time is up."""
    deadline = time.monotonic() + timeout
    got: dict[str, float] = {}
    while time.monotonic() < deadline:
        got = {m["to"]: m["received_at"] for m in ctl.inbox("email", envelope=True) if m["to"] in sent}
        if len(got) == len(sent):
            break
        time.sleep(0.5)
    missing = len(sent) - len(got)
    if missing:
        print(f"  ({missing} of {len(sent)} not delivered within {timeout:.0f} s: left out)")
    return sorted((got[a] - sent[a]) * 1000 for a in got)


def summary(ms: list[float]) -> dict[str, float]:
    if len(ms) < 2:
        return {"n": len(ms)}
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"n": len(ms), "p50": round(q[49], 1), "p95": round(q[94], 1), "p99": round(q[98], 1), "max": round(ms[-1], 1)}


def scrape(ports: list[int]) -> dict[str, float]:
    """The workers' batch counters: ``{"count|agent": n, "sum|agent": seconds}`` (each agent runs in one of them)."""
    text = "\n".join(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5, trust_env=False).text for port in ports)
    out: dict[str, float] = {}
    for line in text.splitlines():
        for kind in ("count", "sum"):
            if line.startswith(f"herald_batch_seconds_{kind}{{"):
                agent = line.split('agent="', 1)[1].split('"', 1)[0]
                out[f"{kind}|{agent}"] = float(line.rsplit(" ", 1)[1])
    return out


def per_agent(before: dict[str, float], after: dict[str, float]) -> dict[str, tuple[float, float]]:
    """Batches and mean milliseconds per batch of each agent between two scrapes."""
    out: dict[str, tuple[float, float]] = {}
    for key, n in after.items():
        kind, agent = key.split("|", 1)
        if kind == "count" and (batches := n - before.get(key, 0)) > 0:
            seconds = after[f"sum|{agent}"] - before.get(f"sum|{agent}", 0)
            out[agent] = (batches, seconds / batches * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=500.0, help="background OrderPlaced per second in the load phase")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the load phase")
    ap.add_argument("--resets", type=int, default=200, help="password resets in the idle and api phases")
    ap.add_argument("--warmup", type=float, default=3.0,
                    help="seconds of background orders before the load phase, delivered and not counted (0: none)")
    ap.add_argument("--quick", action="store_true", help="50 resets, 5 s of load")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    ap.add_argument("--critical-worker", action="store_true",
                    help="two workers: `herald worker --lane critical` (route-critical and the critical deliver agents) "
                         "and `--lane others` "
                         "(the default: one worker runs them all)")
    args = ap.parse_args()
    if args.quick:
        args.resets, args.seconds = 50, 5.0
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    tag = f"lat{uuid.uuid4().hex[:8]}"
    h = "127.0.0.1"
    settings = Settings(topic_prefix=tag, redis_prefix=tag, app_id=tag, metrics_port=free_port()).model_copy(update={
        "sendgrid_host": f"http://{h}:{free_port()}", "twilio_base_url": f"http://{h}:{free_port()}",
        "fcm_url": f"http://{h}:{free_port()}", "smtp_port": free_port()})
    migrate(settings)   # the stack's database, as `herald db migrate` leaves it
    ensure_topics(settings)
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        seed_templates(conn)
        key = new_key()
        # the bench sends password resets (category security): its key needs the 'critical' scope
        conn.execute("INSERT INTO api_keys (name, prefix, key_hash, scopes) VALUES (%s, %s, %s, '{send,critical}')",
                     (tag, key.prefix, key.key_hash))
    logs = Path(tempfile.mkdtemp(prefix="herald-latency-"))
    sandbox = start_sandbox(settings)
    ctl = SandboxControl(settings.sendgrid_host)
    workers: list[subprocess.Popen] = []
    ports = [settings.metrics_port]
    # as deploy/k8s runs them: the critical lane in a worker of its own, or one worker for everything
    groups = [["--lane", "critical"], ["--lane", "others"]] if args.critical_worker else [[]]
    try:
        for i, lane in enumerate(groups):
            log = logs / f"worker-{i}.log"
            port = ports[0] if i == 0 else free_port()
            if i:
                ports.append(port)
            workers.append(start(["worker", "--loglevel", "info", *lane], settings, log,
                                 lambda log=log: "[^Worker]: Ready" in log.read_text(errors="replace"),
                                 {"HERALD_METRICS_PORT": str(port)}))
    except BaseException:
        for w in workers:
            w.terminate()
        sandbox.terminate()
        raise
    results: dict[str, dict[str, float]] = {}
    cpu: dict[str, float] = {}
    sdk = Emitter(settings=settings)
    try:
        time.sleep(2)   # the worker's own start-up work settles

        def phase(name: str, body) -> None:
            c0, s0, t0 = sum(cpu_seconds(w.pid) for w in workers), cpu_seconds(sandbox.pid), time.perf_counter()
            body()
            took = time.perf_counter() - t0
            cpu[name] = round((sum(cpu_seconds(w.pid) for w in workers) - c0) / took * 100, 1)
            cpu[f"{name} (sandbox)"] = round((cpu_seconds(sandbox.pid) - s0) / took * 100, 1)

        def idle() -> None:
            who, sent = users(settings, f"{tag}-i", args.resets), {}

            def fire(i: int) -> None:
                sent[f"{who[i]}@example.org"] = time.time()
                sdk.emit("PasswordResetRequested", reset(who[i]))
            paced(len(who), 20, fire)
            results["idle: password reset"] = summary(collect(ctl, sent))

        def warm() -> None:
            n = int(args.rate * args.warmup)
            who, sent = users(settings, f"{tag}-w", n), {}
            warm_sdk = Emitter(settings=settings)

            def fire(i: int) -> None:
                sent[f"{who[i]}@example.org"] = time.time()
                warm_sdk.emit("OrderPlaced", order(who[i], i))
            paced(n, args.rate, fire)
            warm_sdk.flush()
            collect(ctl, sent)

        def load() -> None:
            n_bg, n_fg = int(args.rate * args.seconds), int(10 * args.seconds)
            bg_users, fg_users = users(settings, f"{tag}-b", n_bg), users(settings, f"{tag}-f", n_fg)
            bg_sent: dict[str, float] = {}
            fg_sent: dict[str, float] = {}
            bg_sdk = Emitter(settings=settings)

            def background(i: int) -> None:
                bg_sent[f"{bg_users[i]}@example.org"] = time.time()
                bg_sdk.emit("OrderPlaced", order(bg_users[i], i))

            def foreground(i: int) -> None:
                fg_sent[f"{fg_users[i]}@example.org"] = time.time()
                sdk.emit("PasswordResetRequested", reset(fg_users[i]))
            thread = threading.Thread(target=paced, args=(n_bg, args.rate, background))
            thread.start()
            paced(n_fg, 10, foreground)
            thread.join()
            bg_sdk.flush()
            results["load: password reset (security)"] = summary(collect(ctl, fg_sent))
            results[f"load: OrderPlaced at {args.rate:g}/s"] = summary(collect(ctl, bg_sent))

        def api() -> None:
            port = free_port()
            server = start(["api", "--port", str(port)], settings, logs / "api.log", lambda: answers(f"http://{h}:{port}/readyz"),
                           {"HERALD_API__RATE_LIMIT": "1000000"})
            who, sent = users(settings, f"{tag}-a", args.resets), {}
            try:
                with httpx.Client(base_url=f"http://{h}:{port}", headers={"Authorization": f"Bearer {key.key}"},
                                  trust_env=False, timeout=30) as client:
                    def fire(i: int) -> None:
                        sent[f"{who[i]}@example.org"] = time.time()
                        r = client.post("/v1/notifications", json={
                            "user_id": who[i], "template": "password_reset", "channels": ["email"], "category": "security",
                            "variables": {"reset_url": "https://example.test/r/1", "expires_in_minutes": 30}})
                        if r.status_code != 202:
                            raise SystemExit(f"POST /v1/notifications: {r.status_code} {r.text[:300]}")
                    paced(len(who), 20, fire)
                results["api: POST → provider"] = summary(collect(ctl, sent))
            finally:
                server.terminate()
                server.wait(15)

        phase("idle", idle)
        if args.warmup > 0:
            warm()
        before = scrape(ports)
        phase("load", load)
        batches = per_agent(before, scrape(ports))
        phase("api", api)
    finally:
        sdk.close()
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(30)
        sandbox.terminate()
        sandbox.wait(10)
        with psycopg.connect(settings.dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM api_keys WHERE name = %s", (tag,))
        from tests.conftest import _remove_traces
        _remove_traces(settings)
    if args.json:
        print(json.dumps({"latency_ms": results, "worker_cpu_percent": cpu, "load_batches": batches}))
        return
    print(f"{'what':<40}{'n':>6}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}   ms")
    for name, r in results.items():
        print(f"{name:<40}{r['n']:>6.0f}" + "".join(f"{r.get(k, float('nan')):>9.1f}" for k in ("p50", "p95", "p99", "max")))
    print(f"SMTP connections per deliver agent: {settings.smtp_connections}")
    print("CPU, % of one core: " + ", ".join(f"{k} {v}" for k, v in cpu.items()))
    print("load phase, per agent: " + "; ".join(f"{a} {n:.0f} batches, {ms:.1f} ms each" for a, (n, ms) in batches.items()))
    print("targets: idle p50 <= 20, p99 <= 50; under load a security reset's p99 <= 200 and the background's p99 <= 1000")


if __name__ == "__main__":
    main()
