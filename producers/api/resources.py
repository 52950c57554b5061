"""What the API's routes share: settings, codec, PostgreSQL pool, Redis, producer, metrics, small caches.

Opened in the app's lifespan (inside uvicorn's event loop), closed on shutdown.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import redis.asyncio as aioredis
from confluent_kafka.admin import AdminClient
from fastapi import Request
from opentelemetry.trace import Tracer
from prometheus_client import CollectorRegistry, Counter, Histogram
from psycopg_pool import AsyncConnectionPool

from infra.kafka.config import admin_config
from infra.settings import Settings
from infra.tracing import tracer_for
from producers.api.commit_watch import CommitWatch
from producers.api.config import ApiConfig
from producers.api.kafka import AsyncProducer
from producers.api.keys import Caller
from schemas.codec import Codec
from streams.routes import load_routes

K = TypeVar("K")
V = TypeVar("V")


class _MissingKey:
    """The cached answer "no such active key" (a cache miss is None)."""


MISSING_KEY = _MissingKey()


class TtlCache(Generic[K, V]):
    """A bounded in-process cache whose entries expire after ``ttl`` seconds."""

    def __init__(self, ttl: float, max_items: int = 10_000) -> None:
        self.ttl = ttl
        self.max_items = max_items
        self._items: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        hit = self._items.get(key)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, key: K, value: V) -> None:
        if self.ttl <= 0:
            return
        if len(self._items) >= self.max_items:
            self._items.clear()
        self._items[key] = (time.monotonic() + self.ttl, value)

    def forget(self, key: K) -> None:
        self._items.pop(key, None)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("herald_api_requests", "HTTP requests", ["method", "route", "status"], registry=r)
        self.latency = Histogram(
            "herald_api_request_seconds", "HTTP request latency", ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10), registry=r,
        )
        self.accepted = Counter("herald_api_notifications_accepted", "Notifications produced to the events topic", registry=r)
        self.receipts = Counter("herald_api_receipts", "Receipts produced from provider webhooks", ["provider", "status"], registry=r)
        self.webhook_skipped = Counter("herald_api_webhook_events_skipped", "Provider events not tracked", ["why"], registry=r)
        self.unsubscribed = Counter("herald_api_unsubscribed", "Categories turned off for a user: by a one-click link or "
                                    "a SendGrid unsubscribe/spamreport event", ["source"], registry=r)
        self.fast_accepted = Counter("herald_api_fast_accepts", "POST /v1/notifications answered by the fast path "
                                     "(producers.api.fast_accept), 202s and 503s", registry=r)
        self.rejected = Counter("herald_api_rejected", "Requests refused before their route ran", ["why"], registry=r)


@dataclass
class ApiResources:
    settings: Settings
    config: ApiConfig
    codec: Codec
    db: AsyncConnectionPool
    redis: aioredis.Redis
    producer: AsyncProducer
    admin: AdminClient
    metrics: ApiMetrics
    critical_categories: frozenset[str] = frozenset({"security"})  # from the routes file: only keys with 'critical' pick them
    keys: TtlCache[str, Caller | _MissingKey] = field(init=False)
    templates: TtlCache[str, frozenset[str]] = field(init=False)
    users: TtlCache[str, tuple[str | None]] = field(init=False)  # user id → (tenant,)
    commit_watch: CommitWatch = field(init=False)
    health_sample: tuple[float, dict] | None = None
    tracer: Tracer | None = None   # spans when HERALD_OTEL__ENDPOINT is set

    def __post_init__(self) -> None:
        self.keys = TtlCache(self.config.key_cache_seconds)
        self.templates = TtlCache(self.config.template_cache_seconds)
        self.users = TtlCache(self.config.template_cache_seconds)  # only users that exist are cached
        self.commit_watch = CommitWatch(self.config.commit_stall_seconds)

    @classmethod
    async def open(cls, settings: Settings, config: ApiConfig, metrics: ApiMetrics) -> ApiResources:
        db = AsyncConnectionPool(settings.dsn, min_size=2, max_size=10, open=False, kwargs={"autocommit": True}, timeout=10)
        await db.open(wait=True, timeout=30)
        return cls(
            settings=settings,
            config=config,
            codec=Codec(),
            db=db,
            redis=aioredis.from_url(settings.redis_dsn, socket_timeout=5, socket_connect_timeout=5),
            producer=AsyncProducer(settings),
            admin=AdminClient(admin_config(settings)),
            metrics=metrics,
            critical_categories=load_routes(settings.routes_file).critical_categories,
            tracer=tracer_for(settings),
        )

    async def close(self) -> None:
        self.producer.close()
        await self.redis.aclose()
        await self.db.close()


async def resources(request: Request) -> ApiResources:
    """FastAPI dependency: the resources opened by the lifespan (async: FastAPI runs a plain function in its thread
    pool, a thread hop on every request)."""
    return request.app.state.resources
