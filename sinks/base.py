"""The one protocol every provider sink speaks.

``send_batch`` takes ``schemas.records.Delivery`` objects and returns one result per delivery, in order: ``Sent`` or one of the
``sinks.errors`` exceptions *as a value*. Vendor exceptions are mapped onto
that taxonomy inside each sink module and never leave ``sinks/``. One
delivery's content (a header with CR/LF, a bad address, an oversized body) is
that delivery's own ``Permanent`` result, checked by ``sinks.content`` before
the call; it never fails the rest of the batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from schemas.records import Delivery
from schemas.vocabulary import Channel
from sinks.errors import DeliveryError


@dataclass(frozen=True, slots=True)
class Sent:
    provider_message_id: str


Result = Sent | DeliveryError


class Sink(Protocol):
    provider: str    # e.g. "sendgrid": names the circuit breaker and the metrics
    channel: Channel
    max_batch: int   # the most deliveries one send_batch call should get

    async def send_batch(self, deliveries: list[Delivery]) -> list[Result]:
        """Hand the deliveries to the provider; one result per delivery, never raises for a provider error
        or for one delivery's content."""
        ...

    async def close(self) -> None:
        ...


def parse_retry_after(value: str | None, default: float = 1.0) -> float:
    """Retry-After in seconds (the HTTP-date form is rare at these providers; treated as the default)."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        return default
