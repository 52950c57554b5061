"""Trace ids: Herald's own, an upstream ``X-Trace-Id``, or the trace-id of a W3C ``traceparent``.

A trace id travels with a notification in the Kafka header ``herald-trace-id`` (``infra.kafka.records.TRACE``),
is logged on every line about it (``infra.logs``) and stored with its status row. Herald makes its own as
``uuid4().hex``: 32 lowercase hex digits, the shape of a W3C trace-id, so a trace started here can be continued
by tools that speak W3C Trace Context.
"""
from __future__ import annotations

import re

from infra.kafka.records import new_trace_id

__all__ = ["TRACE_ID_PATTERN", "from_traceparent", "new_trace_id", "request_trace"]

TRACE_ID_PATTERN = r"^[A-Za-z0-9\-_.]{1,64}$"   # what X-Trace-Id may hold
_TRACE_ID_OK = re.compile(TRACE_ID_PATTERN)
# version-format: version "-" trace-id "-" parent-id "-" trace-flags (https://www.w3.org/TR/trace-context/#traceparent-header)
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_ZERO_TRACE, _ZERO_PARENT = "0" * 32, "0" * 16


def from_traceparent(value: str | None) -> str | None:
    """The trace-id of a valid W3C ``traceparent``; None for a missing or invalid one (which W3C says to ignore).

    Invalid: not the version-format, version ``ff``, an all-zero trace-id or parent-id, or (version 00) anything
    after the flags. A later version may append fields: its first four are read as version 00's.
    """
    if not value:
        return None
    m = _TRACEPARENT.match(value.strip())
    if m is None:
        return None
    version, trace, parent, _flags, rest = m.groups()
    if version == "ff" or trace == _ZERO_TRACE or parent == _ZERO_PARENT or (version == "00" and rest):
        return None
    return trace


def request_trace(x_trace_id: str | None, traceparent: str | None) -> str:
    """A request's trace id: its valid ``X-Trace-Id``, else its valid ``traceparent``'s trace-id, else a new one."""
    if x_trace_id and _TRACE_ID_OK.match(x_trace_id):
        return x_trace_id
    return from_traceparent(traceparent) or new_trace_id()
