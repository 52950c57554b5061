"""Latency of POST /v1/notifications at a fixed request rate (open loop), uvicorn in its own process.

    python bench/api.py                          # 200 requests/s for 20 s, HERALD_API__WORKERS processes
    python bench/api.py --quick                  # 100 requests/s for 3 s
    python bench/api.py --rate 1000 --seconds 10 --workers 1

Each request is sent at its scheduled time whether or not earlier ones have
answered (so a slow server shows up as latency, not as a lower rate). The
server produces every request to Kafka with acks=all and waits for the
delivery report before answering 202. Prints p50/p95/p99; target p99 <= 20 ms.

The client shares the machine's two cores with the server, Kafka, Redis and
PostgreSQL, so its own CPU per request shows up in the server's latency.
``--client raw`` (the default) writes HTTP/1.1 requests on keep-alive
connections itself: about a quarter of aiohttp's CPU per request.
``--client aiohttp`` is the general-purpose client, for comparison.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import httpx
import psycopg
import uvloop
from confluent_kafka.admin import AdminClient

from infra.db import migrate
from infra.settings import Settings
from infra.topics import ensure_topics
from producers.api.keys import new_key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(settings: Settings) -> str:
    migrate(settings)   # the stack's database, as `herald db migrate` leaves it
    ensure_topics(settings)
    k = new_key()
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO templates (code, channel, version, body_text, active) VALUES ('bench_api', 'email', 1, 'Hi {{ name }}', true)"
                     " ON CONFLICT DO NOTHING")
        conn.execute("INSERT INTO api_keys (name, prefix, key_hash) VALUES ('bench', %s, %s)", (k.prefix, k.key_hash))
        # the API refuses notifications for users it does not know (422 unknown_user)
        conn.execute("INSERT INTO users (id, email) SELECT 'bench-' || i, 'bench-' || i || '@example.test' "
                     "FROM generate_series(0, 999) AS i ON CONFLICT DO NOTHING")
    return k.key


async def fire(base: str, key: str, rate: float, seconds: float) -> tuple[list[float], dict[int, int]]:
    """The open-loop client: aiohttp on uvloop (httpx's pure-Python client spent more CPU per request than the
    server: at 500 requests/s it measured itself, not the API)."""
    latencies: list[float] = []
    codes: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(base, connector=connector, timeout=aiohttp.ClientTimeout(total=30),
                                     headers={"Authorization": f"Bearer {key}"}) as client:
        async def one(i: int) -> None:
            t0 = time.perf_counter()
            try:
                async with client.post("/v1/notifications", json={
                        "user_id": f"bench-{i % 1000}", "template": "bench_api", "channels": ["email"],
                        "variables": {"name": "Ana", "i": i}}) as r:
                    await r.read()
                    code = r.status
            except (aiohttp.ClientError, TimeoutError):
                code = 0
            latencies.append(time.perf_counter() - t0)
            codes[code] = codes.get(code, 0) + 1

        await paced(lambda i, _scheduled: one(i), rate, seconds, latencies, codes)
    return latencies, codes


async def paced(one: Callable[[int, float], Coroutine[Any, Any, None]], rate: float, seconds: float,
                latencies: list[float], codes: dict[int, int]) -> None:
    """40 warm-up requests (connections, caches, each API process's first producer metadata), forgotten; then
    ``rate * seconds`` requests, each started at its scheduled time whatever the earlier ones are doing."""
    start = time.perf_counter()
    await asyncio.gather(*(one(-i, start) for i in range(1, 41)))
    latencies.clear()
    codes.clear()
    start = time.perf_counter()
    tasks: list[asyncio.Task[None]] = []
    for i in range(int(rate * seconds)):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)


async def fire_raw(port: int, key: str, rate: float, seconds: float, connections: int = 64
                   ) -> tuple[list[float], dict[int, int]]:
    """The same open loop over ``connections`` keep-alive connections, HTTP/1.1 written and read by hand. A request
    waits for a free connection; its latency counts from its scheduled time, the wait included."""
    latencies: list[float] = []
    codes: dict[int, int] = {}
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    head = (f"POST /v1/notifications HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\n").encode()

    async def one(i: int, scheduled: float) -> None:
        body = json.dumps({"user_id": f"bench-{i % 1000}", "template": "bench_api", "channels": ["email"],
                           "variables": {"name": "Ana", "i": i}}).encode()
        reader, writer = await idle.get()
        code = 0
        try:
            writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            headers = await reader.readuntil(b"\r\n\r\n")
            code = int(headers[9:12])
            length = int(headers.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            idle.put_nowait((reader, writer))
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            writer.close()   # this connection is done; the rest carry on
        latencies.append(time.perf_counter() - scheduled)
        codes[code] = codes.get(code, 0) + 1

    await paced(one, rate, seconds, latencies, codes)
    while not idle.empty():
        idle.get_nowait()[1].close()
    return latencies, codes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second")
    ap.add_argument("--seconds", type=float, default=20.0, help="how long")
    ap.add_argument("--quick", action="store_true", help="100 requests/s for 3 s")
    ap.add_argument("--workers", type=int, default=None,
                    help="uvicorn worker processes (herald api --workers; default HERALD_API__WORKERS: the cores)")
    ap.add_argument("--client", choices=("raw", "aiohttp"), default="raw",
                    help="raw: HTTP/1.1 by hand on 64 keep-alive connections (the default, the lighter); aiohttp")
    args = ap.parse_args()
    if args.quick:
        args.rate, args.seconds = 100.0, 3.0
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    tag = f"bench{uuid.uuid4().hex[:8]}"
    settings = Settings(topic_prefix=tag, redis_prefix=tag, app_id=tag, partitions=3, small_partitions=1)
    key = prepare(settings)
    port = free_port()
    env = {**os.environ, "HERALD_TOPIC_PREFIX": tag, "HERALD_REDIS_PREFIX": tag, "HERALD_APP_ID": tag,
           "HERALD_API__RATE_LIMIT": "1000000", "PYTHONUNBUFFERED": "1"}
    workers = args.workers or settings.api.workers
    server = subprocess.Popen([sys.executable, "-m", "infra.tools.cli.main", "api", "--port", str(port),
                               "--workers", str(workers)], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the API did not become ready")
            time.sleep(0.2)
        t0 = time.perf_counter()
        if args.client == "raw":
            latencies, codes = uvloop.run(fire_raw(port, key, args.rate, args.seconds))
        else:
            latencies, codes = uvloop.run(fire(base, key, args.rate, args.seconds))
        took = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(15)
        admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
        mine = [t for t in admin.list_topics(timeout=10).topics if t.startswith(tag + ".")]
        if mine:
            for f in admin.delete_topics(mine, operation_timeout=10).values():
                f.result(15)
        with psycopg.connect(settings.dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM api_keys WHERE name = 'bench'")
    ms = sorted(x * 1000 for x in latencies)
    q = statistics.quantiles(ms, n=100)
    print(f"POST /v1/notifications: {len(ms)} requests at {args.rate:g}/s over {took:.1f} s (achieved {len(ms) / took:.0f}/s), "
          f"{workers} API process(es), {args.client} client")
    print(f"status codes: {dict(sorted(codes.items()))}")
    print(f"latency ms: p50 {q[49]:.2f}  p95 {q[94]:.2f}  p99 {q[98]:.2f}  max {ms[-1]:.2f}  (target p99 <= 20 ms)")


if __name__ == "__main__":
    main()
