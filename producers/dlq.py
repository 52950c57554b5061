"""Reading the dead-letter topic, and replaying a selection of it to where it came from.

Reading uses a private consumer: assigned partitions, no group membership,
no commits, from each partition's beginning up to its end offset *at the
start* (so a replay that fails again, landing in the DLQ meanwhile, is not
read back in the same run).

Replay sends a dead letter's original key, value and headers back to its
origin topic, with the why-headers (``herald-dlq-*``) removed and two added:
``herald-dlq-replays`` (how many times this record has been replayed; the
DLQ builder keeps it, so a record that fails again is marked with its count)
and ``herald-replay-of`` (``partition:offset`` of the dead letter it came
from). A dead letter some later dead letter names in ``herald-replay-of``
was already replayed and failed again, so it is skipped as *superseded*;
one whose count reached ``max_replays`` is skipped too: no loops. Replayed
deliveries pass the deliver stage's ledger, so nothing sent is sent twice.
"""
from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from infra.kafka import dead_letters as h
from infra.kafka.consumer import consumer, watermarks
from infra.kafka.producer import Producer
from infra.kafka.records import TRACE, Headers, OutRecord, now_ms
from infra.settings import Settings

REPLAY_OF = h.REPLAY_OF


class DlqError(RuntimeError):
    """The DLQ could not be read or written; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One dead letter as read from the DLQ topic."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Headers

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode("utf-8", "replace") if v is not None else None
        return None

    def _int(self, name: str, default: int) -> int:
        try:
            return int(self.header(name) or default)
        except ValueError:
            return default

    @property
    def coord(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def stage(self) -> str:
        return self.header(h.STAGE) or "?"

    @property
    def error_class(self) -> str:
        return self.header(h.ERROR_CLASS) or "?"

    @property
    def error(self) -> str:
        return self.header(h.ERROR_TEXT) or ""

    @property
    def origin_topic(self) -> str | None:
        return self.header(h.ORIGIN_TOPIC)

    @property
    def attempts(self) -> int:
        return self._int(h.ATTEMPTS, 1)

    @property
    def replays(self) -> int:
        return self._int(h.REPLAYS, 0)

    @property
    def failed_at_ms(self) -> int:
        return self._int(h.FAILED_AT, self.timestamp_ms)

    @property
    def first_failure_ms(self) -> int:
        return self._int(h.FIRST_FAILURE, self.failed_at_ms)

    @property
    def trace_id(self) -> str | None:
        return self.header(TRACE)

    @property
    def replay_of(self) -> str | None:
        return self.header(REPLAY_OF)

    @property
    def truncated(self) -> bool:
        return self.header(h.TRUNCATED) == "1"

    def summary(self) -> dict[str, object]:
        return {
            "coord": self.coord, "failed_at_ms": self.failed_at_ms, "stage": self.stage,
            "error_class": self.error_class, "error": self.error, "origin_topic": self.origin_topic,
            "origin_partition": self.header(h.ORIGIN_PARTITION), "origin_offset": self.header(h.ORIGIN_OFFSET),
            "attempts": self.attempts, "first_failure_ms": self.first_failure_ms, "replays": self.replays,
            "trace_id": self.trace_id, "key": self.key.decode("utf-8", "replace") if self.key is not None else None,
            "truncated": self.truncated, "value_bytes": self._int(h.VALUE_BYTES, len(self.value or b"")),
        }


@dataclass(frozen=True)
class Selection:
    """Which dead letters: every given criterion must hold (sets: any of)."""

    since_ms: int | None = None
    until_ms: int | None = None
    stages: frozenset[str] = frozenset()
    error_classes: frozenset[str] = frozenset()
    origin_topics: frozenset[str] = frozenset()
    limit: int | None = None

    def matches(self, e: Entry) -> bool:
        t = e.failed_at_ms
        return (
            (self.since_ms is None or t >= self.since_ms)
            and (self.until_ms is None or t < self.until_ms)
            and (not self.stages or e.stage in self.stages)
            and (not self.error_classes or e.error_class in self.error_classes)
            and (not self.origin_topics or e.origin_topic in self.origin_topics)
        )

    def apply(self, entries: Iterable[Entry]) -> Iterator[Entry]:
        n = 0
        for e in entries:
            if self.limit is not None and n >= self.limit:
                return
            if self.matches(e):
                n += 1
                yield e


_REL = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, now: int | None = None) -> int:
    """``2026-05-01T12:00`` (UTC unless an offset is given), ``2026-05-01``, or ``90m``/``2h``/``3d`` ago → ms."""
    text = text.strip()
    if m := _REL.match(text):
        return (now if now is not None else now_ms()) - int(float(m.group(1)) * _UNIT[m.group(2)] * 1000)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: use ISO 8601 (2026-05-01T12:00) or an age (90m, 2h, 3d)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def format_ms(ms: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def counts(entries: Iterable[Entry]) -> Counter[tuple[str, str]]:
    """Dead letters by (stage, reason)."""
    return Counter((e.stage, e.error_class) for e in entries)


# --- replay planning (pure) -------------------------------------------------

@dataclass
class ReplayPlan:
    records: list[tuple[Entry, OutRecord]] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)


def replay_record(e: Entry) -> OutRecord:
    """The record to send home: original key, value and headers, the why removed, the replay count up."""
    assert e.origin_topic is not None
    kept = [(k, v) for k, v in e.headers if not k.startswith(h.PREFIX) and k != REPLAY_OF]
    kept += [(h.REPLAYS, str(e.replays + 1).encode()), (REPLAY_OF, e.coord.encode())]
    return OutRecord(e.origin_topic, e.key, e.value or b"", kept)


def plan_replay(selected: Iterable[Entry], superseded: set[str], max_replays: int) -> ReplayPlan:
    plan = ReplayPlan()
    for e in selected:
        if e.coord in superseded:
            plan.skipped["superseded (replayed before, failed again: replay the newer one)"] += 1
        elif e.replays >= max_replays:
            plan.skipped[f"replay limit ({max_replays}) reached"] += 1
        elif not e.origin_topic:
            plan.skipped["no origin topic header"] += 1
        elif e.truncated:
            plan.skipped["cut to fit the broker's limit (only a prefix of the value is kept): not replayable"] += 1
        else:
            plan.records.append((e, replay_record(e)))
    return plan


# --- Kafka I/O ----------------------------------------------------------------

def _consumer(settings: Settings) -> Consumer:
    # never joins its group: assign() only
    return consumer(settings, f"{settings.app_id}-dlq-reader-{uuid.uuid4().hex[:8]}")


def _partitions(c: Consumer, topic: str, timeout: float) -> list[int]:
    try:
        md = c.list_topics(topic, timeout=timeout)
    except KafkaException as exc:
        raise DlqError(f"cannot reach Kafka at the bootstrap servers ({exc}); is the stack up (`herald stack up`)?") from exc
    t = md.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        raise DlqError(f"topic {topic} does not exist; check HERALD_TOPIC_PREFIX or run a worker once to create it")
    return sorted(t.partitions)


def scan(settings: Settings, timeout: float = 30.0) -> Iterator[Entry]:
    """Every dead letter present when the scan starts, partition by partition interleaved, in offset order each."""
    topic = settings.topic("dlq")
    c = _consumer(settings)
    try:
        ends: dict[int, int] = {}
        for p in _partitions(c, topic, timeout):
            low, high = watermarks(c, TopicPartition(topic, p), timeout)
            if high > low:
                ends[p] = high
                c.incremental_assign([TopicPartition(topic, p, low)])
        idle_since = time.monotonic()
        while ends:
            msgs = c.consume(500, 0.5)
            if not msgs and time.monotonic() - idle_since > timeout:
                raise DlqError(f"no progress reading {topic} for {timeout:.0f}s (partitions left: {sorted(ends)})")
            for m in msgs:
                if (err := m.error()) is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise DlqError(f"reading {topic}: {err}")
                p, off = _position(m)
                if p not in ends or off >= ends[p]:
                    continue
                idle_since = time.monotonic()
                ts = m.timestamp()[1]
                yield Entry(p, off, max(ts, 0), m.key(), m.value(), _headers(m))
                if off + 1 >= ends[p]:
                    del ends[p]
                    c.incremental_unassign([TopicPartition(topic, p)])
    finally:
        c.close()


def _position(m: Message) -> tuple[int, int]:
    """A consumed record's partition and offset: set on every message that is not an error event (the stubs say Optional)."""
    return cast(int, m.partition()), cast(int, m.offset())


def _headers(m: Message) -> Headers:
    """A consumed record's headers: a consumer gets (str, bytes) pairs (the stubs also allow a producer's dict form)."""
    return cast(Headers, list(m.headers() or []))


def fetch(settings: Settings, partition: int, offset: int, timeout: float = 30.0) -> Entry:
    """The one dead letter at ``partition:offset``."""
    topic = settings.topic("dlq")
    c = _consumer(settings)
    try:
        if partition not in _partitions(c, topic, timeout):
            raise DlqError(f"{topic} has no partition {partition}")
        low, high = watermarks(c, TopicPartition(topic, partition), timeout)
        if not low <= offset < high:
            raise DlqError(f"no record at {partition}:{offset}: partition {partition} holds offsets {low}..{high - 1}"
                           if high > low else f"no record at {partition}:{offset}: partition {partition} is empty")
        c.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            ts = m.timestamp()[1]
            return Entry(*_position(m), max(ts, 0), m.key(), m.value(), _headers(m))
        raise DlqError(f"timed out reading {partition}:{offset} from {topic}")
    finally:
        c.close()


def prepare_replay(settings: Settings, selection: Selection, max_replays: int, limit: int | None = None) -> ReplayPlan:
    """What a replay of ``selection`` would send (``herald dlq replay`` and the console both plan with this).

    Two scans: the first finds the dead letters a later one names in ``herald-replay-of`` (superseded), the second
    plans the selection; ``limit`` applies to what would really be sent, the rest is counted as skipped.
    """
    superseded = {e.replay_of for e in scan(settings) if e.replay_of}
    plan = plan_replay(selection.apply(scan(settings)), superseded, max_replays)
    if limit is not None:
        plan.skipped["over --limit"] += max(0, len(plan.records) - limit)
        plan.records = plan.records[:limit]
    return plan


@dataclass
class ReplayResult:
    sent: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    by_topic: Counter[str] = field(default_factory=Counter)


def send(
    settings: Settings,
    records: list[OutRecord],
    rate: float,
    on_progress: Callable[[int], None] = lambda n: None,
    timeout: float = 60.0,
) -> ReplayResult:
    """Produce ``records`` at no more than ``rate`` a second; returns once every one is acknowledged or failed."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    result = ReplayResult()
    producer = Producer(settings, **{"linger.ms": 20})

    def report(err: KafkaError | None, msg: object) -> None:
        if err is None:
            result.sent += 1
            result.by_topic[msg.topic()] += 1  # type: ignore[attr-defined]
        else:
            result.failed += 1
            result.errors[str(err)] += 1
        on_progress(1)

    start = time.monotonic()
    for i, r in enumerate(records):
        wait = start + i / rate - time.monotonic()
        if wait > 0:
            producer.poll(wait)
        producer.produce(r, report)
        producer.poll(0)
    left = producer.flush(timeout)
    if left:
        result.failed += left
        result.errors[f"not acknowledged within {timeout:.0f}s"] += left
    return result
