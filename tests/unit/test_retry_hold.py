"""A retry tier forwards the due prefix of a partition, holds at the first record not yet due, rejects bad records."""
from __future__ import annotations

import pytest

from infra.kafka.records import InRecord
from streams.stages.retry import DUE_HEADER, ORIGIN_HEADER, GiveUp, Ladder, Retry, next_step
from streams.stages.retry_hold import Hold, due_ms, plan_partition

ORIGIN = "herald.deliver.email"
ORIGINS = {ORIGIN, "herald.deliver.sms"}


def rec(offset: int, due: int | str | None, origin: str | None = ORIGIN, ts: int = 0) -> InRecord:
    headers = [("herald-trace-id", b"t")]
    if due is not None:
        headers.append((DUE_HEADER, str(due).encode()))
    if origin is not None:
        headers.append((ORIGIN_HEADER, origin.encode()))
    return InRecord("herald.retry.1m", 0, offset, b"k", b"v%d" % offset, headers, ts)


@pytest.mark.parametrize(
    "due, ts, delay, expected",
    [
        (5_000, 0, 60, 5_000),              # the header is authoritative
        (None, 1_000, 60, 61_000),          # no header: produce time (the failure) + the tier's delay
        ("soon", 1_000, 2.5, 3_500),        # unreadable header: same fallback
    ],
)
def test_due_time(due, ts, delay, expected):
    assert due_ms(rec(0, due, ts=ts), delay) == expected


@pytest.mark.parametrize(
    "dues, now, forwarded, hold, commit",
    [
        ([100, 200, 300], 1_000, [0, 1, 2], None, 3),        # all due: forward all, commit past the last
        ([100, 2_000, 300], 1_000, [0], Hold(1, 2_000), 1),  # hold at the first not due; the one behind waits too
        ([5_000], 1_000, [], Hold(0, 5_000), 0),             # nothing due: commit stays at the held record
        ([1_000], 1_000, [0], None, 1),                      # due exactly now is due
        ([1_001], 1_000, [], Hold(0, 1_001), 0),             # one millisecond early is early
    ],
)
def test_forward_the_due_prefix_and_hold_at_the_first_not_due(dues, now, forwarded, hold, commit):
    records = [rec(i, d) for i, d in enumerate(dues)]
    plan = plan_partition(records, now, 60, ORIGINS)
    assert [o.value for o in plan.forward] == [b"v%d" % i for i in forwarded]
    assert plan.hold == hold
    assert plan.commit_offset == commit


def test_forwarded_record_is_unchanged_and_goes_to_its_origin():
    r = rec(7, 10, origin="herald.deliver.sms")
    (out,) = plan_partition([r], 20, 60, ORIGINS).forward
    assert (out.topic, out.key, out.value, out.headers) == ("herald.deliver.sms", r.key, r.value, r.headers)


@pytest.mark.parametrize(
    "origin, reason",
    [(None, "no_origin"), ("herald.events", "bad_origin"), ("herald.deliver.fax", "bad_origin")],
)
def test_records_that_cannot_go_back_are_rejected_and_do_not_block_the_partition(origin, reason):
    records = [rec(0, 10, origin=origin), rec(1, 10)]
    plan = plan_partition(records, 20, 60, ORIGINS)
    assert [(r.rec.offset, r.reason) for r in plan.reject] == [(0, reason)]
    assert [o.value for o in plan.forward] == [b"v1"]
    assert plan.commit_offset == 2


def test_a_bad_record_before_a_hold_is_committed_past():
    plan = plan_partition([rec(0, 10, origin=None), rec(1, 5_000)], 20, 60, ORIGINS)
    assert [r.rec.offset for r in plan.reject] == [0]
    assert plan.hold == Hold(1, 5_000) and plan.commit_offset == 1


def test_empty_partition_commits_nothing():
    plan = plan_partition([], 0, 60, ORIGINS)
    assert plan.commit_offset is None and plan.hold is None and not plan.forward


LADDER = Ladder((60.0, 300.0, 900.0), ("r.1m", "r.5m", "r.15m"))


@pytest.mark.parametrize(
    "failures, expected",
    [
        (1, Retry("r.1m", 0, 1_000 + 60_000)),
        (2, Retry("r.5m", 1, 1_000 + 300_000)),
        (3, Retry("r.15m", 2, 1_000 + 900_000)),
        (4, GiveUp(4)),
        (9, GiveUp(9)),
    ],
)
def test_the_ladder_counts_the_delay_from_the_failure(failures, expected):
    assert next_step(LADDER, failures, 1_000) == expected


def test_the_ladder_rejects_zero_failures():
    with pytest.raises(ValueError):
        next_step(LADDER, 0, 0)
