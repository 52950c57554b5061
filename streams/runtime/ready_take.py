"""Faust's ``noack_take`` without the timer: a batch is handed over as soon as the agent is free and a record waits.

``Stream.noack_take(max, within)`` waits up to ``within`` seconds for a full buffer after every batch, so an idle
record waits ``within / 2`` on average before its agent sees it (25 ms at the 50 ms default, twice on the way to
the provider: route, then deliver). Here the agent waits for the *first* record only; then, while the records the
consumer already fetched keep arriving in the same loop turn, it lets them in (so a backlog still makes large
batches) and hands the batch over. Nothing is acked here, as in ``noack_take``: the agent acks after its outputs
are durable. Idle costs nothing: no timer runs while the topic is quiet.

It drives the stream the way ``noack_take`` does (a processor fills the buffer, the stream is drained passively),
so it uses the same Faust internals; ``tests/integration/test_route_agent.py`` and the e2e tests run every
interactive agent through it.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import faust

IDLE_CHECK_SECONDS = 1.0   # how often a quiet agent looks whether its stream is stopping
MAX_GATHER_TURNS = 10_000  # bound on the loop turns spent letting already-fetched records in


async def ready_take(stream: faust.StreamT, max_: int) -> AsyncIterator[list[faust.types.EventT]]:
    s: Any = stream
    buffer: list[faust.types.EventT] = []
    ready = asyncio.Event()       # the buffer holds at least one record
    consumed = asyncio.Event()    # the agent took the buffer (a full buffer waits for it)
    taking: asyncio.Future[None] | None = None
    enable_acks = s.enable_acks

    async def add_to_buffer(value: Any) -> Any:
        nonlocal taking
        try:
            if taking is not None:   # the agent is reading the buffer: hold this record until it is done
                try:
                    await taking
                finally:
                    taking = None
            event = s.current_event
            if event is None:
                raise RuntimeError("ready_take: the stream has no current event")
            buffer.append(event)
            ready.set()
            if len(buffer) >= max_:
                consumed.clear()
                await s.wait(consumed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # as noack_take: the stream crashes, the worker says why
            s.log.exception("Error adding to take buffer: %r", exc)
            await s.crash(exc)
        return value

    s.enable_acks = False
    s.add_processor(add_to_buffer)
    s._enable_passive(aiter(s.channel))  # noqa: SLF001 - how noack_take makes the stream feed the processor
    try:
        while not s.should_stop:
            await s.wait_for_stopped(ready, timeout=IDLE_CHECK_SECONDS)
            if not buffer:
                continue
            # let in what the consumer already holds: each loop turn moves fetched records into the buffer
            for _ in range(MAX_GATHER_TURNS):
                before = len(buffer)
                if before >= max_:
                    break
                await asyncio.sleep(0)
                if len(buffer) == before:
                    break
            taking = asyncio.get_running_loop().create_future()
            try:
                yield list(buffer)
            finally:
                buffer.clear()
                ready.clear()
                if not taking.done():
                    taking.set_result(None)
                consumed.set()
    finally:
        s.enable_acks = enable_acks
        s._processors.remove(add_to_buffer)  # noqa: SLF001
