"""Deliveries per second per provider against the sandbox, and the CPU the sink itself spends per delivery.

The sandbox runs in another process (``herald sandbox run`` on free ports), so
``time.process_time`` around the sink calls measures the sink (SDK, JSON, HTTP
client, threads) and nothing of the server. Target: email through SendGrid
batching at 20k deliveries/s of sink CPU. ``fcm`` is the FCM sink alone, ``apns``
the APNs sink alone (HTTP/2 over TLS, one connection, up to 100 streams in flight).

    python bench/deliver.py            # 20k SendGrid, 2k of the others
    python bench/deliver.py --quick    # a few seconds
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))  # tests.support builders

from infra.settings import Settings
from infra.tools.sandbox.server import free_port
from schemas.records import Delivery
from sinks.base import Sent, Sink
from sinks.factory import build_apns_sink, build_sink
from tests.support.env import settings_env
from tests.support.sandbox import delivery

CASES = {"sendgrid": "email", "smtp": "email", "twilio": "sms", "fcm": "push", "apns": "push"}


def start_sandbox(settings: Settings) -> subprocess.Popen:
    env = {**os.environ, **settings_env(settings), "NO_PROXY": "127.0.0.1,localhost"}
    proc = subprocess.Popen([sys.executable, "-m", "infra.tools.cli.main", "sandbox", "run", "--registry-port", "0"],
                            env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            httpx.get(settings.sendgrid_host + "/_sandbox/inbox?summary=1", trust_env=False, timeout=1)
            socket.create_connection(("127.0.0.1", urlsplit(settings.apns.url).port or 443), 1).close()  # APNs starts last
            return proc
        except (httpx.HTTPError, OSError):
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("sandbox did not start")


async def run_case(settings: Settings, provider: str, n: int) -> tuple[float, float, int]:
    channel = CASES[provider]
    s = settings.model_copy(update={"email_provider": provider}) if channel == "email" else settings
    sink: Sink
    if provider == "apns":
        sink = build_apns_sink(s)
        ds = [Delivery.from_avro(delivery(channel, address=uuid.uuid4().hex + uuid.uuid4().hex)) for _ in range(n)]
    else:
        if provider == "fcm":   # the FCM sink alone, not the push dispatcher
            s = s.model_copy(update={"apns": s.apns.model_copy(update={"enabled": False})})
        sink = build_sink(s, channel)
        ds = [Delivery.from_avro(delivery(channel)) for _ in range(n)]
    await sink.send_batch(ds[:5])  # warm up: connections, OAuth token
    sent = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for k in range(0, n, sink.max_batch):
        results = await sink.send_batch(ds[k:k + sink.max_batch])
        sent += sum(isinstance(r, Sent) for r in results)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    await sink.close()
    return wall, cpu, sent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small counts")
    ap.add_argument("--n", type=int, default=None, help="deliveries per provider (SendGrid gets 10x)")
    ap.add_argument("--providers", default=",".join(CASES), help="comma-separated: " + ",".join(CASES))
    args = ap.parse_args()
    base = args.n or (200 if args.quick else 2000)
    h = "127.0.0.1"
    settings = Settings(metrics_port=0).model_copy(update={
        "sendgrid_host": f"http://{h}:{free_port()}", "twilio_base_url": f"http://{h}:{free_port()}",
        "fcm_url": f"http://{h}:{free_port()}", "smtp_port": free_port()})
    settings = settings.model_copy(update={"apns": settings.apns.model_copy(update={"url": f"https://{h}:{free_port()}"})})
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    proc = start_sandbox(settings)
    try:
        print(f"{'provider':<10}{'n':>8}{'sent':>8}{'wall/s':>12}{'deliveries/s':>14}{'sink CPU µs/msg':>17}{'per CPU-s':>12}")
        for provider in args.providers.split(","):
            n = base * 10 if provider == "sendgrid" else base
            wall, cpu, sent = asyncio.run(run_case(settings, provider, n))
            print(f"{provider:<10}{n:>8}{sent:>8}{wall:>12.2f}{n / wall:>14.0f}{cpu / n * 1e6:>17.1f}{n / cpu:>12.0f}")
        print("target: sendgrid ≥ 20000 deliveries per CPU-second of the sink")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
