"""The collector's pauses are measured per generation, and what exists at start leaves its scans."""
from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry

from infra.gc_pauses import settle, unwatch, watch


def _count(registry: CollectorRegistry, generation: str) -> float:
    return registry.get_sample_value("herald_gc_pause_seconds_count", {"generation": generation}) or 0.0


def test_every_collection_is_observed_in_its_generation_until_unwatched() -> None:
    registry = CollectorRegistry()
    callback = watch(registry)
    try:
        gc.collect(0)
        gc.collect(2)
        assert _count(registry, "0") >= 1 and _count(registry, "2") >= 1
        assert (registry.get_sample_value("herald_gc_pause_seconds_sum", {"generation": "2"}) or 0) > 0
    finally:
        unwatch(callback)
    before = _count(registry, "2")
    gc.collect(2)
    assert _count(registry, "2") == before and callback not in gc.callbacks


def test_settle_freezes_what_exists_at_start_and_spaces_young_collections() -> None:
    before = gc.get_threshold()
    try:
        settle(young=50_000)
        assert gc.get_freeze_count() > 1000   # the interpreter, pytest and the imported modules at least
        assert gc.get_threshold() == (50_000, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    assert gc.get_freeze_count() == 0

