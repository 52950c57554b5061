"""``create_app(settings)`` builds the Faust app: one thin agent per AgentSpec.

An agent takes a batch with ``noack_take`` (nothing is acked before it is
processed), hands it to its handler through the BatchRunner, and acks only
after the handler's outputs are acknowledged by the broker.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

import faust

from infra.kafka.config import faust_options
from infra.settings import Settings
from streams.runtime.registry import AgentSpec, agent_specs, select
from streams.runtime.context import Context
from streams.runtime.batch_engine import run_batch_agent
from infra.kafka.records import InRecord
from streams.runtime.runner import BatchRunner


class _SharedContext:
    """One Context per worker, opened lazily inside the worker's event loop."""

    def __init__(self, settings: Settings, factory: Callable[[Settings], Awaitable[Context]]) -> None:
        self._settings = settings
        self._factory = factory
        self._ctx: Context | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Context:
        async with self._lock:
            if self._ctx is None:
                self._ctx = await self._factory(self._settings)
                try:
                    self._ctx.metrics.serve(self._settings.metrics_port)
                except OSError as exc:  # port taken (a second worker on this host): no /metrics here
                    import logging

                    logging.getLogger("herald.app").warning("metrics port %s: %s", self._settings.metrics_port, exc)
            return self._ctx

    async def close(self) -> None:
        if self._ctx is not None:
            await self._ctx.close()
            self._ctx = None


def _to_in(event: faust.types.EventT) -> InRecord:
    m = event.message
    headers = m.headers or []
    if isinstance(headers, dict):
        headers = list(headers.items())
    return InRecord(m.topic, m.partition, m.offset, m.key, m.value, list(headers), int((m.timestamp or 0) * 1000))


def _agent_fn(spec: AgentSpec, shared: _SharedContext, settings: Settings):
    async def agent(stream: faust.StreamT) -> None:
        runner: BatchRunner | None = None
        async for events in stream.noack_take(settings.batch_size, within=settings.batch_within):
            if runner is None:
                ctx = await shared.get()
                runner = BatchRunner(await spec.build(ctx), ctx)
            await runner.run([_to_in(e) for e in events])
            for e in events:
                await stream.ack(e)

    agent.__name__ = spec.name.replace("-", "_")
    agent.__qualname__ = agent.__name__
    return agent


def _batch_task(spec: AgentSpec, shared: _SharedContext, settings: Settings):
    async def runner_factory() -> BatchRunner:
        ctx = await shared.get()
        return BatchRunner(await spec.build(ctx), ctx)

    async def task() -> None:
        await run_batch_agent(spec.name, spec.topics, runner_factory, settings)

    task.__name__ = task.__qualname__ = spec.name.replace("-", "_")
    return task


def _service_task(spec: AgentSpec, shared: _SharedContext):
    async def task() -> None:
        await spec.service(await shared.get())  # type: ignore[misc]

    task.__name__ = task.__qualname__ = spec.name.replace("-", "_")
    return task


def create_app(
    settings: Settings,
    agents: Iterable[str] | None = None,
    context_factory: Callable[[Settings], Awaitable[Context]] = Context.open,
) -> faust.App:
    app = faust.App(
        settings.app_id,
        **faust_options(settings),
        store="memory://",
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        autodiscover=False,
        topic_replication_factor=1,
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        broker_commit_every=settings.batch_size,
        stream_buffer_maxsize=max(4096, settings.batch_size * 2),
        producer_acks=-1,
        producer_enable_idempotence=True,
        stream_wait_empty=False,
        table_standby_replicas=0,
    )
    shared = _SharedContext(settings, context_factory)
    batch_specs: list[AgentSpec] = []
    for spec in select(agent_specs(settings), agents):
        if spec.service is not None:
            app.task(_service_task(spec, shared))
            continue
        if spec.name in settings.batch_engine_agents:
            batch_specs.append(spec)
            continue
        topic = app.topic(*spec.topics, value_serializer="raw", key_serializer="raw")
        app.agent(topic, name=spec.name, concurrency=1)(_agent_fn(spec, shared, settings))

    for spec in batch_specs:
        app.task(_batch_task(spec, shared, settings))

    @app.task
    async def open_context() -> None:
        # open connections and serve /metrics at start, not at the first record
        await shared.get()

    app.herald_shared = shared  # type: ignore[attr-defined]
    return app
