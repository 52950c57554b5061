"""Faust's aiokafka transport with a fetch wait of Herald's choosing (``settings.worker.faust_fetch_wait_ms``).

Faust builds its worker consumer with ``fetch_max_wait_ms=1500`` and no setting to change it
(faust/transport/drivers/aiokafka.py, ``AIOKafkaConsumerThread._create_worker_consumer``). That wait is
what kept the interactive route in a slow mode under load:

- aiokafka has at most one fetch in flight per broker, and a partition whose fetched records are still
  waiting to be consumed is left out of the next fetch (aiokafka/consumer/fetcher.py,
  ``Fetcher._get_actions_per_node``); after ``prefetch_backoff`` (100 ms) the fetch goes out without it.
- When Faust comes back for what was fetched more than 100 ms late (a batch whose handling holds the
  event loop longer than that, a pause, a backlog), every busy partition is still waiting, and the fetch
  asks only the quiet ones (the receipts topic, Faust's assignor topic). The broker holds it until the
  fetch wait is over, and no busy partition can be fetched meanwhile.
- With 1500 ms, the records that arrived during the hold made the next drain longer than 100 ms again,
  and the route stayed there: records handed over 0.1-1.9 s old instead of ~15 ms.

A short wait bounds such a hold. It costs a fetch round trip every ``faust_fetch_wait_ms`` on an idle
consumer (about 1% of a core at 100 ms, measured in a Faust process with one agent).
"""
from __future__ import annotations

from typing import Any, cast

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # read by AIOKafkaConsumer.start() when it builds its Fetcher; the consumer is not started yet here
        consumer._fetch_max_wait_ms = cast("FaustTransport", self.transport).fetch_max_wait_ms  # noqa: SLF001
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class FaustTransport(faust_aiokafka.Transport):
    """Faust's ``kafka://`` transport whose worker consumer waits at most ``fetch_max_wait_ms`` per fetch."""

    Consumer = _Consumer

    def __init__(self, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetch_max_wait_ms = fetch_max_wait_ms


def use_fetch_wait(app: faust.App, fetch_max_wait_ms: int) -> None:
    """Give ``app`` the transport above; call it before anything uses ``app.transport`` (topics, agents)."""
    app.transport = FaustTransport(app.conf.broker_consumer, app, fetch_max_wait_ms=fetch_max_wait_ms)
