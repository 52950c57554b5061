"""The baseline every benchmark compares against: a raw librdkafka consume → produce pass-through.

Batches of ``batch`` records are produced to ``dst``, flushed (acknowledged by the
broker) and only then committed: the same durability the agents give, with none
of their work, so "stage rate / raw rate" measured in one run is a fair ratio.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, Producer


@dataclass(frozen=True)
class PassThrough:
    records: int
    seconds: float
    cpu_us_per_record: float

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


def pass_through(bootstrap: str, src: str, dst: str, n: int, timeout: float = 120.0, batch: int = 1000) -> PassThrough:
    """Move ``n`` records from ``src`` (read from the beginning) to ``dst``; time from the first record consumed."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-raw-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                  "batch.size": 1_000_000, "compression.type": "lz4", "queue.buffering.max.messages": 2_000_000})
    c.subscribe([src])
    seen, t0, cpu0 = 0, None, 0.0
    deadline = time.monotonic() + timeout
    try:
        while seen < n and time.monotonic() < deadline:
            msgs = c.consume(batch, 1.0)
            if msgs and t0 is None:
                t0, cpu0 = time.perf_counter(), time.process_time()
            for m in msgs:
                if m.error():
                    continue
                while True:
                    try:
                        p.produce(dst, m.value(), m.key(), headers=m.headers())
                        break
                    except BufferError:
                        p.poll(0.01)
                seen += 1
            if msgs:
                p.flush(30)
                c.commit(asynchronous=False)
    finally:
        c.close()
    if t0 is None:
        return PassThrough(0, 0.0, 0.0)
    return PassThrough(seen, time.perf_counter() - t0, (time.process_time() - cpu0) / max(seen, 1) * 1e6)
