"""What the sandbox providers share: the inbox they record into and the faults they inject.

Everything runs on the sandbox's one event loop, so no locks are needed.
"""
from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

PROVIDERS = ("sendgrid", "smtp", "twilio", "fcm", "apns")
CHANNEL_OF = {"sendgrid": "email", "smtp": "email", "twilio": "sms", "fcm": "push", "apns": "push"}


@dataclass
class Faults:
    """Faults of one provider. Counts (``rate_limit``, ``storm``) apply to the next N requests; -1 means until cleared."""

    error_rate: float = 0.0          # fraction of requests answered ``error_status``
    error_status: int = 500
    latency_ms: float = 0.0          # added to every request
    rate_limit: int = 0              # next N requests → 429 with Retry-After
    retry_after: float = 1.0
    storm: int = 0                   # next N requests → 503 (-1: until cleared)
    unregistered_tokens: list[str] = field(default_factory=list)   # FCM: UNREGISTERED; APNs: 410 Unregistered
    bad_tokens: list[str] = field(default_factory=list)            # APNs: 400 BadDeviceToken
    expired_provider_token: int = 0  # APNs: next N requests → 403 ExpiredProviderToken (-1: until cleared)
    invalid_numbers: list[str] = field(default_factory=list)       # Twilio: 21211
    undelivered_numbers: list[str] = field(default_factory=list)   # Twilio: accepted, then the callbacks end 'undelivered'
    refused_accounts: list[str] = field(default_factory=list)      # Twilio: 401 code 20003 for these account SIDs
    invalid_addresses: list[str] = field(default_factory=list)     # SendGrid 400 / SMTP 550
    hold: list[str] = field(default_factory=list)   # a request naming one of these waits until released

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


@dataclass
class Verdict:
    """What the fault injector decided for one request."""

    status: int = 0            # 0: go on normally
    retry_after: float | None = None


LATER = "_parse"   # a message's fields still to be parsed from what the provider received


class SandboxState:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.twilio_auth_token = "sandbox-token"   # what the sandbox's Twilio signs its status callbacks with
        self.background: set[asyncio.Task[None]] = set()   # callbacks in flight (a task needs a reference)
        self.requests: dict[str, int] = dict.fromkeys(PROVIDERS, 0)
        self.faults: dict[str, Faults] = {p: Faults() for p in PROVIDERS}
        self.held = 0
        self._release: asyncio.Event | None = None
        self._rng = random.Random()

    # --- recording ---------------------------------------------------------
    def record(self, provider: str, message: dict[str, Any],
               later: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
        """Keep a received message; ``later`` adds the fields that are costly to parse when the message is first read."""
        message = {"channel": CHANNEL_OF[provider], "provider": provider, "received_at": time.time(), **message}
        if later is not None:
            message[LATER] = later
        self.messages.append(message)
        return message

    def inbox(self, channel: str | None = None, to: str | None = None, envelope: bool = False) -> list[dict[str, Any]]:
        """The messages to ``channel`` and ``to``; ``envelope``: without parsing (channel, provider, to, times)."""
        found = [m for m in self.messages
                 if (channel is None or m["channel"] == channel) and (to is None or m.get("to") == to)]
        if envelope:
            return [{k: v for k, v in m.items() if k != LATER} for m in found]
        for m in found:
            if LATER in m:
                m.update(m.pop(LATER)())
        return found

    def count(self, channel: str | None = None, to: str | None = None) -> int:
        if channel is None and to is None:
            return len(self.messages)
        return sum(1 for m in self.messages if (channel is None or m["channel"] == channel) and (to is None or m.get("to") == to))

    def clear(self) -> None:
        self.messages.clear()
        for p in PROVIDERS:
            self.requests[p] = 0

    # --- faults ------------------------------------------------------------
    def set_faults(self, provider: str, changes: dict[str, Any]) -> Faults:
        if provider not in self.faults:
            raise ValueError(f"unknown provider {provider!r}; known: {', '.join(PROVIDERS)}")
        unknown = set(changes) - Faults.names()
        if unknown:
            raise ValueError(f"unknown fault(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(Faults.names()))}")
        merged = {**asdict(self.faults[provider]), **changes}
        self.faults[provider] = Faults(**merged)
        if not merged["hold"]:
            self.release()
        return self.faults[provider]

    def clear_faults(self) -> None:
        self.faults = {p: Faults() for p in PROVIDERS}
        self.release()

    def release(self) -> None:
        if self._release is not None:
            self._release.set()
            self._release = None

    def faults_view(self) -> dict[str, dict[str, Any]]:
        return {p: asdict(f) for p, f in self.faults.items()}

    async def enter(self, provider: str, addresses: list[str]) -> Verdict:
        """Count the request, wait for latency and holds, then decide its fault (if any)."""
        self.requests[provider] += 1
        f = self.faults[provider]
        if f.latency_ms > 0:
            await asyncio.sleep(f.latency_ms / 1000)
        if f.hold and any(a in f.hold for a in addresses):
            await self._wait_release(provider, addresses)
            f = self.faults[provider]
        if f.storm:
            if f.storm > 0:
                f.storm -= 1
            return Verdict(503)
        if f.rate_limit:
            if f.rate_limit > 0:
                f.rate_limit -= 1
            return Verdict(429, f.retry_after)
        if f.error_rate > 0 and self._rng.random() < f.error_rate:
            return Verdict(f.error_status)
        return Verdict()

    async def _wait_release(self, provider: str, addresses: list[str]) -> None:
        self.held += 1
        try:
            for _ in range(6000):  # bounded: at most ten minutes
                if not any(a in self.faults[provider].hold for a in addresses):
                    return
                if self._release is None:
                    self._release = asyncio.Event()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._release.wait(), 0.1)
        finally:
            self.held -= 1


def new_id(prefix: str = "") -> str:
    return prefix + uuid.uuid4().hex
