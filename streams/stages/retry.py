"""The retry ladder as data, decided by one pure function.

attempt 1 fails → tier 0 (retry.1m); attempt 2 → tier 1 (retry.5m);
attempt 3 → tier 2 (retry.15m); attempt 4 → dead letter (status ``failed``).
"""
from __future__ import annotations

from dataclasses import dataclass

from infra.kafka.records import ATTEMPT, Headers, set_header
from infra.settings import Settings

DUE_HEADER = "herald-retry-due-ms"       # when the record may be attempted again (ms since epoch)
ORIGIN_HEADER = "herald-origin-topic"   # the deliver topic the record goes back to


@dataclass(frozen=True)
class Ladder:
    delays: tuple[float, ...]   # seconds, per tier
    topics: tuple[str, ...]     # topic per tier

    @classmethod
    def from_settings(cls, settings: Settings) -> Ladder:
        return cls(tuple(settings.retry_delays), tuple(settings.retry_topics))


@dataclass(frozen=True)
class Retry:
    topic: str
    tier: int
    due_ms: int


@dataclass(frozen=True)
class GiveUp:
    attempts: int


def next_step(ladder: Ladder, failed_attempts: int, failed_at_ms: int) -> Retry | GiveUp:
    """Where a delivery goes after its ``failed_attempts``-th failure (1-based), at ``failed_at_ms``.

    The delay counts from the failure, so the record is never due early.
    """
    if failed_attempts < 1:
        raise ValueError("failed_attempts counts failures and starts at 1")
    tier = failed_attempts - 1
    if tier >= len(ladder.delays):
        return GiveUp(failed_attempts)
    return Retry(ladder.topics[tier], tier, failed_at_ms + int(ladder.delays[tier] * 1000))


def held_headers(headers: Headers, due_ms: int, origin: str, attempt: int) -> Headers:
    """A record's headers for a retry tier: when it is due, the topic it goes back to, and its attempt count."""
    headers = set_header(headers, DUE_HEADER, str(due_ms))
    headers = set_header(headers, ORIGIN_HEADER, origin)
    return set_header(headers, ATTEMPT, str(attempt))
