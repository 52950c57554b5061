"""Opaque keyset-pagination cursors for a user's notification history: (created_at, id)."""
from __future__ import annotations

import base64
import binascii
from datetime import datetime


class CursorError(ValueError):
    pass


def encode_cursor(created_at: datetime, notification_id: str) -> str:
    raw = f"{created_at.isoformat()}|{notification_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, sep, nid = raw.partition("|")
        if not sep or not nid:
            raise ValueError("no separator")
        if "\x00" in raw:  # a forged cursor must not carry a NUL byte into SQL (PostgreSQL text refuses it)
            raise ValueError("NUL byte")
        when = datetime.fromisoformat(at)
        if when.tzinfo is None:
            raise ValueError("naive time")
        return when, nid
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise CursorError("cursor is not one this API returned (use next_cursor from the previous page)") from exc
