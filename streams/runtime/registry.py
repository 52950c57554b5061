"""The agent registry: which topics each agent reads and how its handler is built.

Each agent module exposes ``specs(settings) -> list[AgentSpec]``; a worker runs
all of them or the ones named on its command line.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from importlib import import_module

from infra.settings import Settings
from streams.runtime.context import Context
from streams.runtime.runner import Handler

# modules holding agents, in start order
AGENT_MODULES = ("streams.handlers.status_writer", "streams.runtime.hold_loop", "streams.handlers.route", "streams.handlers.deliver", "streams.handlers.receipts")


@dataclass(frozen=True)
class AgentSpec:
    name: str
    topics: list[str]
    build: Callable[[Context], Awaitable[Handler]] | None = None
    # instead of a handler: a loop that consumes ``topics`` itself and runs until cancelled
    # (the retry tiers, which pause and seek partitions)
    service: Callable[[Context], Awaitable[None]] | None = None


def agent_specs(settings: Settings) -> list[AgentSpec]:
    specs: list[AgentSpec] = []
    for module in AGENT_MODULES:
        specs += import_module(module).specs(settings)
    return specs


def select(specs: list[AgentSpec], names: Iterable[str] | None) -> list[AgentSpec]:
    if not names:
        return specs
    wanted = set(names)
    known = {s.name for s in specs}
    if unknown := wanted - known:
        raise ValueError(f"unknown agent(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    return [s for s in specs if s.name in wanted]
