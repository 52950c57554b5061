"""Pure: an accepted request → the ``NotificationRequested`` record, and the body hash idempotency compares."""
from __future__ import annotations

import hashlib
import json
from typing import Any

from producers.api.models import NotificationRequest


def body_hash(body: NotificationRequest) -> str:
    """The same request hashes the same however its JSON was spelled (key order, spacing, time offsets)."""
    canonical = body.model_dump(mode="json")
    if body.send_at is not None:
        canonical["send_at"] = int(body.send_at.timestamp() * 1000)
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def to_record(body: NotificationRequest, notification_id: str, now_ms: int) -> dict[str, Any]:
    return {
        "event_id": notification_id,
        "occurred_at": now_ms,
        "user_id": body.user_id,
        "template": body.template,
        "channels": list(body.channels),
        "category": body.category,
        "variables_json": json.dumps(body.variables, separators=(",", ":"), ensure_ascii=False),
        "send_at": int(body.send_at.timestamp() * 1000) if body.send_at is not None else None,
        "ttl_seconds": body.ttl_seconds,
        "recipient": body.recipient.model_dump() if body.recipient is not None else None,
        "cancellation_key": body.cancellation_key,
    }
