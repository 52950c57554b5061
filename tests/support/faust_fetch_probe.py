"""A Faust worker built like Herald's (``new_app``) that measures how long a record of a busy partition waits after
Faust came back late for what its consumer had fetched (infra/kafka/faust_transport.py tells why it can).

    python -m tests.support.faust_fetch_probe OUT.json     # settings from the environment (HERALD_...)

An agent on the events topic (every partition busy) and one on the receipts topic (quiet), as in the worker. On its
first record the events agent holds the event loop for 0.75 s (a long batch) while a record reaches every events
partition, twice; 0.2 s after the hold one more record is produced, and the time until the agent is handed it is
written to OUT.json as ``{"seconds": ...}``. Then the worker stops.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from infra.settings import Settings
from streams.runtime.faust_app import new_app
from streams.runtime.ready_take import ready_take

HOLD_STEP_S = 0.25   # the hold: wave 1, 0.25 s, wave 2, 0.5 s
PROBE_AFTER_S = 0.2
BOUND_S = 90.0       # the whole run, start and rebalance included


def main(out: Path) -> None:
    import faust

    settings = Settings()
    events, receipts = settings.topic("events"), settings.topic("receipts")
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 0})

    def send(value: bytes, partitions: range) -> None:
        for p in partitions:
            producer.produce(events, value, b"k", partition=p)
        producer.flush(10)

    send(b"prime", range(1))   # the group starts from the earliest offset: the agent gets it once assigned
    app = new_app(settings)
    sent: dict[str, float] = {}

    def send_probe() -> None:
        sent["at"] = time.monotonic()
        send(b"probe", range(1))

    async def busy(stream: faust.StreamT) -> None:
        async for batch in ready_take(stream, settings.batch_size):
            values = {e.message.value for e in batch}
            for e in batch:
                await stream.ack(e)
            if b"prime" in values:
                # a long batch: Faust cannot come back for what its consumer fetches meanwhile
                send(b"wave-1", range(settings.partitions))
                time.sleep(HOLD_STEP_S)
                send(b"wave-2", range(settings.partitions))
                time.sleep(2 * HOLD_STEP_S)
                asyncio.get_running_loop().call_later(PROBE_AFTER_S, send_probe)
            if b"probe" in values:
                out.write_text(json.dumps({"seconds": time.monotonic() - sent["at"]}))
                os.kill(os.getpid(), signal.SIGTERM)

    async def quiet(stream: faust.StreamT) -> None:
        async for batch in ready_take(stream, settings.batch_size):
            for e in batch:
                await stream.ack(e)

    app.agent(app.topic(events, value_serializer="raw", key_serializer="raw"), name="busy", concurrency=1)(busy)
    app.agent(app.topic(receipts, value_serializer="raw", key_serializer="raw"), name="quiet", concurrency=1)(quiet)

    def give_up() -> None:
        out.write_text(json.dumps({"error": f"no probe record within {BOUND_S} s"}))
        os._exit(1)

    timer = threading.Timer(BOUND_S, give_up)
    timer.daemon = True
    timer.start()
    sys.argv = sys.argv[:1]
    worker: Any = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
