"""What the dead-letter topic holds, by stage and reason, read incrementally (each record once).

The census reads the DLQ topic's headers from where it stopped (no consumer group, no commits) and counts each
dead letter under its ``herald-dlq-stage`` and ``herald-dlq-error-class``. It follows the topic's content:

- records the broker's retention removed (the partition's earliest offset moved on) are no longer counted;
- a dead letter that was replayed and failed again is counted once: the newer copy names the older one in
  ``herald-replay-of`` (``partition:offset``), and the older one stops counting;
- a dead letter replayed with success stays in the topic (Kafka keeps it) and so stays counted until retention
  removes it: the topic does not say which replays succeeded.

Memory: 4 bytes per retained dead letter (one reason code per offset).
"""
from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import cast

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from infra.kafka import dead_letters as h
from infra.kafka.consumer import watermarks

_NONE = -1                         # a gap, or a superseded dead letter

Reason = tuple[str, str]           # (stage, error class)


@dataclass
class _Partition:
    base: int                                       # offset of codes[0]
    codes: array[int] = field(default_factory=lambda: array("i"))

    @property
    def next(self) -> int:
        return self.base + len(self.codes)


class DlqTally:
    """The pure part: dead letters by (stage, reason), per partition by offset."""

    def __init__(self) -> None:
        self._parts: dict[int, _Partition] = {}
        self._reasons: list[Reason] = []
        self._code: dict[Reason, int] = {}
        self._superseded_ahead: set[tuple[int, int]] = set()   # named by a replay before this census read them
        self.counts: Counter[Reason] = Counter()

    def next_offset(self, partition: int) -> int | None:
        p = self._parts.get(partition)
        return p.next if p is not None else None

    def add(self, partition: int, offset: int, reason: Reason, replay_of: tuple[int, int] | None = None) -> None:
        p = self._parts.setdefault(partition, _Partition(offset))
        if offset < p.next:
            return   # read before
        p.codes.extend([_NONE] * (offset - p.next))
        code = _NONE
        if (partition, offset) in self._superseded_ahead:
            self._superseded_ahead.discard((partition, offset))
        else:
            code = self._code.setdefault(reason, len(self._reasons))
            if code == len(self._reasons):
                self._reasons.append(reason)
            self.counts[reason] += 1
        p.codes.append(code)
        if replay_of is not None:
            self._supersede(*replay_of)

    def _supersede(self, partition: int, offset: int) -> None:
        p = self._parts.get(partition)
        if p is None or offset >= p.next:
            self._superseded_ahead.add((partition, offset))
        elif offset >= p.base and (code := p.codes[offset - p.base]) != _NONE:
            self.counts[self._reasons[code]] -= 1
            p.codes[offset - p.base] = _NONE

    def trim(self, partition: int, low: int) -> None:
        """The broker removed the partition's offsets below ``low``."""
        self._superseded_ahead = {(q, o) for q, o in self._superseded_ahead if q != partition or o >= low}
        p = self._parts.get(partition)
        if p is None:
            self._parts[partition] = _Partition(low)
            return
        if low <= p.base:
            return
        cut = min(low - p.base, len(p.codes))
        for code in p.codes[:cut]:
            if code != _NONE:
                self.counts[self._reasons[code]] -= 1
        del p.codes[:cut]
        p.base = low

    def by_reason(self) -> dict[Reason, int]:
        """Every (stage, reason) seen, 0 when none is left."""
        return {r: self.counts[r] for r in self._reasons}


def parse_coord(text: str | None) -> tuple[int, int] | None:
    """``"2:17"`` → ``(2, 17)``; anything else → None."""
    part, sep, off = (text or "").partition(":")
    return (int(part), int(off)) if sep and part.isdigit() and off.isdigit() else None


def _header(m: Message, name: str) -> str | None:
    for k, v in cast(list[tuple[str, bytes | None]], m.headers() or []):
        if k == name:
            return v.decode("utf-8", "replace") if v is not None else None
    return None


class DlqCensus:
    """Reads the DLQ topic from where the last ``update`` stopped; ``tally`` holds the counts."""

    def __init__(self, consumer: Consumer, topic: str, max_records: int = 100_000) -> None:
        self.consumer = consumer   # a consumer of its own: assigned partitions, never commits
        self.topic = topic
        self.max_records = max_records
        self.tally = DlqTally()

    def update(self, timeout: float = 10.0) -> int:
        """Read what is new (at most ``max_records``), forget what retention removed; returns the records read."""
        meta = self.consumer.list_topics(self.topic, timeout=timeout).topics.get(self.topic)
        if meta is None or meta.error is not None:
            return 0
        ends: dict[int, int] = {}
        starts: list[TopicPartition] = []
        for p in sorted(meta.partitions):
            low, high = watermarks(self.consumer, TopicPartition(self.topic, p), timeout)
            self.tally.trim(p, low)
            start = max(low, self.tally.next_offset(p) or low)
            if high > start:
                ends[p] = high
                starts.append(TopicPartition(self.topic, p, start))
        if not starts:
            return 0
        self.consumer.assign(starts)
        read = empty = 0
        try:
            while ends and read < self.max_records and empty < 3:
                msgs = self.consumer.consume(min(1000, self.max_records - read), timeout)
                empty = 0 if msgs else empty + 1
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            raise RuntimeError(f"reading {self.topic}: {err}")
                        continue
                    p, off = cast(int, m.partition()), cast(int, m.offset())
                    read += 1
                    reason = (_header(m, h.STAGE) or "?", _header(m, h.ERROR_CLASS) or "?")
                    self.tally.add(p, off, reason, parse_coord(_header(m, h.REPLAY_OF)))
                    if off + 1 >= ends.get(p, 0):
                        ends.pop(p, None)
        finally:
            self.consumer.unassign()
        return read
