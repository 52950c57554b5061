"""The status agent: StatusChange records → PostgreSQL, in batches, never backwards.

Decode, fold (``streams.stages.status_fold``), one write (``streams.stores.statuses``), count.
"""
from __future__ import annotations

from collections import Counter

from infra.kafka.dead_letters import DeadLetter, dead_letter
from infra.kafka.records import InRecord, OutRecord
from infra.settings import Settings
from schemas.codec import Codec, DecodeError
from schemas.records import StatusChange
from streams.metrics import Metrics
from streams.runtime.context import Context
from streams.runtime.registry import AgentSpec
from streams.stages.status_fold import fold
from streams.stores.statuses import PostgresStatusStore, StatusStore


def decode_change(codec: Codec, value: bytes | None) -> StatusChange:
    decoded = codec.decode(value)
    if decoded.name != "StatusChange":
        raise DecodeError("wrong_type", f"expected StatusChange, got {decoded.name}")
    try:
        return StatusChange.from_avro(decoded.record)
    except ValueError as exc:  # the schema's channel is any string; Herald's are the vocabulary's
        raise DecodeError("unknown_channel", f"StatusChange: {exc}") from exc


class StatusHandler:
    name = "status"
    stage = "status"

    def __init__(self, settings: Settings, codec: Codec, metrics: Metrics, store: StatusStore) -> None:
        self.codec, self.metrics, self.store = codec, metrics, store
        self.dlq_topic, self.max_record_bytes = settings.topic("dlq"), settings.max_record_bytes

    async def handle(self, batch: list[InRecord]) -> list[OutRecord]:
        changes: list[StatusChange] = []
        dead: list[OutRecord] = []
        for rec in batch:
            try:
                changes.append(decode_change(self.codec, rec.value))
            except DecodeError as exc:
                dead.append(dead_letter(rec, DeadLetter("decode", exc.reason, str(exc)), self.dlq_topic,
                                        self.max_record_bytes))
        await self.store.write(fold(changes))
        for (status, reason), count in Counter((change.status, change.reason or "") for change in changes).items():
            self.metrics.stage_outcomes.labels("status", status, reason).inc(count)
        return dead


def specs(settings: Settings) -> list[AgentSpec]:
    async def build(ctx: Context) -> StatusHandler:
        return StatusHandler(ctx.settings, ctx.codec, ctx.metrics, PostgresStatusStore(ctx.db))

    return [AgentSpec("status", [settings.topic("status")], build)]
