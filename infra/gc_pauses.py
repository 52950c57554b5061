"""The garbage collector's pauses: measured per generation, and kept short in long-running processes.

A full collection walks every object the collector tracks and stops the event loop meanwhile. A worker holds
~140k of them once started (modules, the Faust app, clients, pools): each full collection took 50-65 ms, 5 of them
in a minute of ``bench/latency.py``, each one ahead of whatever waited, a password reset included. ``settle()``
moves what exists once a process has started out of the collector's reach (``gc.freeze``): what lives as long as
the process is never walked again, and the full collections of the same run took 4 ms at most.

``settle(young=...)`` also spaces the young collections: a bulk batch allocates thousands of objects per
recipient batch that all live until it is done, and a young collection every 700 allocations walked them over
and over (in route-bulk: 4,053 collections and ~10 µs of CPU per campaign recipient; at 50,000, 37 and ~2 µs).
"""
from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

GcCallback = Callable[[str, dict[str, Any]], None]

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


def settle(young: int | None = None) -> None:
    """Collect once, then freeze what is left: call when a process has started and before its steady work.
    ``young``: allocations between young collections (the first threshold of ``gc.set_threshold``)."""
    gc.collect()
    gc.freeze()
    if young is not None:
        gc.set_threshold(young, *gc.get_threshold()[1:])


def watch(registry: CollectorRegistry) -> GcCallback:
    """Observe every collection's pause in ``herald_gc_pause_seconds{generation}``; ``unwatch`` the result to stop."""
    pauses = Histogram("herald_gc_pause_seconds", "Garbage collection pauses (the event loop stops meanwhile)",
                       ["generation"], buckets=_BUCKETS, registry=registry)
    by_generation = [pauses.labels(str(g)) for g in range(3)]
    started = 0.0

    def callback(phase: str, info: dict[str, Any]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
        else:
            by_generation[info["generation"]].observe(time.perf_counter() - started)

    gc.callbacks.append(callback)
    return callback


def unwatch(callback: GcCallback) -> None:
    if callback in gc.callbacks:
        gc.callbacks.remove(callback)
