"""``create_api(settings)``: the FastAPI app (nothing is opened at import; connections open in the lifespan)."""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
import psycopg_pool
import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from infra.settings import Settings
from producers.api import health, notifications, preferences, users, webhooks
from producers.api.config import ApiConfig
from producers.api.middleware import BodyLimit, RequestMetrics
from producers.api.resources import ApiMetrics, ApiResources

log = logging.getLogger("herald.api")

UNAVAILABLE = (
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)


def create_api(settings: Settings | None = None, config: ApiConfig | None = None) -> FastAPI:
    settings = settings or Settings()
    config = config or settings.api
    metrics = ApiMetrics()
    # a bad key fails the start, not the first webhook
    sendgrid_key = (
        webhooks.load_sendgrid_key(settings.sendgrid_webhook_public_key) if settings.sendgrid_webhook_public_key else None
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.resources = await ApiResources.open(settings, config, metrics)
        try:
            yield
        finally:
            await app.state.resources.close()

    app = FastAPI(
        title="Herald",
        version="1.0",
        description="Notifications over HTTP: accept requests, track their status, manage users and preferences, "
        "take provider receipts. Authenticate with `Authorization: Bearer <API key>`.",
        lifespan=lifespan,
    )
    app.state.sendgrid_key = sendgrid_key
    for module in (notifications, users, preferences, webhooks, health):
        app.include_router(module.router)

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s %s: dependency unavailable: %r", request.method, request.url.path, exc)
        return JSONResponse({"detail": f"a dependency is unavailable ({type(exc).__name__}); retry"}, 503,
                            headers={"Retry-After": "1"})

    for exc_class in UNAVAILABLE:
        app.add_exception_handler(exc_class, unavailable)

    app.add_middleware(BodyLimit, default=config.max_body_bytes, webhooks=config.max_webhook_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app
