"""herald worker"""
from __future__ import annotations

import logging
import logging.config
import sys

import typer

from infra.cli.stack import env_no_proxy
from infra.settings import Settings

AGENTS = typer.Option(None, "--agent", "-a", help="run only these agents (repeatable); default: all")


def worker(
    agents: list[str] | None = AGENTS,
    loglevel: str = typer.Option("warning", help="log level"),
) -> None:
    """Run the pipeline's Faust agents (route, deliver per channel and lane, retry tiers, status).

    Several workers share the work through the consumer group; Ctrl-C stops cleanly.
    """
    import faust

    from streams.agents import agent_specs, select
    from streams.app import create_app

    env_no_proxy()
    settings = Settings()
    try:
        select(agent_specs(settings), agents)
    except ValueError as exc:
        from infra.cli.errors import CliError

        raise CliError(str(exc)) from exc
    from infra.logs import logging_config

    config = logging_config(loglevel)
    logging.config.dictConfig(config)
    app = create_app(settings, agents)
    sys.argv = sys.argv[:1]
    faust.Worker(app, loglevel=loglevel.upper(), quiet=True, logging_config=config).execute_from_commandline()
