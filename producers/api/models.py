"""Request and response bodies (the OpenAPI spec is generated from these)."""
from __future__ import annotations

import re
from datetime import datetime, time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from infra.settings import CHANNELS
from producers.api import validation

ID = r"^[A-Za-z0-9._:@+\-]{1,200}$"
ID_RE = re.compile(ID)


def unknown_channel(name: str) -> str:
    return f"unknown channel (known: {', '.join(CHANNELS)})"


def without_value(problem: str, value: str) -> str:
    """A validation message without the (quoted, cut) value it echoes: errors name the field, never the input."""
    for n in (80, 64, 40):
        problem = problem.replace(f"'{value[:n]}'", "the value")
    return problem


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


PROFILE_CHECKS = {
    "email": validation.email_problem,
    "phone": validation.phone_problem,
    "locale": validation.locale_problem,
    "time_zone": validation.time_zone_problem,
}


def check_profile(model: BaseModel, prefix: str = "") -> None:
    """Raise ValueError naming the first profile field (email, phone, locale, time zone) that is set and invalid."""
    for name, check in PROFILE_CHECKS.items():
        value = getattr(model, name)
        if value is not None and (problem := check(value)):
            raise ValueError(f"{prefix}{name}: {without_value(problem, value)}")


class InlineRecipient(Strict):
    """Addresses for a user Herald does not store (a stored user's profile and preferences win)."""

    email: str | None = Field(None, max_length=254)
    phone: str | None = Field(None, max_length=16)
    push_tokens: list[str] = Field(default_factory=list, max_length=20, description="FCM registration tokens")
    locale: str | None = Field(None, max_length=20)
    time_zone: str | None = Field(None, max_length=64)
    first_name: str | None = Field(None, max_length=100)

    @model_validator(mode="after")
    def _valid(self) -> InlineRecipient:
        check_profile(self, "recipient.")
        for i, token in enumerate(self.push_tokens):
            if problem := validation.push_token_problem("android", token):
                raise ValueError(f"recipient.push_tokens[{i}]: {without_value(problem, token)}")
        if not (self.email or self.phone or self.push_tokens):
            raise ValueError("recipient needs an email, a phone or a push token")
        return self


class NotificationRequest(Strict):
    """Mirrors the Avro record ``herald.NotificationRequested`` (the id and time are added by the API)."""

    user_id: str = Field(pattern=ID, description="the recipient")
    template: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._\-]+$", description="template code")
    channels: list[str] = Field(min_length=1, max_length=3, description="email, sms and/or push")
    category: str = Field("transactional", pattern=r"^[a-z][a-z0-9_]{0,49}$")
    variables: dict[str, Any] = Field(default_factory=dict, description="template variables")
    send_at: datetime | None = Field(None, description="deliver at this time (ISO 8601 with offset) instead of now")
    ttl_seconds: int | None = Field(None, ge=1, le=30 * 24 * 3600, description="drop when not sent within this time")
    recipient: InlineRecipient | None = Field(
        None, description="addresses for a user Herald does not store; without it an unknown user_id is a 422 unknown_user"
    )
    cancellation_key: str | None = Field(
        None, min_length=1, max_length=512, pattern=r"^[^\x00]+$",
        description="POST /v1/cancellations with this key cancels the notification while it waits (send_at, quiet "
                    "hours, a retry)")

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, v: list[str]) -> list[str]:
        for c in v:
            if c not in CHANNELS:
                raise ValueError(unknown_channel(c))
        if len(set(v)) != len(v):
            raise ValueError("a channel is listed twice")
        return v

    @field_validator("send_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("send_at needs a UTC offset (like 2030-01-01T09:00:00+01:00)")
        if v is not None and not (1970 <= v.year <= 9000):
            raise ValueError("send_at is out of range")
        return v


class NotificationAccepted(BaseModel):
    id: str = Field(description="the notification id (the event id of the NotificationRequested record)")
    status: str = "accepted"
    trace_id: str = Field(description="the trace id the notification carries (also the X-Trace-Id header)")


class HistoryEntry(BaseModel):
    status: str
    channel: str | None
    reason: str | None
    delivery_id: str | None
    provider_message_id: str | None
    at: datetime


class NotificationView(BaseModel):
    id: str
    event_id: str
    event_type: str
    user_id: str
    template: str | None
    category: str | None
    campaign_id: str | None
    status: str
    reason: str | None
    created_at: datetime
    updated_at: datetime
    trace_id: str | None = Field(None, description="the trace id the notification was accepted with (its log lines carry "
                                                   "it); null for notifications stored before trace ids were")
    history: list[HistoryEntry] = []


class NotificationPage(BaseModel):
    items: list[NotificationView]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page; null on the last page")


class CampaignView(BaseModel):
    id: str
    status: str
    template: str
    category: str
    channels: list[str]
    total: int
    produced: int
    in_flight: int = Field(description="produced, not yet given a status by the workers")
    sent: int = Field(description="reached a provider (including delivered, opened, bounced)")
    delivered: int
    bounced: int = Field(description="of the sent, bounced")
    suppressed: dict[str, int] = Field(description="'status: reason' → count")
    rate_limited: int
    failed: int
    dead_lettered: int
    canceled: int
    pending: dict[str, int]
    finished: int = Field(description="at an end: sent, suppressed, rate-limited, failed, dead-lettered or canceled")
    progress: float = Field(description="share of the recipients whose notification is at an end (finished / total), 0 to 1")
    canceled_at: datetime | None
    send_at: datetime | None
    rate_per_minute: int | None = Field(None, description="the campaign's pace, messages a minute (null: unpaced)")
    send_window: str | None = Field(None, description="the send window in each recipient's zone; recipients waiting "
                                                      "for it are counted in pending.deferred")
    created_at: datetime
    finished_at: datetime | None
    error: str | None


class UserUpdate(Strict):
    """Fields present are set (null clears an address); fields absent keep their value."""

    email: str | None = Field(None, max_length=254)
    phone: str | None = Field(None, max_length=16)
    locale: str | None = Field(None, max_length=20)
    time_zone: str | None = Field(None, max_length=64)
    first_name: str | None = Field(None, max_length=100)

    @model_validator(mode="after")
    def _valid(self) -> UserUpdate:
        check_profile(self)
        for name in ("locale", "time_zone"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class UserView(BaseModel):
    id: str
    email: str | None
    phone: str | None
    locale: str
    time_zone: str
    first_name: str | None
    email_undeliverable: bool
    phone_undeliverable: bool
    updated_at: datetime
    tenant: str | None = Field(None, description="the tenant of the API key that created the user (null: none)")


class ErasureView(BaseModel):
    """What ``DELETE /v1/users/{id}`` erased; the notifications stay as anonymous counts."""

    user_id: str
    profile_deleted: bool = Field(description="a stored profile (with its devices and preferences) was deleted")
    notifications_anonymised: int = Field(description="notifications kept for counts, no longer linked to the user")
    deliveries_anonymised: int = Field(description="delivery ledger rows whose address was erased")
    devices_deleted: int
    scheduled_deleted: int = Field(description="notifications due later that will not be sent")


class Preferences(Strict):
    muted: bool = Field(False, description="mute everything except critical categories (security)")
    channels: dict[str, bool] = Field(default_factory=dict, description='e.g. {"sms": false}; absent means allowed')
    categories: dict[str, bool] = Field(default_factory=dict, description='e.g. {"marketing": false}')
    quiet_start: time | None = Field(None, description="start of quiet hours in the user's time zone (HH:MM)")
    quiet_end: time | None = Field(None, description="end of quiet hours (HH:MM)")

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: dict[str, bool]) -> dict[str, bool]:
        for c in v:
            if c not in CHANNELS:
                raise ValueError(unknown_channel(c))
        return v

    @field_validator("categories")
    @classmethod
    def _categories(cls, v: dict[str, bool]) -> dict[str, bool]:
        for c in v:
            if not re.match(r"^[a-z][a-z0-9_]{0,49}$", c):
                raise ValueError("a category name is lower-case letters, digits and _ (up to 50, starting with a letter)")
        if len(v) > 100:
            raise ValueError("at most 100 categories")
        return v

    @model_validator(mode="after")
    def _quiet(self) -> Preferences:
        if (self.quiet_start is None) != (self.quiet_end is None):
            raise ValueError("quiet_start and quiet_end go together")
        for t in (self.quiet_start, self.quiet_end):
            if t is not None and t.tzinfo is not None:
                raise ValueError("quiet hours are local times in the user's time zone: no UTC offset")
        return self


class DeviceIn(Strict):
    token: str = Field(min_length=1, max_length=4096)
    platform: str = Field(description="android, ios or web")

    @model_validator(mode="after")
    def _token(self) -> DeviceIn:
        if problem := validation.push_token_problem(self.platform, self.token):
            raise ValueError(without_value(problem, self.platform))
        return self


class DeviceView(BaseModel):
    token: str
    platform: str
    active: bool
