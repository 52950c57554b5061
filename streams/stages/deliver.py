"""Pure decisions of the Deliver stage: the ledger, outcomes → actions, the circuit breaker, device effects.

No Faust, no I/O: the deliver agent fetches what these need, calls them and
writes what they return.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from schemas.records import Delivery, epoch_ms
from schemas.vocabulary import LedgerStatus
from sinks.base import Result, Sent
from sinks.errors import DeliveryError, InvalidAddress, InvalidToken, Permanent, ProviderRejected, RateLimited, Retryable
from streams.stages.retry import GiveUp, Ladder, next_step


@dataclass(frozen=True)
class DeliverConfig:
    breaker_failures: int = 5          # failures in a row that open the circuit
    breaker_open_seconds: float = 60.0  # how long it stays open before probing
    breaker_close_after: int = 2       # successes in half-open that close it
    max_rate_wait: float = 10.0        # longest Retry-After the agent sleeps through; longer is handed back
    rate_wait_budget: float = 30.0     # total seconds a batch may spend waiting for rate limits
    claim_lease: float = 120.0         # a claim younger than this may be a live call elsewhere: don't send
    device_failure_limit: int = 5      # temporary failures in a row that deactivate a device token


# --- ledger ------------------------------------------------------------------------
LedgerDecision = Literal["send", "already_sent", "in_flight", "duplicate"]


def ledger_decision(won_claim: bool, previous_status: LedgerStatus | str | None) -> LedgerDecision:
    """What to do with a delivery after the batch's claim statement.

    ``won_claim``: this worker's claim took (new row, an earlier failure, or a stale claim).
    ``previous_status``: the row's status before the claim (None when new).
    """
    if won_claim:
        return "send"
    if previous_status == LedgerStatus.SENT:
        return "already_sent"
    return "in_flight"


def first_occurrences(ids: list[str]) -> list[bool]:
    """True for the first record of each delivery id in a batch; later copies are duplicates."""
    seen: set[str] = set()
    out = []
    for i in ids:
        out.append(i not in seen)
        seen.add(i)
    return out


# --- outcomes ------------------------------------------------------------------------
@dataclass(frozen=True)
class MarkSent:
    provider_message_id: str


@dataclass(frozen=True)
class ScheduleRetry:
    topic: str
    tier: int
    due_ms: int
    delivery: Delivery   # the Delivery to re-encode (attempt, first_failure_at, last_error updated)


@dataclass(frozen=True)
class DeadLetterIt:
    error_class: str
    reason: str
    attempts: int
    first_failure_ms: int


@dataclass(frozen=True)
class WaitAndResend:
    retry_after: float


@dataclass(frozen=True)
class HandBack:
    """Back to the first retry tier without spending an attempt (rate limit too long, claim in flight elsewhere)."""

    topic: str
    due_ms: int
    reason: str


Action = MarkSent | ScheduleRetry | DeadLetterIt | WaitAndResend | HandBack


def error_class(err: DeliveryError) -> str:
    if isinstance(err, InvalidToken):
        return "invalid_token"
    if isinstance(err, InvalidAddress):
        return "invalid_address"
    if isinstance(err, ProviderRejected):
        return "provider_rejected"
    if isinstance(err, Permanent):
        return "permanent"
    if isinstance(err, RateLimited):
        return "rate_limited"
    return "retryable"


def failure(delivery: Delivery, err: DeliveryError, ladder: Ladder, now_ms: int) -> ScheduleRetry | DeadLetterIt:
    """A failed attempt: the next rung of the ladder, or the DLQ when the ladder is exhausted or the error is permanent."""
    attempts = (delivery.attempt or 0) + 1
    first = (epoch_ms(delivery.first_failure_at) if delivery.first_failure_at is not None else 0) or now_ms
    reason = str(err) or type(err).__name__
    if isinstance(err, Permanent):
        return DeadLetterIt(error_class(err), reason, attempts, first)
    step = next_step(ladder, attempts, now_ms)
    if isinstance(step, GiveUp):
        return DeadLetterIt("retries_exhausted", reason, step.attempts, first)
    updated = replace(delivery, attempt=attempts, first_failure_at=first, last_error=reason[:1000])
    return ScheduleRetry(step.topic, step.tier, step.due_ms, updated)


def outcome(delivery: Delivery, result: Result, ladder: Ladder, now_ms: int, cfg: DeliverConfig,
            waited: float) -> Action:
    """One provider result → what the agent does. ``waited``: seconds this batch already spent on rate limits."""
    if isinstance(result, Sent):
        return MarkSent(result.provider_message_id)
    if isinstance(result, RateLimited):
        if result.retry_after <= cfg.max_rate_wait and waited + result.retry_after <= cfg.rate_wait_budget:
            return WaitAndResend(result.retry_after)
        return HandBack(ladder.topics[0], now_ms + int(result.retry_after * 1000), f"rate limited: {result}")
    if isinstance(result, (Retryable, Permanent)):
        return failure(delivery, result, ladder, now_ms)
    return failure(delivery, Retryable(f"unexpected result {result!r}"), ladder, now_ms)


# --- circuit breaker ----------------------------------------------------------------
State = Literal["closed", "open", "half_open"]
STATE_GAUGE: dict[str, int] = {"closed": 0, "half_open": 1, "open": 2}


@dataclass(frozen=True)
class Breaker:
    state: State = "closed"
    failures: int = 0          # in a row, while closed
    successes: int = 0         # in half-open
    opened_at_ms: int = 0
    paused_until_ms: int = 0   # a 429's Retry-After, shared by every worker of the account


def admit(b: Breaker, now_ms: int, cfg: DeliverConfig) -> tuple[Breaker, int | None]:
    """How many deliveries may go to the provider now: None (no limit), 0 (open), or a probe allowance (half-open)."""
    if b.state == "open":
        if now_ms < b.opened_at_ms + int(cfg.breaker_open_seconds * 1000):
            return b, 0
        b = replace(b, state="half_open", successes=0)
    if b.state == "half_open":
        return b, max(1, cfg.breaker_close_after - b.successes)
    return b, None


Observation = Literal["ok", "fail", "neutral"]


def observation(result: Result) -> Observation:
    """What a result says about the provider's health: a message's permanent error and 429s are not outages; the
    provider refusing Herald's account is."""
    if isinstance(result, Sent):
        return "ok"
    if isinstance(result, (Retryable, ProviderRejected)):
        return "fail"
    return "neutral"


def observe(b: Breaker, seen: list[Observation], now_ms: int, cfg: DeliverConfig) -> Breaker:
    for o in seen:
        if o == "neutral":
            continue
        if b.state == "closed":
            if o == "ok":
                if b.failures:   # a healthy provider's 1000 'ok's of a chunk build no 1000 copies
                    b = replace(b, failures=0)
            elif b.failures + 1 >= cfg.breaker_failures:
                b = replace(b, state="open", failures=0, successes=0, opened_at_ms=now_ms)
            else:
                b = replace(b, failures=b.failures + 1)
        elif b.state == "half_open":
            if o == "fail":
                b = replace(b, state="open", successes=0, opened_at_ms=now_ms)
            elif b.successes + 1 >= cfg.breaker_close_after:
                b = replace(b, state="closed", failures=0, successes=0)
            else:
                b = replace(b, successes=b.successes + 1)
        # open: results of calls admitted before another worker opened it change nothing
    return b


def pause(b: Breaker, retry_after: float, now_ms: int) -> Breaker:
    return replace(b, paused_until_ms=max(b.paused_until_ms, now_ms + int(retry_after * 1000)))


# --- device tokens -------------------------------------------------------------
DeviceEffect = Literal["ok", "temp", "gone"]


def device_effects(tokens: list[str], results: list[Result]) -> list[tuple[str, DeviceEffect, int]]:
    """Per token: gone (deactivate now), temp (n temporary failures more) or ok (reset the count)."""
    agg: dict[str, tuple[DeviceEffect, int]] = {}
    for token, r in zip(tokens, results, strict=True):
        kind, n = agg.get(token, ("ok", 0))
        if kind == "gone":
            continue
        if isinstance(r, InvalidToken):
            agg[token] = ("gone", 0)
        elif isinstance(r, Retryable):
            agg[token] = ("temp", n + 1)
        elif isinstance(r, Sent):
            agg[token] = ("ok", 0)
    return [(t, k, n) for t, (k, n) in agg.items()]
