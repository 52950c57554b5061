"""``create_app(settings)`` builds the Faust app: one agent, batch loop or service per AgentSpec.

A Faust agent takes a batch with ``noack_take`` (nothing is acked before it is
processed), hands it to its handler through the BatchRunner, and acks only
after the handler's outputs are acknowledged by the broker. Which engine runs
an agent is its spec's ``engine`` (streams.runtime.registry).

A stop (SIGTERM) cancels every agent and task: each lets the batch in hand
finish and be acked or committed first, within ``settings.worker.stop_seconds``
(streams.runtime.in_hand); Faust's consumer commits what was acked as it stops.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, cast

import faust

from infra import gc_pauses
from infra.gc_pauses import GcCallback
from infra.kafka.config import faust_options
from infra.kafka.faust_transport import use_fetch_wait
from infra.kafka.records import InRecord
from infra.settings import Settings
from streams.runtime.batch_engine import run_batch_agent
from streams.runtime.context import Context
from streams.runtime.in_hand import to_the_end
from streams.runtime.ready_take import ready_take
from streams.runtime.registry import AgentSpec, Engine, agent_specs, select
from streams.runtime.runner import BatchRunner

log = logging.getLogger("herald.app")

DYNAMIC_SESSION_S = 10.0   # as infra.kafka.config.consumer_config's session.timeout.ms


class _SharedContext:
    """One Context per worker, opened inside the worker's event loop; then /metrics and /healthz are served."""

    def __init__(self, settings: Settings, factory: Callable[[Settings], Awaitable[Context]]) -> None:
        self._settings = settings
        self._factory = factory
        self._ctx: Context | None = None
        self._lock = asyncio.Lock()
        self.server: Any = None
        self.faust_agents: list[str] = []   # watched from the start: Faust reports their batches, not their polls
        self._gc: GcCallback | None = None

    async def get(self) -> Context:
        async with self._lock:
            if self._ctx is None:
                self._ctx = ctx = await self._factory(self._settings)
                for name in self.faust_agents:
                    ctx.liveness.watch(name, polls=False)
                self._gc = gc_pauses.watch(ctx.metrics.registry)
                s = self._settings
                try:
                    self.server = ctx.metrics.serve(s.metrics_port, s.metrics_host,
                                                    lambda: ctx.liveness.verdict(s.worker.stall_seconds))
                except OSError as exc:  # port taken (a second worker on this host): no /metrics here
                    log.warning("metrics port %s:%s: %s; no /metrics or /healthz", s.metrics_host, s.metrics_port, exc)
            return self._ctx

    async def close(self) -> None:
        if self._gc is not None:
            gc_pauses.unwatch(self._gc)
            self._gc = None
        if self.server is not None:
            self.server.shutdown()
            self.server = None
        if self._ctx is not None:
            await self._ctx.close()
            self._ctx = None


def _to_in(event: faust.types.EventT) -> InRecord:
    m = event.message
    # aiokafka hands headers over as (str, bytes) pairs; Faust's type says Mapping or sequence
    headers = cast("list[tuple[str, bytes]]", list(m.headers.items()) if isinstance(m.headers, dict) else list(m.headers or []))
    return InRecord(m.topic, m.partition, m.offset, m.key, m.value, headers, int((m.timestamp or 0) * 1000))


def _named(fn: Callable[..., Any], spec: AgentSpec) -> Callable[..., Any]:
    fn.__name__ = fn.__qualname__ = spec.name.replace("-", "_")
    return fn


def _batches(stream: faust.StreamT, settings: Settings) -> AsyncIterator[Sequence[faust.types.EventT]]:
    """As soon as the agent is free and a record waits (the default), or on a window when one is set."""
    if settings.interactive_within > 0:
        return stream.noack_take(settings.batch_size, within=settings.interactive_within)  # type: ignore[attr-defined]
    return ready_take(stream, settings.batch_size)


def _agent_fn(spec: AgentSpec, shared: _SharedContext, settings: Settings):
    async def agent(stream: faust.StreamT) -> None:
        runner: BatchRunner | None = None
        async for events in _batches(stream, settings):
            if runner is None:
                ctx = await shared.get()
                runner = BatchRunner(await spec.build(ctx), ctx)  # type: ignore[misc]
            runner.ctx.liveness.begin(spec.name)

            async def run_and_ack(events: Sequence[faust.types.EventT] = events, runner: BatchRunner = runner) -> None:
                await runner.run([_to_in(e) for e in events])
                for e in events:
                    await stream.ack(e)

            await to_the_end(run_and_ack(), settings.worker.stop_seconds, spec.name)
            runner.ctx.liveness.done(spec.name)

    return _named(agent, spec)


def _batch_task(spec: AgentSpec, shared: _SharedContext, settings: Settings):
    async def runner_factory() -> BatchRunner:
        ctx = await shared.get()
        return BatchRunner(await spec.build(ctx), ctx)  # type: ignore[misc]

    async def task() -> None:
        ctx = await shared.get()
        await run_batch_agent(spec.name, spec.topics, runner_factory, settings, ctx.liveness,
                              batch_bytes=spec.batch_bytes, ready=spec.ready, ahead=spec.ahead)

    return _named(task, spec)


def _service_task(spec: AgentSpec, shared: _SharedContext):
    async def task() -> None:
        await spec.service(await shared.get())  # type: ignore[misc]

    return _named(task, spec)


def new_app(settings: Settings) -> faust.App:
    """The worker's Faust app, its options and transport, before any agent is declared."""
    w = settings.worker
    (settings.home / "faust").mkdir(parents=True, exist_ok=True)  # Faust makes its data folder, not its parents
    static: dict[str, Any] = {"consumer_group_instance_id": w.instance_id} if w.instance_id else {}
    app = faust.App(
        settings.app_id,
        **faust_options(settings),
        store="memory://",
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        autodiscover=False,
        # topics Faust declares itself (its assignor topic; any topic `herald topics ensure` has not made yet) get
        # Herald's durability: the worker resolves it from the cluster at start (infra.topics.resolved)
        topic_replication_factor=settings.topics.replication_factor or 1,
        datadir=str(settings.home / "faust" / "{conf.name}"),
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
        # Every app task (the batch engine, the retry tiers, /healthz) starts only after this consumer's first
        # rebalance, so a restarted worker waits out its dead self's session here: Faust's default is 60 s; the
        # librdkafka consumers' (10 s) serves as well. A static member (same id in every group) waits for nothing.
        broker_session_timeout=w.static_session_seconds if w.instance_id else DYNAMIC_SESSION_S,
        **static,
    )
    # Faust fixes its fetch wait at 1500 ms, which held the route's busy partitions behind a fetch of the quiet ones
    use_fetch_wait(app, w.faust_fetch_wait_ms)
    return app


def create_app(
    settings: Settings,
    agents: Iterable[str] | None = None,
    context_factory: Callable[[Settings], Awaitable[Context]] = Context.open,
) -> faust.App:
    app = new_app(settings)
    shared = _SharedContext(settings, context_factory)
    chosen = select(agent_specs(settings), agents)
    for spec in chosen:
        if spec.engine is Engine.FAUST:
            topic = app.topic(*spec.topics, value_serializer="raw", key_serializer="raw")
            app.agent(topic, name=spec.name, concurrency=1)(_agent_fn(spec, shared, settings))
            shared.faust_agents.append(spec.name)
    # the loops of their own start after the Faust agents are declared
    for spec in chosen:
        if spec.engine is Engine.SERVICE:
            app.task(_service_task(spec, shared))
        elif spec.engine is Engine.BATCH:
            app.task(_batch_task(spec, shared, settings))

    @app.task
    async def open_context() -> None:
        # open connections and serve /metrics and /healthz at start, not at the first record
        await shared.get()

    app.herald_shared = shared  # type: ignore[attr-defined]
    return app
