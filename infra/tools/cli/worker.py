"""herald worker"""
from __future__ import annotations

import logging
import logging.config
import sys

import typer

from infra.tools.cli.stack import env_no_proxy
from infra.settings import Settings

AGENTS = typer.Option(None, "--agent", "-a", help="run only these agents (repeatable); default: all")
WAIT_KAFKA = typer.Option(60.0, "--wait-kafka", min=0,
                          help="seconds to wait at start for the Kafka broker to answer before giving up")


def wait_for_kafka(bootstrap: str, seconds: float) -> None:
    """A worker started before its broker (a host boot, a compose file) waits instead of crashing in Faust."""
    from confluent_kafka.admin import AdminClient

    from infra.tools.cli.errors import CliError
    from infra.tools.stack.process import wait_until

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})  # 0: no connect-refused spam

    def answers() -> bool:
        try:
            return bool(admin.list_topics(timeout=2).brokers)
        except Exception:  # noqa: BLE001 - not there yet
            return False

    if answers():
        return
    print(f"waiting up to {seconds:g} s for Kafka at {bootstrap} ...", file=sys.stderr, flush=True)
    if not wait_until(answers, timeout=seconds, interval=0.5):
        raise CliError(f"Kafka at {bootstrap} did not answer within {seconds:g} s: start it (`herald stack up`) "
                       "or point HERALD_KAFKA_BOOTSTRAP at a running broker")

def worker(
    agents: list[str] | None = AGENTS,
    loglevel: str = typer.Option("warning", help="log level"),
    wait_kafka: float = WAIT_KAFKA,
) -> None:
    """Run the pipeline's Faust agents (route, deliver per channel and lane, retry tiers, status).

    Several workers share the work through the consumer group; Ctrl-C stops cleanly.
    """
    import faust

    from streams.runtime.registry import agent_specs, select
    from streams.runtime.faust_app import create_app

    env_no_proxy()
    settings = Settings()
    try:
        select(agent_specs(settings), agents)
    except ValueError as exc:
        from infra.tools.cli.errors import CliError

        raise CliError(str(exc)) from exc
    wait_for_kafka(settings.kafka_bootstrap, wait_kafka)
    from infra.logs import logging_config

    config = logging_config(loglevel, settings)
    logging.config.dictConfig(config)
    app = create_app(settings, agents)
    sys.argv = sys.argv[:1]
    faust.Worker(app, loglevel=loglevel.upper(), quiet=True, logging_config=config).execute_from_commandline()
