"""Pure pieces of the scheduler: a stored ``scheduled`` row → the Kafka record to publish, and the backoff of a row Kafka refused.

``scheduled.headers`` holds the record's Kafka headers as JSON: an object
``{"name": "text value"}`` (what the route stage writes) or a list of
``[name, value]`` pairs when a name repeats. Values are text (Herald's headers
are trace ids, attempt counts and timestamps); ``null`` means a header without
a value.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infra.kafka.records import TRACE, Headers, OutRecord


class BadRow(ValueError):
    """A scheduled row that can never be published as stored (no topic, headers not JSON pairs)."""


@dataclass(frozen=True, slots=True)
class DueRow:
    id: int
    topic: str
    key: bytes | None
    value: bytes
    headers: Any


def headers_from_json(stored: Any) -> Headers:
    if stored is None:
        return []
    if isinstance(stored, dict):
        pairs = list(stored.items())
    elif isinstance(stored, list):
        pairs = []
        for item in stored:
            if not (isinstance(item, (list, tuple)) and len(item) == 2):
                raise BadRow(f"header {item!r} is not a [name, value] pair")
            pairs.append((item[0], item[1]))
    else:
        raise BadRow(f"headers must be a JSON object or a list of pairs, not {type(stored).__name__}")
    out: Headers = []
    for name, value in pairs:
        if not isinstance(name, str) or not name:
            raise BadRow(f"header name {name!r} is not a non-empty string")
        if value is not None and not isinstance(value, str):
            value = str(value)
        out.append((name, value.encode() if value is not None else None))  # type: ignore[arg-type]
    return out


def to_record(row: DueRow) -> OutRecord:
    """The record exactly as stored: same topic, key, value and headers."""
    if not row.topic:
        raise BadRow("row has no topic")
    if row.value is None:
        raise BadRow("row has no value")
    return OutRecord(row.topic, bytes(row.key) if row.key is not None else None, bytes(row.value), headers_from_json(row.headers))


def retry_delay(attempts: int, base: float = 1.0, cap: float = 300.0) -> float:
    """Seconds until a row Kafka refused (``attempts`` refusals so far) is tried again: 1, 2, 4 … capped."""
    if attempts < 1:
        return base
    return min(cap, base * 2 ** (attempts - 1))


def row_trace(stored: Any) -> str | None:
    """The trace id in a row's stored headers (for its log lines); None when it has none or they do not parse."""
    try:
        return next((v.decode("utf-8", "replace") for k, v in headers_from_json(stored) if k == TRACE and v), None)
    except BadRow:
        return None
