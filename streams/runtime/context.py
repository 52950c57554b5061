"""What a worker's handlers share: settings, codec, producer, Redis, PostgreSQL, metrics, liveness.

Built inside the worker's event loop (``await Context.open(settings)``) and
passed to every handler; nothing here is global.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as aioredis
from opentelemetry.trace import Tracer
from psycopg_pool import AsyncConnectionPool

from infra.kafka.producer import Producer
from infra.schema_registry import codec_for
from infra.settings import Settings
from infra.tracing import tracer_for
from schemas.codec import Codec
from streams.metrics import Metrics
from streams.runtime.liveness import Liveness


@dataclass
class Context:
    settings: Settings
    codec: Codec
    output: Producer
    redis: aioredis.Redis
    db: AsyncConnectionPool
    metrics: Metrics = field(default_factory=Metrics)
    liveness: Liveness = field(default_factory=Liveness)   # the agents' progress, for /healthz
    tracer: Tracer | None = None   # OpenTelemetry spans when HERALD_OTEL__ENDPOINT is set (infra.tracing)

    @classmethod
    async def open(cls, settings: Settings, *, codec: Codec | None = None, metrics: Metrics | None = None) -> Context:
        db = AsyncConnectionPool(settings.dsn, min_size=1, max_size=8, open=False, kwargs={"autocommit": True})
        await db.open(wait=True, timeout=30)
        return cls(
            settings=settings,
            codec=codec or codec_for(settings),  # the catalog with HERALD_SCHEMAS_DIR, the registry when set
            output=Producer(settings),
            redis=aioredis.from_url(settings.redis_dsn, socket_timeout=5, socket_connect_timeout=5),
            db=db,
            metrics=metrics or Metrics(),
            tracer=tracer_for(settings),
        )

    async def close(self) -> None:
        self.output.close()
        await self.redis.aclose()
        await self.db.close()
