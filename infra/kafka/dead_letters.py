"""Dead letters (DESIGN.md §5): the original key, value and headers untouched, the why added as headers."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from infra.kafka.records import TRACE, Headers, InRecord, OutRecord, now_ms, record_size

PREFIX = "herald-dlq-"
ORIGIN_TOPIC = PREFIX + "origin-topic"
ORIGIN_PARTITION = PREFIX + "origin-partition"
ORIGIN_OFFSET = PREFIX + "origin-offset"
STAGE = PREFIX + "stage"
ERROR_CLASS = PREFIX + "error-class"
ERROR_TEXT = PREFIX + "error"
ATTEMPTS = PREFIX + "attempts"
FIRST_FAILURE = PREFIX + "first-failure-ms"
FAILED_AT = PREFIX + "failed-at-ms"
REPLAYS = PREFIX + "replays"
# set by `herald dlq replay` on a record it sends back: "partition:offset" of the dead letter it came from
REPLAY_OF = "herald-replay-of"
# set on a dead letter cut to fit the broker's limit: what was kept is a prefix, never replayable as it is
TRUNCATED = PREFIX + "truncated"
VALUE_BYTES = PREFIX + "value-bytes"
VALUE_SHA256 = PREFIX + "value-sha256"
HEADERS_DROPPED = PREFIX + "headers-dropped"

DEFAULT_MAX_BYTES = 1_000_000

STAGES = ("decode", "route", "render", "deliver", "retry", "status")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Why a record is dead; ``error_class`` is the reason an SRE filters on (e.g. ``no_route``)."""

    stage: str
    error_class: str
    error: str
    attempts: int = 1
    first_failure_ms: int | None = None


def dead_letter(rec: InRecord, why: DeadLetter, dlq_topic: str, max_bytes: int = DEFAULT_MAX_BYTES) -> OutRecord:
    """Build the DLQ record for ``rec``.

    A replayed dead letter that fails again keeps its replay count
    (``herald-dlq-replays``) and ``herald-replay-of`` (set by
    ``herald dlq replay``); earlier why-headers are replaced. The origin is
    always the topic the record failed on: a replayed record that gets further
    and fails in a later stage must be replayed to that later stage.
    """
    kept = [(k, v) for k, v in rec.headers if not k.startswith(PREFIX) or k in (REPLAYS,)]
    origin_topic = rec.topic
    now = now_ms()
    added = [
        (ORIGIN_TOPIC, origin_topic),
        (ORIGIN_PARTITION, str(rec.partition)),
        (ORIGIN_OFFSET, str(rec.offset)),
        (STAGE, why.stage),
        (ERROR_CLASS, why.error_class),
        (ERROR_TEXT, why.error[:2000]),
        (ATTEMPTS, str(why.attempts)),
        (FIRST_FAILURE, str(why.first_failure_ms or now)),
        (FAILED_AT, str(now)),
    ]
    if rec.header(TRACE) is None:
        added.append((TRACE, rec.trace_id))
    headers = kept + [(k, v.encode()) for k, v in added]
    value = rec.value or b""
    if record_size(rec.key, value, headers) <= max_bytes:
        return OutRecord(dlq_topic, rec.key, value, headers)
    return _cut_to_fit(dlq_topic, rec, value, headers, max_bytes)


def _cut_to_fit(dlq_topic: str, rec: InRecord, value: bytes, headers: Headers, max_bytes: int) -> OutRecord:
    """A dead letter over the broker's limit keeps its why, the trace, a prefix of the value, its length and hash.

    Headers go first when they alone are too big (keeping Herald's own); then the value is cut.
    """
    budget = max_bytes - 256  # the markers below
    key = rec.key if rec.key is None or len(rec.key) <= budget // 8 else rec.key[: budget // 8]
    ours = [(k, v) for k, v in headers if k.startswith(PREFIX) or k == TRACE]
    theirs = [(k, v) for k, v in headers if not (k.startswith(PREFIX) or k == TRACE)]
    dropped = 0
    while theirs and record_size(key, b"", ours + theirs) > budget // 2:
        theirs.remove(max(theirs, key=lambda h: len(h[0]) + len(h[1] or b"")))
        dropped += 1
    kept = theirs + ours
    room = max(0, budget - record_size(key, b"", kept))
    markers = [(TRUNCATED, b"1"), (VALUE_BYTES, str(len(value)).encode()),
               (VALUE_SHA256, hashlib.sha256(value).hexdigest().encode())]
    if dropped:
        markers.append((HEADERS_DROPPED, str(dropped).encode()))
    return OutRecord(dlq_topic, key, value[:room], kept + markers)
