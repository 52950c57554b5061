"""The agent registry: which topics each agent reads, how its handler is built and which engine runs it.

Each agent module exposes ``specs(settings) -> list[AgentSpec]``; a worker runs
all of them or the ones named on its command line.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from importlib import import_module

from infra.kafka.lag import Watched
from infra.settings import Settings
from streams.runtime.context import Context
from streams.runtime.runner import Handler

# modules holding agents, in start order
AGENT_MODULES = ("streams.handlers.status_writer", "streams.runtime.hold_loop", "streams.handlers.route",
                 "streams.handlers.deliver", "streams.handlers.receipts")


class Engine(StrEnum):
    FAUST = "faust"      # a Faust agent (noack_take): the interactive, low-volume agents
    BATCH = "batch"      # the librdkafka consume → handle → commit loop (streams.runtime.batch_engine)
    SERVICE = "service"  # the spec's own loop (``service``), e.g. the retry tiers


# The high-volume agents run on the batch engine: Faust's per-record machinery costs ~120 µs of CPU
# per record against ~3 µs for librdkafka's batch consume (bench/runtime.py). So do the interactive deliver (sink)
# agents, each with a consumer of its own: Faust's one consumer fetches nothing from a broker while records of any of
# its partitions wait unconsumed (aiokafka's fetcher), so a backlog of orders for the provider held every other Faust
# agent back, the route of a password reset included. The interactive route agent stays a Faust agent, as the
# product's design has it; with the sink agents off Faust's consumer it has no provider backlog to wait behind. The
# route of critical events (route-critical) has a consumer of its own for the same reason: on Faust's it would wait
# behind the route's backlog of orders.
# A handler module may also set ``engine=`` on its own AgentSpec; HERALD_WORKER__ENGINES overrides both.
DEFAULT_ENGINES: dict[str, Engine] = {
    "route-bulk": Engine.BATCH,
    "route-critical": Engine.BATCH,
    "deliver-email": Engine.BATCH,
    "deliver-sms": Engine.BATCH,
    "deliver-push": Engine.BATCH,
    "deliver-email-critical": Engine.BATCH,
    "deliver-sms-critical": Engine.BATCH,
    "deliver-push-critical": Engine.BATCH,
    "deliver-email-bulk": Engine.BATCH,
    "deliver-sms-bulk": Engine.BATCH,
    "deliver-push-bulk": Engine.BATCH,
    "status": Engine.BATCH,
}


@dataclass(frozen=True)
class AgentSpec:
    name: str
    topics: list[str]
    build: Callable[[Context], Awaitable[Handler]] | None = None
    # instead of a handler: a loop that consumes ``topics`` itself and runs until cancelled
    # (the retry tiers, which pause and seek partitions)
    service: Callable[[Context], Awaitable[None]] | None = None
    # None: DEFAULT_ENGINES, else Faust (a service spec always runs as SERVICE); agent_specs() fills it in
    engine: Engine | None = None
    # the batch engine handles what one consume returned in parts of at most this many value bytes (None: whole);
    # the bulk lane's records each carry hundreds of recipients
    batch_bytes: int | None = None
    # on the batch engine: a batch is handed over as soon as a record waits, with what the consumer already fetched,
    # instead of waiting up to HERALD_BATCH_WITHIN to fill it (the interactive agents, whose one record must not wait
    # for others); Faust's interactive agents do the same (streams.runtime.ready_take)
    ready: bool = False
    # on the batch engine: batches in hand at once, each with a handler of its own, committed in order
    # (streams.runtime.batch_engine.run_ahead)
    ahead: int = 1


def resolve_engine(spec: AgentSpec, overrides: Mapping[str, str] | None = None) -> Engine:
    if spec.service is not None:
        return Engine.SERVICE
    if overrides and spec.name in overrides:
        return Engine(overrides[spec.name])
    if spec.engine is not None:
        return spec.engine
    return DEFAULT_ENGINES.get(spec.name, Engine.FAUST)


def agent_specs(settings: Settings) -> list[AgentSpec]:
    """Every agent's spec, each with its engine decided."""
    specs: list[AgentSpec] = []
    for module in AGENT_MODULES:
        specs += import_module(module).specs(settings)
    overrides = settings.worker.engines
    if unknown := set(overrides) - {s.name for s in specs}:
        raise ValueError(f"HERALD_WORKER__ENGINES names unknown agent(s) {', '.join(sorted(unknown))}")
    return [replace(s, engine=resolve_engine(s, overrides)) for s in specs]


def select(specs: list[AgentSpec], names: Iterable[str] | None) -> list[AgentSpec]:
    if not names:
        return specs
    wanted = set(names)
    known = {s.name for s in specs}
    if unknown := wanted - known:
        raise ValueError(f"unknown agent(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    return [s for s in specs if s.name in wanted]


def consumer_group(settings: Settings, spec: AgentSpec) -> str:
    """The group an agent commits in: the Faust agents share ``{app_id}``, every other has ``{app_id}-<agent>``."""
    return settings.app_id if resolve_engine(spec, settings.worker.engines) is Engine.FAUST else f"{settings.app_id}-{spec.name}"


def watched(settings: Settings) -> list[Watched]:
    """Every agent with its group and topics: what the scheduler's Kafka monitor measures lag for."""
    return [Watched(s.name, consumer_group(settings, s), tuple(s.topics)) for s in agent_specs(settings)]
