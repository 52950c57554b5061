"""The sandbox providers for tests: a fixture running them on free ports, and Delivery builders."""
from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from infra.kafka.records import TRACE, OutRecord, now_ms
from infra.settings import Settings
from infra.tools.sandbox.server import RunningSandbox, running_sandbox, with_free_ports
from schemas.codec import Codec


@pytest.fixture
def sandbox(topics: Settings) -> Iterator[RunningSandbox]:
    """The sandbox on free ports; ``sandbox.settings`` are the test's settings pointing at it."""
    with running_sandbox(with_free_ports(topics)) as sb:
        yield sb


@pytest.fixture
def bare_sandbox() -> Iterator[RunningSandbox]:
    """The sandbox on free ports, without Kafka topics (unit tests of the sinks)."""
    with running_sandbox(with_free_ports(Settings(metrics_port=0))) as sb:
        yield sb


def delivery(channel: str = "email", address: str | None = None, **over: Any) -> dict[str, Any]:
    event_id = over.pop("event_id", uuid.uuid4().hex)
    address = address or {"email": f"{event_id[:8]}@example.org", "sms": "+4366012345678",
                          "push": f"tok-{event_id}"}[channel]
    d: dict[str, Any] = {
        "delivery_id": hashlib.sha256(f"{event_id}|{channel}|{address}".encode()).hexdigest()[:32],
        "notification_id": f"n-{event_id}",
        "event_id": event_id,
        "event_type": "PasswordResetRequested",
        "user_id": over.pop("user_id", "u-1"),
        "channel": channel,
        "lane": "interactive",
        "category": "security",
        "address": address,
        "template": "password_reset",
        "template_version": 1,
        "locale": "en",
        "subject": "Reset your password" if channel == "email" else None,
        "text": f"Your code is {event_id[:6]}",
        "html": f"<p>Your code is <b>{event_id[:6]}</b></p>" if channel == "email" else None,
        "push_title": "Security" if channel == "push" else None,
        "push_data": {"kind": "reset"} if channel == "push" else {},
        "sms_segments": 1 if channel == "sms" else 0,
        "campaign_id": None,
        "occurred_at": now_ms(),
        "expires_at": None,
        "attempt": 0,
        "first_failure_at": None,
        "last_error": None,
    }
    d.update(over)
    return d


def delivery_record(codec: Codec, topic: str, d: dict[str, Any]) -> OutRecord:
    return OutRecord(topic, d["user_id"].encode(), codec.encode("Delivery", d), [(TRACE, d["event_id"].encode())])
