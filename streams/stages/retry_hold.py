"""What a retry tier does with the records it has read from one partition, decided without I/O.

A tier topic holds failed deliveries in failure order, each stamped with the
time it may be attempted again (``herald-retry-due-ms``). The tier forwards
the due prefix of a partition to the record's origin (deliver) topic and
*holds* the partition at the first record not yet due: the consumer seeks
back to that record and pauses the partition until then. Nothing waiting is
kept in memory and the consumer keeps polling, so a rebalance is never
blocked; the committed offset is the held record, so its next owner resumes
there.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from infra.kafka.records import InRecord, OutRecord
from streams.stages.retry import DUE_HEADER, ORIGIN_HEADER


@dataclass(frozen=True, slots=True)
class Hold:
    offset: int   # first record not yet due: seek back here and pause
    due_ms: int   # resume the partition at this time


@dataclass(frozen=True, slots=True)
class Reject:
    rec: InRecord
    reason: str   # DLQ error class
    error: str


@dataclass(slots=True)
class PartitionPlan:
    forward: list[OutRecord] = field(default_factory=list)
    reject: list[Reject] = field(default_factory=list)
    hold: Hold | None = None
    commit_offset: int | None = None   # next offset to commit (None: nothing consumed)


def due_ms(rec: InRecord, delay_s: float) -> int:
    """When ``rec`` may be attempted again.

    The due header written by the deliver stage is authoritative; a record
    without a readable one falls back to its produce time (the failure) plus
    the tier's delay, so it is never early either way.
    """
    raw = rec.header(DUE_HEADER)
    if raw is not None:
        try:
            return int(raw)
        except ValueError:
            pass
    return rec.timestamp_ms + int(delay_s * 1000)


def plan_partition(
    records: Sequence[InRecord], now: int, delay_s: float, origins: Collection[str]
) -> PartitionPlan:
    """Split one partition's records (in offset order) into forward, reject and hold.

    Records after the first one not yet due are left alone: they are read
    again after the hold. ``origins`` are the topics a record may go back to;
    anything else (no header, a typo, a non-deliver topic) is rejected rather
    than produced to a topic that may not exist, which would stall the tier.
    """
    plan = PartitionPlan()
    for rec in records:
        due = due_ms(rec, delay_s)
        origin = rec.header(ORIGIN_HEADER)
        if origin is None:
            plan.reject.append(Reject(rec, "no_origin", f"record has no {ORIGIN_HEADER} header"))
        elif origin not in origins:
            plan.reject.append(Reject(rec, "bad_origin", f"{ORIGIN_HEADER} {origin!r} is not a deliver topic"))
        elif due > now:
            plan.hold = Hold(rec.offset, due)
            plan.commit_offset = rec.offset
            return plan
        else:
            # unchanged, headers included (the due header stays: it tells the
            # deliver stage when this attempt was allowed)
            plan.forward.append(OutRecord(origin, rec.key, rec.value or b"", list(rec.headers)))
        plan.commit_offset = rec.offset + 1
    return plan
