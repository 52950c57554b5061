"""A worker's liveness, from its own agents' progress (what ``/healthz`` answers).

Alive while every agent finished a batch, or polled an empty topic, recently.
Stalled: an agent with a batch in hand that has not finished it for longer than
the threshold (a handler stuck, a service away for longer than retries should
take), or a polling loop that has stopped polling. A Faust agent reports only
its batches (Faust hides its empty polls), so an idle one is never stalled.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Agent:
    polls: bool
    last: float                # finished a batch or polled empty
    busy_since: float | None = None


class Liveness:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._agents: dict[str, _Agent] = {}

    def watch(self, agent: str, *, polls: bool) -> None:
        """``polls``: the agent's loop reports every poll, empty or not (batch engine, retry tiers)."""
        self._agents[agent] = _Agent(polls, self._clock())

    def begin(self, agent: str) -> None:
        a = self._agents.get(agent) or self._agents.setdefault(agent, _Agent(False, self._clock()))
        a.busy_since = self._clock()

    def done(self, agent: str) -> None:
        """A batch finished, or an empty poll."""
        a = self._agents.get(agent) or self._agents.setdefault(agent, _Agent(False, self._clock()))
        a.last = self._clock()
        a.busy_since = None

    def stalled(self, threshold: float) -> dict[str, str]:
        now = self._clock()
        out: dict[str, str] = {}
        for name, a in sorted(self._agents.items()):
            if a.busy_since is not None and now - a.busy_since > threshold:
                out[name] = f"a batch in hand for {now - a.busy_since:.0f} s"
            elif a.busy_since is None and a.polls and now - a.last > threshold:
                out[name] = f"no poll for {now - a.last:.0f} s"
        return out

    def verdict(self, threshold: float) -> tuple[int, str]:
        """(HTTP status, body) for ``/healthz``."""
        stalled = self.stalled(threshold)
        if not stalled:
            return 200, f"ok: {len(self._agents)} agent(s) progressing\n"
        return 503, "".join(f"stalled: {name}: {why}\n" for name, why in stalled.items())
