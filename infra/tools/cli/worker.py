"""herald worker"""
from __future__ import annotations

import logging
import logging.config
import os
import sys
import threading
from enum import StrEnum
from typing import Any

import typer

from infra.settings import Settings
from infra.tools.cli.stack import env_no_proxy

AGENTS = typer.Option(None, "--agent", "-a", help="run only these agents (repeatable); default: all")
LANE = typer.Option(None, "--lane", help="run only the critical lane (route-critical and deliver-*-critical: a "
                                         "password reset never waits behind other work), or every agent but those "
                                         "('others'); with --agent, both must name an agent")
WAIT_KAFKA = typer.Option(60.0, "--wait-kafka", min=0,
                          help="seconds to wait at start for the Kafka broker to answer before giving up")
# beyond the batches' stop bound: closing the consumers (leaving the groups) and Faust's own stop
STOP_MARGIN_S = 10.0
EX_STOP_TIMEOUT = 70   # EX_SOFTWARE: the stop overran its bound; whatever was in hand is read again by the next owner


def wait_for_kafka(settings: Settings, seconds: float) -> None:
    """A worker started before its broker (a host boot, a compose file) waits instead of crashing in Faust.

    With the worker's own connection settings (SASL, TLS); credentials or certificates the broker
    refuses are one line at once, not a wait until the timeout.
    """
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import AdminClient

    from infra.kafka.config import KafkaConfigError, admin_config
    from infra.tools.cli.errors import CliError
    from infra.tools.stack.process import wait_until

    refused: list[KafkaError] = []

    def on_error(err: KafkaError) -> None:
        if err.code() == KafkaError._SSL or "authentication" in err.str().lower():
            refused.append(err)

    bootstrap = settings.kafka_bootstrap
    try:
        # log_level 0: no connect-refused spam while the broker is not there yet
        admin = AdminClient(admin_config(settings, log_level=0, error_cb=on_error))
    except KafkaConfigError as exc:
        raise CliError(str(exc)) from exc

    def answers() -> bool:
        try:
            if admin.list_topics(timeout=2).brokers:
                return True
        except Exception:  # noqa: BLE001 - not there yet, or refused
            pass
        admin.poll(0)  # serves error_cb: librdkafka reports a refused login there; the request only times out
        return bool(refused)

    def check_refused() -> None:
        if refused:
            err = refused[0]
            what = "TLS" if err.code() == KafkaError._SSL else "authentication"
            raise CliError(f"Kafka at {bootstrap} refused the connection ({what} failed as "
                           f"{settings.kafka.sasl_username or '(no user)'}): check HERALD_KAFKA__SASL_USERNAME, the password "
                           "(HERALD_KAFKA__SASL_PASSWORD[_FILE]) and HERALD_KAFKA__SSL_CA_FILE")

    if answers():
        check_refused()
        return
    print(f"waiting up to {seconds:g} s for Kafka at {bootstrap} ...", file=sys.stderr, flush=True)
    ok = wait_until(answers, timeout=seconds, interval=0.5)
    check_refused()
    if not ok:
        raise CliError(f"Kafka at {bootstrap} did not answer within {seconds:g} s: start it (`herald stack up`) "
                       "or point HERALD_KAFKA_BOOTSTRAP at a running broker")


class LaneChoice(StrEnum):
    CRITICAL = "critical"
    OTHERS = "others"


def _of_lane(specs: list[Any], lane: LaneChoice, agents: list[str] | None) -> list[str]:
    """The agents of ``lane`` (among ``agents`` when given): the critical lane is every agent named ``*-critical``."""
    names = [s.name for s in specs if s.name.endswith("-critical") == (lane is LaneChoice.CRITICAL)]
    chosen = [n for n in names if not agents or n in agents]
    if not chosen:
        raise ValueError(f"no agent of lane {lane.value} among {', '.join(agents or [])}")
    return chosen


def _stop_watchdog(seconds: float) -> None:
    """After a stop signal: exit ``EX_STOP_TIMEOUT`` if the orderly stop has not ended the process in ``seconds``."""
    def overrun() -> None:
        logging.getLogger("herald.worker").error("stop took longer than %.0f s; exiting now", seconds)
        os._exit(EX_STOP_TIMEOUT)

    t = threading.Timer(seconds, overrun)
    t.daemon = True
    t.start()


def worker(
    agents: list[str] | None = AGENTS,
    lane: LaneChoice | None = LANE,
    loglevel: str = typer.Option("warning", help="log level"),
    wait_kafka: float = WAIT_KAFKA,
) -> None:
    """Run the pipeline's agents (route, deliver per channel and lane, retry tiers, receipts, status).

    Several workers share the work through the consumer groups. Ctrl-C or SIGTERM finishes and commits
    the batches in hand, leaves the groups and exits 0 (within HERALD_WORKER__STOP_SECONDS + 10 s).
    /metrics and /healthz are served on HERALD_METRICS_HOST:HERALD_METRICS_PORT.
    """
    import faust

    from infra.gc_pauses import settle
    from streams.runtime.faust_app import create_app
    from streams.runtime.registry import agent_specs, select

    env_no_proxy()
    settings = Settings()
    try:
        specs = agent_specs(settings)
        select(specs, agents)
        if lane is not None:
            agents = _of_lane(specs, lane, agents)
    except ValueError as exc:
        from infra.tools.cli.errors import CliError

        raise CliError(str(exc)) from exc
    wait_for_kafka(settings, wait_kafka)
    from infra.topics import ensure_topics, resolved

    # Herald's topics exist with the cluster's durability before any consumer subscribes (Faust would declare
    # missing ones itself); what Faust still declares (its assignor topic) gets the same replication factor
    settings = resolved(settings)
    ensure_topics(settings)
    from infra.logs import logging_config

    config = logging_config(loglevel, settings)
    logging.config.dictConfig(config)
    app = create_app(settings, agents)
    bound = settings.worker.stop_seconds + STOP_MARGIN_S

    class Worker(faust.Worker):
        async def on_startup_finished(self) -> None:
            await super().on_startup_finished()
            # what exists once the agents started lives as long as the process: out of the collector's scans
            settle(young=settings.worker.gc_young_objects)

        def _schedule_shutdown(self, signal: Any) -> None:  # mode's hook for SIGTERM and SIGINT
            if not self._signal_stop_time:
                _stop_watchdog(bound)
            super()._schedule_shutdown(signal)

    sys.argv = sys.argv[:1]
    Worker(app, loglevel=loglevel.upper(), quiet=True, logging_config=config).execute_from_commandline()
