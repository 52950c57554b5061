"""``create_api(settings)``: the FastAPI app (nothing is opened at import; connections open in the lifespan)."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from infra.settings import Settings
from producers.api import campaigns, cancellations, health, notifications, preferences, unsubscribe, users, webhooks
from producers.api.config import ApiConfig
from producers.api.errors import (
    UNAVAILABLE,
    ApiError,
    RequestIds,
    api_error,
    http_error,
    request_id,
    unavailable_body,
    validation_failed,
    with_herald_errors,
)
from producers.api.fast_accept import FastAccept
from producers.api.middleware import BodyLimit, RequestMetrics, TraceIds
from producers.api.resources import ApiMetrics, ApiResources
from producers.campaign_run import Background

log = logging.getLogger("herald.api")

def operation_id(route: APIRoute) -> str:
    """Generated clients name their methods after the operation id: the route function's name (``put_user``)."""
    return route.name


class HeraldApi(FastAPI):
    """FastAPI with a way in before its middleware stack: a plainly acceptable POST /v1/notifications is answered
    there (producers.api.fast_accept), everything else goes on to FastAPI as usual."""

    fast: FastAccept | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast is not None and scope["type"] == "http":
            scope["app"] = self
            await self.fast(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


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
        app.state.campaigns = Background(settings)
        try:
            yield
        finally:
            await asyncio.to_thread(app.state.campaigns.stop_all)   # left interrupted: `--resume` finishes them
            await app.state.resources.close()

    app = HeraldApi(
        title="Herald",
        version="1.0",
        description="Notifications over HTTP: accept requests, track their status, manage users and preferences, "
        "take provider receipts. Authenticate with `Authorization: Bearer <API key>` (or `X-API-Key`); a key holds "
        "scopes (send, read, admin, critical) and may be bound to one tenant's users. Every error is an `ErrorBody`.",
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
    )
    app.state.sendgrid_key = sendgrid_key
    for module in (notifications, cancellations, users, preferences, webhooks, health, campaigns, unsubscribe):
        app.include_router(module.router)
    app.include_router(campaigns.uploads)

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s %s: dependency unavailable: %r", request.method, request.url.path, exc)
        return JSONResponse(unavailable_body(exc, request_id(request)), 503, headers={"Retry-After": "1"})

    for exc_class in UNAVAILABLE:
        app.add_exception_handler(exc_class, unavailable)
    app.add_exception_handler(RequestValidationError, validation_failed)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(ApiError, api_error)

    with_herald_errors(app)
    app.add_middleware(BodyLimit, default=config.max_body_bytes, webhooks=config.max_webhook_body_bytes,
                       uploads=settings.campaign.max_upload_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.add_middleware(RequestIds)  # the 413s and the 500s carry the request id too
    app.add_middleware(TraceIds)    # every line of a request, the 500's included, carries its trace id
    if config.fast_accept:
        app.fast = FastAccept(partial(FastAPI.__call__, app), max_body=config.max_body_bytes)
    return app
