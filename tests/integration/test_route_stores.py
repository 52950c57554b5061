"""The route handler's scenarios (tests/unit/test_route_handler.py) over the real stores: Redis and PostgreSQL.

The scenarios are imported unchanged; only the ``route_stores`` fixture differs. A twin that
behaves unlike its store passes there and fails here.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

import psycopg
import pytest
import redis

from infra.kafka.records import InRecord
from infra.settings import Settings
from infra.tools.seed import seed_templates
from schemas.codec import Codec
from schemas.vocabulary import Channel, Status
from streams.handlers.route import RouteHandler, RouteStores
from streams.routes import RouteConfig
from streams.runtime.context import Context
from streams.stages.route.recipient import Recipient
from streams.stores.templates import TemplateStore
from streams.templates import TemplateSource
from tests.unit.test_route_handler import *  # noqa: F403 - the scenarios, imported unchanged to run here
from tests.unit.test_route_handler import CFG, RouteEnv, _offsets

pytestmark = pytest.mark.integration

# the twins' budget test counts the twins: it stays in the unit file (test_route_guarantees counts the real stores)
del test_the_twins_hold_the_handler_to_two_redis_round_trips_and_four_statements  # noqa: F821


class RealRouteEnv(RouteEnv):
    def __init__(self, settings: Settings, db: psycopg.Connection) -> None:
        self.settings = settings
        self.codec = Codec()
        self.db = db
        self.ctx: Context | None = None

    def run(self, scenario: Callable[[RouteEnv], Coroutine[Any, Any, None]]) -> None:
        async def session() -> None:
            self.ctx = await Context.open(self.settings, codec=self.codec)
            self.stores = RouteStores.real(self.ctx)
            try:
                await scenario(self)
            finally:
                await self.ctx.close()
        asyncio.run(session())

    async def cancel_campaign(self, campaign_id: str) -> None:
        self.db.execute("INSERT INTO campaigns (id, template, source, canceled_at) VALUES (%s, 'weekly_digest', '{}', now())",
                        (campaign_id,))

    async def add_user(self, recipient: Recipient) -> None:
        r = recipient
        self.db.execute("INSERT INTO users (id, email, phone, locale, time_zone, first_name) VALUES (%s,%s,%s,%s,%s,%s)",
                        (r.id, r.email, r.phone, r.locale, r.time_zone, r.first_name))
        for token in r.devices:
            self.db.execute("INSERT INTO devices (user_id, token, platform) VALUES (%s, %s, 'android')", (r.id, token))
        self._preferences(r)

    async def change_user(self, recipient: Recipient) -> None:
        r = recipient
        self.db.execute("UPDATE users SET email = %s, phone = %s WHERE id = %s", (r.email, r.phone, r.id))
        self._preferences(r)
        await self.stores.recipients.invalidate(r.id)

    def _preferences(self, r: Recipient) -> None:
        self.db.execute(
            "INSERT INTO preferences (user_id, muted, channels, categories, quiet_start, quiet_end) VALUES (%s,%s,%s,%s,%s,%s) "
            "ON CONFLICT (user_id) DO UPDATE SET muted = EXCLUDED.muted, channels = EXCLUDED.channels, "
            "categories = EXCLUDED.categories, quiet_start = EXCLUDED.quiet_start, quiet_end = EXCLUDED.quiet_end",
            (r.id, r.muted, json.dumps(r.channels), json.dumps(r.categories), r.quiet_start, r.quiet_end))

    async def add_template(self, src: TemplateSource) -> None:
        with self.db.transaction():
            self.db.execute("UPDATE templates SET active = false WHERE code = %s AND channel = %s AND locale = %s",
                            (src.code, src.channel, src.locale))
            self.db.execute("INSERT INTO templates (code, channel, locale, version, subject, body_text, body_html, push_title, active) "
                            "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,true)",
                            (src.code, src.channel, src.locale, src.version, src.subject, src.body_text, src.body_html,
                             src.push_title))

    async def scheduled(self, notification_id: str) -> list[tuple[str, str, str]]:
        return [tuple(r) for r in self.db.execute(  # type: ignore[misc]
            "SELECT kind, topic, dedup_key FROM scheduled WHERE notification_id = %s ORDER BY 1, 2, 3", (notification_id,))]

    async def empty_fast_claims(self) -> None:
        r = redis.Redis.from_url(self.settings.redis_dsn)
        keys = list(r.scan_iter(match=self.settings.rkey("dedup", "*"), count=1000))
        assert keys, "the fast path held no claim to lose"
        r.delete(*keys)
        r.close()

    async def published(self, notification_id: str, kind: str) -> InRecord:
        [(topic, key, value, headers)] = self.db.execute(
            "SELECT topic, key, value, headers FROM scheduled WHERE notification_id = %s AND kind = %s",
            (notification_id, kind)).fetchall()
        return InRecord(topic, 0, next(_offsets), key, value, [(k, v.encode()) for k, v in headers.items()])

    async def scheduled_kind(self, kind: str) -> list[str]:
        return sorted(r[0] for r in self.db.execute(
            "SELECT notification_id FROM scheduled WHERE kind = %s AND topic = %s", (kind, self.settings.topic("events"))))

    async def receipt(self, notification_id: str, channel: Channel, status: Status) -> None:
        self.db.execute("INSERT INTO status_history (notification_id, channel, status, at) VALUES (%s, %s, %s, now())",
                        (notification_id, channel, status))

    def handler(self, cfg: RouteConfig = CFG, settings: Settings | None = None, refresh_seconds: float = 0) -> RouteHandler:
        assert self.ctx is not None, "inside run() only"
        ctx = replace(self.ctx, settings=settings) if settings is not None else self.ctx
        return RouteHandler(ctx, cfg, TemplateStore(refresh_seconds))  # the real stores: RouteStores.real(ctx)


@pytest.fixture(params=["real"])  # type: ignore[no-redef]
def route_stores(settings: Settings, db: psycopg.Connection) -> RouteEnv:
    seed_templates(db)
    return RealRouteEnv(settings, db)
