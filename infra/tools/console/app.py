"""``create_app(settings)``: the API app (``producers.api.app.create_api``) with the console mounted at /console.

The API does not know the console (nothing imports tools); ``herald api`` serves this app instead of the bare API.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from infra.gc_pauses import settle
from infra.settings import Settings
from infra.tools.console.routes import Console, NeedsSignIn, Refused, login_page, page, router
from producers.api.app import create_api


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = create_api(settings)
    mount(app, settings)
    return app


def create_served_app() -> FastAPI:
    """What ``herald api`` serves: ``create_app()``, whose objects at start then leave the garbage collector's scans
    (``infra.gc_pauses``): a full collection would otherwise stop a process for tens of ms under load."""
    app = create_app()
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[None]:
        async with inner(a):
            settle()
            yield

    app.router.lifespan_context = lifespan
    return app


def mount(app: FastAPI, settings: Settings) -> None:
    app.state.console = Console.of(settings)
    app.include_router(router, prefix="/console")
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[None]:  # the API's lifespan keeps no state
        async with inner(a):
            try:
                yield
            finally:
                app.state.console.close()

    app.router.lifespan_context = lifespan

    async def needs_sign_in(request: Request, exc: Exception) -> Response:
        if request.url.path.endswith(("/part", ".json")):   # a refresh by console.js: it reloads the page
            return HTMLResponse(str(exc), 401)
        return login_page(request, str(exc), 401)

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refused)
        return page(request, "error.html", exc.status, message=str(exc), who=None, tab=None)

    app.add_exception_handler(NeedsSignIn, needs_sign_in)
    app.add_exception_handler(Refused, refused)
