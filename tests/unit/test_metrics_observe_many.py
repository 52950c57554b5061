"""``observe_many`` adds what as many ``observe`` calls add (it reads prometheus_client's private fields)."""
from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from streams.metrics import observe_many

BUCKETS = (0.005, 0.1, 1, 60)


def _samples(fill: str) -> dict[tuple[str, str], float]:
    """Each sample of the histogram but its creation time, by name and bucket bound."""
    registry = CollectorRegistry()
    hist = Histogram("herald_wait_seconds", "test", ["lane"], buckets=BUCKETS, registry=registry).labels("bulk")
    for amount, n in ((0.002, 1000), (0.1, 3), (0.75, 1), (59.9, 7), (61.0, 2), (0.5, 0)):
        if fill == "many":
            observe_many(hist, amount, n)
        else:
            for _ in range(n):
                hist.observe(amount)
    return {(s.name, s.labels.get("le", "")): s.value for metric in registry.collect() for s in metric.samples
            if not s.name.endswith("_created")}


def test_many_observations_at_once_expose_what_one_by_one_exposes() -> None:
    one_by_one, many = _samples("each"), _samples("many")
    total = ("herald_wait_seconds_sum", "")
    # a sum of a thousand 0.002s differs from 0.002 × 1000 in the last bits of a float
    assert many.pop(total) == pytest.approx(one_by_one.pop(total))
    assert many == one_by_one
    assert one_by_one[("herald_wait_seconds_bucket", "0.005")] == 1000
    assert one_by_one[("herald_wait_seconds_bucket", "60.0")] == 1011
    assert one_by_one[("herald_wait_seconds_count", "")] == 1013


@pytest.mark.parametrize("n", [0, -1])
def test_no_observation_adds_nothing(n: int) -> None:
    registry = CollectorRegistry()
    hist = Histogram("herald_wait_seconds", "test", buckets=BUCKETS, registry=registry)
    observe_many(hist, 0.5, n)
    assert registry.get_sample_value("herald_wait_seconds_count") == 0
