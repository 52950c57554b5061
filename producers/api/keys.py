"""API keys: ``hk_<prefix>_<secret>``; only the sha256 of the whole key is stored.

The prefix (8 characters) is stored in clear so that ``herald apikeys list``
can show which key is which without being able to use it.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum

KEY_PREFIX = "hk_"


class Scope(StrEnum):
    """What an API key may do (``api_keys.scopes``)."""

    SEND = "send"          # POST /v1/notifications
    READ = "read"          # GET notifications, users, devices, preferences
    ADMIN = "admin"        # create, change and erase users, their devices and preferences
    CRITICAL = "critical"  # pick a critical category (routes file ``critical_categories``, e.g. security)


DEFAULT_SCOPES = (Scope.SEND, Scope.READ, Scope.ADMIN)


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated API key: its id, scopes, tenant (None: every tenant) and own rate (None: the setting)."""

    key_id: int
    scopes: frozenset[Scope]
    tenant: str | None = None
    rate_limit: int | None = None

    @classmethod
    def from_row(cls, key_id: int, scopes: list[str], tenant: str | None, rate_limit: int | None) -> Caller:
        known = {s.value for s in Scope}
        return cls(key_id, frozenset(Scope(s) for s in scopes if s in known), tenant, rate_limit)


@dataclass(frozen=True, slots=True)
class NewKey:
    key: str     # shown once, never stored
    prefix: str
    key_hash: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> NewKey:
    prefix = secrets.token_hex(4)
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    return NewKey(key, prefix, hash_key(key))


def key_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """The presented key: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; None when absent or malformed."""
    candidate = None
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer":
            candidate = value.strip()
    elif x_api_key:
        candidate = x_api_key.strip()
    if not candidate or not candidate.startswith(KEY_PREFIX) or len(candidate) > 200:
        return None
    return candidate
