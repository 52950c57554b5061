"""Dead letters (DESIGN.md §5): the original key, value and headers untouched, the why added as headers."""
from __future__ import annotations

from dataclasses import dataclass

from streams.records import TRACE, InRecord, OutRecord, now_ms

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

STAGES = ("decode", "route", "render", "deliver", "retry", "status")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Why a record is dead; ``error_class`` is the reason an SRE filters on (e.g. ``no_route``)."""

    stage: str
    error_class: str
    error: str
    attempts: int = 1
    first_failure_ms: int | None = None


def dead_letter(rec: InRecord, why: DeadLetter, dlq_topic: str) -> OutRecord:
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
    return OutRecord(dlq_topic, rec.key, rec.value or b"", kept + [(k, v.encode()) for k, v in added])
