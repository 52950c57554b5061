"""The agent runtime's own cost: records/s through a no-op Faust agent (noack_take batches,
manual acks, outputs produced with librdkafka) beside a raw confluent-kafka consume→produce
pass-through of the same records, measured in the same run.

    python bench/runtime.py [--records 200000] [--size 160]
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import uuid

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from rawkafka import pass_through

BOOTSTRAP = os.environ.get("HERALD_KAFKA_BOOTSTRAP", "127.0.0.1:9092")


def make_topic(name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    for f in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        f.result(30)


def fill(topic: str, n: int, size: int) -> float:
    p = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 20, "batch.size": 1_000_000, "compression.type": "lz4",
                  "queue.buffering.max.messages": 2_000_000})
    value = os.urandom(size)
    t0 = time.perf_counter()
    for i in range(n):
        while True:
            try:
                p.produce(topic, value, str(i % 10_000).encode())
                break
            except BufferError:
                p.poll(0.01)
    p.flush(60)
    return n / (time.perf_counter() - t0)


def faust_child(src: str, dst: str, n: int) -> None:
    import faust

    from infra.kafka.producer import Producer
    from infra.kafka.records import OutRecord
    from infra.settings import Settings

    app = faust.App(f"bench-{uuid.uuid4().hex[:6]}", broker=f"kafka://{BOOTSTRAP}", value_serializer="raw", key_serializer="raw",
                    web_enabled=False, consumer_auto_offset_reset="earliest", stream_buffer_maxsize=4096, topic_allow_declare=True)
    out = Producer(Settings(kafka_bootstrap=BOOTSTRAP))
    topic = app.topic(src, value_serializer="raw", key_serializer="raw")
    state = {"seen": 0, "t0": None, "cpu0": 0.0}

    @app.agent(topic, concurrency=1)
    async def passthrough(stream):
        async for events in stream.noack_take(1000, within=0.05):
            if state["t0"] is None:
                state["t0"], state["cpu0"] = time.perf_counter(), time.process_time()
            await out.send_all([OutRecord(dst, e.message.key, e.message.value) for e in events])
            for e in events:
                await stream.ack(e)
            state["seen"] += len(events)
            if state["seen"] >= n:
                el = time.perf_counter() - state["t0"]
                print(f"RESULT {state['seen'] / el:.0f} {(time.process_time() - state['cpu0']) / state['seen'] * 1e6:.1f}", flush=True)
                os._exit(0)

    sys.argv = sys.argv[:1]
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--faust-child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.faust_child:
        faust_child(a.faust_child[0], a.faust_child[1], int(a.faust_child[2]))
        return
    tag = uuid.uuid4().hex[:6]
    src, dst1, dst2 = f"bench-{tag}-src", f"bench-{tag}-raw", f"bench-{tag}-faust"
    for t in (src, dst1, dst2):
        make_topic(t, a.partitions)
    print(f"producing {a.records:,} records of {a.size} B: {fill(src, a.records, a.size):,.0f} records/s")
    raw = pass_through(BOOTSTRAP, src, dst1, a.records)
    raw_rate, raw_cpu = raw.rate, raw.cpu_us_per_record
    print(f"raw confluent-kafka consume→produce : {raw_rate:>10,.0f} records/s  {raw_cpu:6.1f} µs CPU/record")
    child = subprocess.run([sys.executable, __file__, "--faust-child", src, dst2, str(a.records)], capture_output=True, text=True, timeout=600)
    found = re.search(r"RESULT (\S+) (\S+)", child.stdout + child.stderr)  # Faust logs a worker's stdout
    if found is None:
        print("faust child failed:", child.stdout[-2000:], child.stderr[-2000:])
        return
    f_rate, f_cpu = float(found[1]), float(found[2])
    print(f"faust noack_take agent pass-through : {f_rate:>10,.0f} records/s  {f_cpu:6.1f} µs CPU/record")
    print(f"ratio faust / raw                   : {f_rate / raw_rate:10.2f}")


if __name__ == "__main__":
    main()
