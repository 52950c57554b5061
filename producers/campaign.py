"""The campaign producer: recipients → ``CampaignMessage`` records on ``herald.bulk`` at full producer speed.

A campaign is a row of ``campaigns`` (template, channels, category, variables,
source, total, produced). Recipients are sent in chunks; a chunk counts as
produced only once the broker acknowledged all of it, and ``produced`` grows
only over the contiguous acknowledged prefix. ``event_id`` is
``campaign_id:user_id``, so a resumed campaign that sends a chunk again is
de-duplicated downstream (route's (event, channel) key and the delivery
ledger). Encoding is CPU-bound Python, so chunks are spread over ``procs``
processes, each with its own librdkafka producer.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import KafkaError

from infra.kafka.producer import Producer
from infra.kafka.records import TRACE
from infra.settings import Settings
from producers.campaign_source import Recipient, Rejected
from schemas.codec import Codec
from schemas.vocabulary import CHANNELS
from streams.stages.route.window import parse_window


class CampaignError(RuntimeError):
    """The campaign stopped: what happened and how far it got (resume it with its id)."""


@dataclass(frozen=True)
class CampaignSpec:
    id: str
    template: str
    source: dict[str, str]              # {"file": path} or {"query": sql}
    channels: tuple[str, ...] = ("email",)
    category: str = "marketing"
    variables: dict[str, Any] = field(default_factory=dict)
    rate_per_minute: int | None = None   # recipients produced per minute at most (None: as fast as the producer goes)
    send_window: str | None = None       # "09:00-18:00" in each recipient's time zone (None: any time)

    def __post_init__(self) -> None:
        if not self.template:
            raise ValueError("a campaign needs a template code")
        if self.rate_per_minute is not None and self.rate_per_minute < 1:
            raise ValueError(f"the rate must be at least 1 message per minute, got {self.rate_per_minute}")
        if self.send_window is not None:
            parse_window(self.send_window)   # raises ValueError naming the problem
        if not self.channels or any(c not in CHANNELS for c in self.channels):
            raise ValueError(f"channels must be some of {', '.join(CHANNELS)}; got {', '.join(self.channels) or 'none'}")


def new_campaign_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"c{now:%Y%m%d}-{secrets.token_hex(4)}"


def event_id(campaign_id: str, user_id: str) -> str:
    return f"{campaign_id}:{user_id}"


RECIPIENTS_PER_RECORD = 500   # a CampaignChunk's recipients: half a SendGrid request, a record of ~20 KB


def message(spec: CampaignSpec, r: Recipient, occurred_at_ms: int, base_variables_json: str | None = None) -> dict[str, Any]:
    """The ``CampaignMessage`` for one recipient: campaign variables, overridden by the recipient's own."""
    if r.variables:
        variables_json = json.dumps({**spec.variables, **r.variables}, separators=(",", ":"), default=str)
    else:
        variables_json = base_variables_json or json.dumps(spec.variables, separators=(",", ":"), default=str)
    return {
        "event_id": event_id(spec.id, r.user_id),
        "occurred_at": occurred_at_ms,
        "campaign_id": spec.id,
        "user_id": r.user_id,
        "template": spec.template,
        "channels": list(spec.channels),
        "category": spec.category,
        "variables_json": variables_json,
    }


def chunk_id(campaign_id: str, first: int) -> str:
    """A chunk is named by the ordinal of its first recipient: a resume that sends it again sends the same name."""
    return f"{campaign_id}:{first}"


def chunk_record(spec: CampaignSpec, first: int, recipients: list[Recipient], occurred_at_ms: int,
                 base_variables_json: str) -> dict[str, Any]:
    """The ``CampaignChunk`` of consecutive recipients; only recipients with their own variables carry them."""
    own = [json.dumps(r.variables, separators=(",", ":"), default=str) if r.variables else None for r in recipients]
    return {
        "chunk_id": chunk_id(spec.id, first),
        "occurred_at": occurred_at_ms,
        "campaign_id": spec.id,
        "template": spec.template,
        "channels": list(spec.channels),
        "category": spec.category,
        "variables_json": base_variables_json,
        "user_ids": [r.user_id for r in recipients],
        "user_variables_json": own if any(v is not None for v in own) else [],
        "send_window": spec.send_window,
    }


# --- the campaigns table ------------------------------------------------------

@dataclass(frozen=True)
class CampaignRow:
    spec: CampaignSpec
    total: int
    produced: int
    status: str
    error: str | None
    created_at: datetime
    finished_at: datetime | None


def create(conn: psycopg.Connection, spec: CampaignSpec, total: int) -> None:
    try:
        conn.execute(
            "INSERT INTO campaigns (id, template, source, total, produced, status, channels, category, variables, "
            "rate_per_minute, send_window) VALUES (%s, %s, %s, %s, 0, 'producing', %s, %s, %s, %s, %s)",
            (spec.id, spec.template, json.dumps(spec.source), total, list(spec.channels), spec.category,
             json.dumps(spec.variables), spec.rate_per_minute, spec.send_window),
        )
    except psycopg.errors.UniqueViolation as exc:
        raise CampaignError(f"campaign {spec.id} already exists; continue it with --resume {spec.id}") from exc


def load(conn: psycopg.Connection, campaign_id: str) -> CampaignRow | None:
    row = conn.execute(
        "SELECT id, template, source, channels, category, variables, total, produced, status, error, created_at, finished_at, "
        "rate_per_minute, send_window FROM campaigns WHERE id = %s",
        (campaign_id,),
    ).fetchone()
    if row is None:
        return None
    cid, template, source, channels, category, variables, total, produced, status, error, created, finished, rate, window = row
    spec = CampaignSpec(cid, template, json.loads(source), tuple(channels), category, variables or {}, rate, window)
    return CampaignRow(spec, total, produced, status, error, created, finished)


def set_progress(conn: psycopg.Connection, campaign_id: str, produced: int, status: str = "producing",
                 error: str | None = None, total: int | None = None) -> None:
    conn.execute(
        "UPDATE campaigns SET produced = GREATEST(produced, %s), status = %s, error = %s, total = COALESCE(%s, total), "
        "updated_at = now(), finished_at = CASE WHEN %s = 'produced' THEN now() ELSE finished_at END WHERE id = %s",
        (produced, status, error, total, status, campaign_id),
    )


# --- producing ------------------------------------------------------------------

class Pacer:
    """A campaign's rate: the n-th message may leave no earlier than n / rate after the first (a steady average, in
    bursts of one record). ``wait`` returns False when ``stop`` was set while it waited."""

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_minute / 60.0
        self.clock = clock
        self.started: float | None = None
        self.sent = 0

    def wait(self, n: int, stop: threading.Event) -> bool:
        now = self.clock()
        if self.started is None:
            self.started = now
        due = self.started + self.sent / self.per_second
        if due > now and stop.wait(due - now):
            return False
        self.sent += n
        return True


def paced_sizes(rate_per_minute: int | None, per_record: int, chunk_size: int) -> tuple[int, int]:
    """(recipients per record, per acknowledged chunk) at a rate of recipients a minute: a record holds about two
    seconds' worth and a chunk ten (production looks for a cancel after each chunk); unpaced, the sizes as given."""
    if rate_per_minute is None:
        return per_record, chunk_size
    record = max(1, min(per_record, rate_per_minute // 30))
    return record, max(record, min(chunk_size, rate_per_minute // 6))


@dataclass
class ChunkResult:
    index: int
    sent: int
    errors: list[str]


class ChunkProducer:
    """Encodes and produces one chunk of recipients, then waits for every acknowledgement."""

    def __init__(self, kafka: Settings, topic: str, spec: CampaignSpec, codec: Codec | None = None,
                 timeout: float = 60.0, stop: threading.Event | None = None,
                 per_record: int = RECIPIENTS_PER_RECORD, **producer_extra: Any) -> None:
        self.topic = topic
        self.per_record = max(1, per_record)
        self.stop = stop or threading.Event()
        self.spec = spec
        self.pacer = Pacer(spec.rate_per_minute) if spec.rate_per_minute else None
        self.codec = codec or Codec()
        self.timeout = timeout
        self._errors: list[str] = []
        self._base_vars = json.dumps(spec.variables, separators=(",", ":"), default=str)
        self._producer = Producer(kafka, **{
            "linger.ms": 20,
            "delivery.report.only.error": True,  # no Python callback per acknowledged record
            "on_delivery": self._report,
            "message.timeout.ms": int(timeout * 1000),
            **producer_extra,
        })

    def _report(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._errors.append(f"{msg.key()!r}: {err.str()}")

    def send(self, index: int, chunk: list[Recipient], first: int = 0) -> ChunkResult:
        """Produce ``chunk`` (whose first recipient is the campaign's ``first``-th) as CampaignChunk records."""
        spec, produce, encode = self.spec, self._producer.produce_value, self.codec.encode
        occurred = int(time.time() * 1000)
        step = self.per_record
        for at in range(0, len(chunk), step):
            part = chunk[at:at + step]
            # Ctrl-C or a stop (also while a paced record waits its turn): this chunk counts as not produced; a resume
            # sends it again
            if self.stop.is_set() or (self.pacer is not None and not self.pacer.wait(len(part) * len(spec.channels),
                                                                                     self.stop)):
                self._producer.flush(5)
                self._errors = []
                return ChunkResult(index, 0, [])
            rec = chunk_record(spec, first + at, part, occurred, self._base_vars)
            name = rec["chunk_id"].encode()
            produce(self.topic, encode("CampaignChunk", rec), name, [(TRACE, name)])
        left = self._producer.flush(self.timeout)
        errors, self._errors = self._errors, []
        if left:
            errors.append(f"{left} record(s) not acknowledged within {self.timeout:.0f}s")
        return ChunkResult(index, len(chunk) if not errors else 0, errors)

    def close(self) -> None:
        self._producer.flush(5)


_worker: ChunkProducer | None = None  # one per pool process, set by _init_worker


def _init_worker(kafka: Settings, topic: str, spec: CampaignSpec, extra: dict[str, Any]) -> None:
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C means
    _worker = ChunkProducer(kafka, topic, spec, **extra)


def _send_chunk(job: tuple[int, list[Recipient], int]) -> ChunkResult:
    assert _worker is not None
    return _worker.send(*job)


@dataclass
class ProduceReport:
    produced: int                     # contiguous acknowledged prefix, including what was skipped on resume
    sent_now: int
    rejected: list[Rejected]
    rejected_count: int
    seconds: float
    interrupted: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.sent_now / self.seconds if self.seconds > 0 else 0.0


def _chunks(items: Iterable[Recipient | Rejected], skip: int, size: int, rejected: list[Rejected],
            counter: list[int]) -> Iterator[tuple[int, list[Recipient], int]]:
    """(index, recipients, ordinal of the first) after the first ``skip``; rejected lines are collected (1000 kept)."""
    seen = 0
    chunk: list[Recipient] = []
    index = 0
    for item in items:
        if isinstance(item, Rejected):
            counter[0] += 1
            if len(rejected) < 1000:
                rejected.append(item)
            continue
        seen += 1
        if seen <= skip:
            continue
        chunk.append(item)
        if len(chunk) >= size:
            yield index, chunk, seen - len(chunk)
            index += 1
            chunk = []
    if chunk:
        yield index, chunk, seen - len(chunk)


def produce(
    kafka: Settings,
    topic: str,
    spec: CampaignSpec,
    recipients: Iterable[Recipient | Rejected],
    *,
    skip: int = 0,
    procs: int = 1,
    chunk_size: int = 20_000,
    on_progress: Callable[[int], None] | None = None,
    producer_extra: dict[str, Any] | None = None,
    stop: threading.Event | None = None,
) -> ProduceReport:
    """Produce every recipient after the first ``skip``; ``on_progress(produced)`` after each acknowledged chunk.

    Stops at the first chunk the broker did not fully acknowledge (``errors``)
    or at Ctrl-C or ``stop`` (``interrupted``); ``produced`` is then what a resume skips.
    """
    rejected: list[Rejected] = []
    rejected_count = [0]
    extra = dict(producer_extra or {})
    if spec.rate_per_minute is not None:   # one paced producer; its records and chunks sized to the rate
        procs = 1
        recipients_per_minute = max(1, spec.rate_per_minute // len(spec.channels))
        extra["per_record"], chunk_size = paced_sizes(recipients_per_minute, extra.get("per_record", RECIPIENTS_PER_RECORD),
                                                      chunk_size)
    jobs = _chunks(recipients, skip, chunk_size, rejected, rejected_count)
    produced, sent = skip, 0
    errors: list[str] = []
    interrupted = False
    t0 = time.perf_counter()
    halt = stop if stop is not None else threading.Event()
    previous_handler = None
    if procs <= 1:
        results: Iterator[ChunkResult]
        if threading.current_thread() is threading.main_thread():
            # a KeyboardInterrupt raised inside librdkafka's produce() surfaces as a TypeError about header
            # keys; a flag checked between records stops the chunk cleanly instead
            previous_handler = signal.signal(signal.SIGINT, lambda *_: halt.set())
        local = ChunkProducer(kafka, topic, spec, stop=halt, **extra)
        results = (local.send(i, c, first) for i, c, first in jobs)
        pool = None
    else:
        # Pool.imap would read the whole source ahead; a semaphore keeps a few chunks in flight per process
        window = threading.Semaphore(procs * 2)
        stopping = threading.Event()

        def bounded() -> Iterator[tuple[int, list[Recipient], int]]:
            for job in jobs:
                while not window.acquire(timeout=0.2):
                    if stopping.is_set():
                        return
                yield job

        pool = mp.get_context("fork").Pool(procs, _init_worker, (kafka, topic, spec, extra))
        results = pool.imap(_send_chunk, bounded())  # in order: the acknowledged prefix is well defined
    try:
        for r in results:
            if pool is not None:
                window.release()
            if r.errors:
                errors = r.errors[:5]
                break
            produced += r.sent
            sent += r.sent
            if on_progress:
                on_progress(produced)
            if halt.is_set():
                interrupted = True
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)
        if pool is not None:
            stopping.set()
            pool.terminate()
            pool.join()
        else:
            local.close()
    return ProduceReport(produced, sent, rejected, rejected_count[0], time.perf_counter() - t0, interrupted, errors)
