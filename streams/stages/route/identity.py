"""Stable identities: the delivery id (the deliver stage's ledger key) and the de-duplication claim's origin."""
from __future__ import annotations

import hashlib
from typing import Literal

# what the de-duplication fast path says of a claim: taken now, taken by this very record before, or another's
ClaimState = Literal["new", "mine", "duplicate"]


def delivery_id(event_id: str, channel: str, address: str) -> str:
    """Hex hash of (event id, channel, address): the same message to the same address has the same id."""
    return hashlib.sha256(f"{event_id}\x1f{channel}\x1f{address}".encode()).hexdigest()[:32]


def claim_origin(topic: str, partition: int, offset: int) -> str:
    """Who claimed an (event, channel): the Kafka position of the record.

    A record redelivered after a crash (same position) finds its own claim and
    goes on; the same event id at another position is a duplicate.
    """
    return f"{topic}:{partition}:{offset}"


def classify_claim(previous: bytes | str | None, origin: str) -> ClaimState:
    """Redis ``SET NX GET`` result → "new" (claimed now), "mine" (claimed by this record before) or "duplicate".

    ``None`` or empty: the key did not exist (the claim script returns "" for nil).
    """
    if not previous:
        return "new"
    if isinstance(previous, bytes):
        previous = previous.decode("utf-8", "replace")
    return "mine" if previous == origin else "duplicate"
