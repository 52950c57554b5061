"""The Deliver stage's pure decisions: ledger, outcomes, circuit breaker, device effects."""
from __future__ import annotations

import pytest

from schemas.records import Delivery
from schemas.vocabulary import Channel
from sinks.base import Sent
from sinks.errors import InvalidAddress, InvalidToken, Permanent, RateLimited, Retryable
from streams.stages.deliver import (
    Breaker,
    DeadLetterIt,
    DeliverConfig,
    HandBack,
    MarkSent,
    ScheduleRetry,
    WaitAndResend,
    admit,
    device_effects,
    first_occurrences,
    ledger_decision,
    observe,
    outcome,
)
from streams.stages.retry import Ladder

LADDER = Ladder((60.0, 300.0, 900.0), ("r.1m", "r.5m", "r.15m"))
CFG = DeliverConfig()
NOW = 1_000_000


def typed(delivery_id: str, attempt: int = 0, first_failure_at: int | None = None) -> Delivery:
    return Delivery(delivery_id=delivery_id, notification_id="n", event_id="e", event_type="E", user_id="u",
                    channel=Channel.EMAIL, category="c", address="a@example.org", template="t", text="x", occurred_at=NOW,
                    attempt=attempt, first_failure_at=first_failure_at)


@pytest.mark.parametrize("won,prev,expected", [
    (True, None, "send"), (True, "failed", "send"), (True, "claimed", "send"),
    (False, "sent", "already_sent"), (False, "claimed", "in_flight"),
])
def test_ledger_decision(won, prev, expected):
    assert ledger_decision(won, prev) == expected


def test_first_occurrences_marks_later_copies_as_duplicates():
    assert first_occurrences(["a", "b", "a", "c", "b"]) == [True, True, False, True, False]


@pytest.mark.parametrize("attempt,result,expected", [
    (0, Sent("m1"), MarkSent("m1")),
    (0, Retryable("503"), ("r.1m", 1, NOW + 60_000)),
    (1, Retryable("503"), ("r.5m", 2, NOW + 300_000)),
    (2, Retryable("503"), ("r.15m", 3, NOW + 900_000)),
    (3, Retryable("503"), DeadLetterIt("retries_exhausted", "503", 4, NOW)),
    (0, Permanent("400"), DeadLetterIt("permanent", "400", 1, NOW)),
    (0, InvalidAddress("bad"), DeadLetterIt("invalid_address", "bad", 1, NOW)),
    (0, InvalidToken("gone"), DeadLetterIt("invalid_token", "gone", 1, NOW)),
    (0, RateLimited("429", 2.0), WaitAndResend(2.0)),
    (0, RateLimited("429", 3600.0), HandBack("r.1m", NOW + 3_600_000, "rate limited: 429")),
])
def test_outcome(attempt, result, expected):
    d = typed("d", attempt, None if attempt == 0 else NOW)
    got = outcome(d, result, LADDER, NOW, CFG, waited=0.0)
    if isinstance(expected, tuple):
        topic, attempts, due = expected
        assert isinstance(got, ScheduleRetry)
        assert (got.topic, got.delivery.attempt, got.due_ms) == (topic, attempts, due)
        assert got.delivery.first_failure_at == NOW and got.delivery.last_error == "503"
    else:
        assert got == expected


def test_rate_limit_waits_stop_when_the_batch_budget_is_spent():
    d = typed("d")
    assert isinstance(outcome(d, RateLimited("429", 5.0), LADDER, NOW, CFG, waited=CFG.rate_wait_budget - 1), HandBack)


def test_the_first_failure_time_is_kept_across_attempts():
    d = typed("d", 1, 123)
    got = outcome(d, Retryable("x"), LADDER, NOW, CFG, 0.0)
    assert isinstance(got, ScheduleRetry) and got.delivery.first_failure_at == 123


def test_breaker_opens_after_five_failures_in_a_row_probes_and_closes_after_two_successes():
    b = observe(Breaker(), ["fail"] * 4 + ["ok"] + ["fail"] * 4, NOW, CFG)
    assert b.state == "closed" and b.failures == 4
    b = observe(b, ["neutral", "fail"], NOW, CFG)
    assert b.state == "open"
    assert admit(b, NOW + 59_000, CFG) == (b, 0)
    b, allowance = admit(b, NOW + 60_000, CFG)
    assert b.state == "half_open" and allowance == 2
    b = observe(b, ["ok"], NOW + 60_000, CFG)
    assert b.state == "half_open" and admit(b, NOW + 60_001, CFG)[1] == 1
    b = observe(b, ["ok"], NOW + 60_001, CFG)
    assert b.state == "closed" and admit(b, NOW, CFG)[1] is None


def test_a_failed_probe_opens_the_circuit_again():
    b, _ = admit(Breaker("open", opened_at_ms=NOW), NOW + 61_000, CFG)
    b = observe(b, ["fail"], NOW + 61_000, CFG)
    assert b.state == "open" and b.opened_at_ms == NOW + 61_000


@pytest.mark.parametrize("results,expected", [
    ([InvalidToken("x")], [("t", "gone", 0)]),
    ([Retryable("x"), Retryable("y")], [("t", "temp", 2)]),
    ([Retryable("x"), Sent("m")], [("t", "ok", 0)]),
    ([InvalidToken("x"), Sent("m")], [("t", "gone", 0)]),
    ([Permanent("x")], []),  # a bad message says nothing about the device
])
def test_device_effects(results, expected):
    assert device_effects(["t"] * len(results), results) == expected
