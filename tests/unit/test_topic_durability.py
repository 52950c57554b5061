"""Topics get the cluster's durability: RF = min(3, brokers), min ISR 2 once RF >= 3; settings win when set."""
from __future__ import annotations

import pytest

from infra.settings import Settings
from infra.topics import durability


@pytest.mark.parametrize("brokers, rf, isr", [(1, 1, 1), (2, 2, 1), (3, 3, 2), (5, 3, 2)])
def test_derived_from_the_cluster(brokers: int, rf: int, isr: int):
    d = durability(Settings(), brokers)
    assert (d.replication_factor, d.min_insync_replicas) == (rf, isr)


def test_settings_win_and_min_isr_never_exceeds_the_replication_factor():
    s = Settings(topics={"replication_factor": 2, "min_insync_replicas": 3})
    d = durability(s, 5)
    assert (d.replication_factor, d.min_insync_replicas) == (2, 2)
