"""herald api"""
from __future__ import annotations

import typer

from infra.tools.cli.stack import env_no_proxy


def api(
    host: str = typer.Option(None, help="listen address (default: HERALD_API_HOST)"),
    port: int = typer.Option(None, help="listen port (default: HERALD_API_PORT)"),
    workers: int = typer.Option(None, min=1, help="uvicorn worker processes (default: HERALD_API__WORKERS, "
                                "which defaults to the machine's cores)"),
    loglevel: str = typer.Option("warning", help="log level"),
) -> None:
    """Serve the HTTP API (FastAPI under uvicorn): POST /v1/notifications, status, users, preferences, webhooks,
    and the operations console at /console (sign in with an API key that has the read or admin scope).

    The OpenAPI spec is at /openapi.json, the interactive docs at /docs. Callers need an API key
    (`herald apikeys create`); per-key rate limits and body limits come from HERALD_API_* variables.
    Several worker processes share the port (the rate limits and idempotency keys live in Redis and
    PostgreSQL, so they hold across them); each answers 202 only once Kafka acknowledged the record.
    """
    import uvicorn

    from infra.logs import logging_config
    from infra.settings import Settings

    env_no_proxy()
    settings = Settings()
    uvicorn.run(
        "infra.tools.console.app:create_served_app",   # the API (producers.api.app.create_api) with the console mounted
        factory=True,
        host=host or settings.api_host,
        port=port or settings.api_port,
        workers=workers or settings.api.workers,
        log_level=loglevel,
        log_config=logging_config(loglevel, settings),  # JSON lines, masked: uvicorn's own formatter prints raw paths
        access_log=True,  # at info level and below; masked like every other line
    )
