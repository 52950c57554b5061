"""Framework-free Kafka records: what agents read and what they write.

Stage functions and handlers see these, never Faust events, so they are
testable without a broker and the runtime under them could change.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

Headers = list[tuple[str, bytes]]

TRACE = "herald-trace-id"
ATTEMPT = "herald-attempt"
ORIGIN = "herald-origin-topic"


@dataclass(slots=True)
class InRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = field(default_factory=list)
    timestamp_ms: int = 0

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode("utf-8", "replace") if v is not None else None
        return None

    @property
    def trace_id(self) -> str:
        return self.header(TRACE) or f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(slots=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes
    headers: Headers = field(default_factory=list)

    @property
    def size(self) -> int:
        return record_size(self.key, self.value, self.headers)


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """What a record weighs against librdkafka's ``message.max.bytes``: key, value and headers."""
    return len(key or b"") + len(value or b"") + sum(len(k) + len(v or b"") for k, v in headers)


def new_trace_id() -> str:
    return uuid.uuid4().hex


def now_ms() -> int:
    return int(time.time() * 1000)


def set_header(headers: Headers, name: str, value: str) -> Headers:
    """A copy of ``headers`` with ``name`` set to ``value`` (replacing earlier values)."""
    return [(k, v) for k, v in headers if k != name] + [(name, value.encode())]
