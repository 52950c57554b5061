"""Finishing the batch in hand when the worker stops.

A stop (SIGTERM; Faust cancels every agent and task) must not abandon a batch
half-handled: that is safe (nothing was committed, the next owner reads it again
and the handlers' idempotence absorbs it) but slow to hand over, and it repeats
provider calls the ledger has to absorb. So a loop runs each batch as its own
task, and when it is cancelled it lets that task end (outputs durable, offsets
committed) within ``bound`` seconds before it stops.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger("herald.engine")

T = TypeVar("T")


async def to_the_end(step: Coroutine[Any, Any, T], bound: float, what: str) -> T:
    """Await ``step``; if the caller is cancelled meanwhile, give ``step`` up to ``bound`` s more, then re-raise."""
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if task.done():
            raise
        log.info("%s: stopping; finishing the batch in hand (up to %.0f s)", what, bound)
        try:
            done, _ = await asyncio.wait({task}, timeout=bound)
        except asyncio.CancelledError:  # cancelled again: stop now
            done = set()
        if not done:
            log.warning("%s: the batch in hand did not finish within %.0f s; it is not committed and will be read again",
                        what, bound)
            task.cancel()
        raise
