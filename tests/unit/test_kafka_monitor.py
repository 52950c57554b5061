"""The Kafka monitor's pure parts: partition lag, the DLQ tally, and which group each agent commits in."""
from __future__ import annotations

from infra.kafka.dlq_census import DlqTally, parse_coord
from infra.kafka.lag import partition_lag
from infra.settings import Settings
from streams.runtime.registry import agent_specs, watched

NO_ROUTE, PERMANENT = ("route", "no_route"), ("deliver", "permanent")


def test_partition_lag_counts_from_the_commit_or_from_the_earliest_offset():
    assert partition_lag(committed=4, low=0, high=10) == 6
    assert partition_lag(committed=-1001, low=3, high=10) == 7     # never committed: reads from the earliest
    assert partition_lag(committed=1, low=5, high=10) == 5         # retention went past the commit
    assert partition_lag(committed=10, low=0, high=10) == 0


def test_the_tally_counts_each_offset_once_and_a_failed_replay_once():
    t = DlqTally()
    for off in range(3):
        t.add(0, off, NO_ROUTE)
    t.add(0, 1, NO_ROUTE)                     # read again: ignored
    t.add(1, 0, PERMANENT)
    t.add(0, 3, PERMANENT, replay_of=(1, 0))  # the replay of 1:0 failed again
    assert t.by_reason() == {NO_ROUTE: 3, PERMANENT: 1}
    t.add(0, 4, NO_ROUTE, replay_of=(1, 5))   # names a record not read yet: it will not count
    t.add(1, 5, NO_ROUTE)
    assert t.by_reason() == {NO_ROUTE: 4, PERMANENT: 1} and t.next_offset(1) == 6


def test_the_tally_forgets_what_retention_removed():
    t = DlqTally()
    for off in (0, 1, 2, 5):                  # offsets 3 and 4: gaps (transaction markers)
        t.add(0, off, NO_ROUTE if off < 2 else PERMANENT)
    t.trim(0, 2)
    assert t.by_reason() == {NO_ROUTE: 0, PERMANENT: 2}
    t.trim(0, 9)
    assert t.by_reason() == {NO_ROUTE: 0, PERMANENT: 0} and t.next_offset(0) == 9
    t.trim(2, 4)                              # a partition first seen after retention: starts at its earliest
    assert t.next_offset(2) == 4


def test_parse_coord():
    assert parse_coord("2:17") == (2, 17)
    assert parse_coord(None) is None and parse_coord("x:1") is None and parse_coord("3") is None


def test_every_agent_is_watched_in_the_group_its_engine_commits_in():
    s = Settings(app_id="h")
    groups = {w.agent: w.group for w in watched(s)}
    assert set(groups) == {spec.name for spec in agent_specs(s)}
    assert groups["route"] == "h" and groups["receipts"] == "h"                 # Faust agents share the app's group
    assert groups["route-bulk"] == "h-route-bulk" and groups["retry-1m"] == "h-retry-1m"
    moved = Settings(app_id="h", worker={"engines": {"route": "batch"}})
    assert {w.agent: w.group for w in watched(moved)}["route"] == "h-route"
