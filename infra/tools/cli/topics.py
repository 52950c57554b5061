"""herald topics list | ensure"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from infra.settings import Settings
from infra.tools.cli.errors import CliError
from infra.tools.cli.kafka import BROKER_CHECK_SECONDS, client_config
from infra.tools.cli.output import print_rows

if TYPE_CHECKING:   # infra.topics (confluent_kafka) is imported inside the commands that use it
    from infra.topics import TopicState

app = typer.Typer(help="Herald's topics on the cluster: partitions, replication, min.insync.replicas, lag.",
                  no_args_is_help=True)
console = Console()
AUTH_CODES = ("_AUTHENTICATION", "SASL_AUTHENTICATION_FAILED", "TOPIC_AUTHORIZATION_FAILED",
              "CLUSTER_AUTHORIZATION_FAILED", "_SSL")


def connect(settings: Settings, timeout: float = 10.0):
    """An admin client whose cluster answered; one line (authentication, TLS, no broker) otherwise."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    problems: list = []
    admin = AdminClient(client_config(
        settings, error_cb=problems.append,
        **{"socket.connection.setup.timeout.ms": int(BROKER_CHECK_SECONDS * 1000)}))
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.list_topics(timeout=1)
            return admin
        except KafkaException as exc:
            problems.append(exc.args[0] if exc.args else exc)
        admin.poll(0)   # serves error_cb: librdkafka reports a refused login there, the request only times out
        for p in problems:
            name = getattr(p, "name", lambda: "")()
            text = p.str() if hasattr(p, "str") else str(p)
            if name == "_AUTHENTICATION" or "authentication" in text.lower():
                raise CliError(f"Kafka authentication failed at {settings.kafka_bootstrap} as "
                               f"{settings.kafka.sasl_username or '(no user)'} ({settings.kafka.sasl_mechanism}): check "
                               "HERALD_KAFKA__SASL_USERNAME and the password (HERALD_KAFKA__SASL_PASSWORD[_FILE])")
            if name == "_SSL":
                raise CliError(f"TLS to Kafka at {settings.kafka_bootstrap} failed ({text}); check HERALD_KAFKA__SSL_CA_FILE")
        if time.monotonic() > deadline:
            raise CliError(f"no Kafka broker answers at {settings.kafka_bootstrap} within {timeout:g} s; "
                           "start the stack (`herald stack up`) or check HERALD_KAFKA_BOOTSTRAP")
        problems.clear()


def _lag_text(lag: dict[str, int]) -> str:
    return ", ".join(f"{g}={n}" for g, n in sorted(lag.items())) or "-"


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="one JSON object per line")) -> None:
    """Every Herald topic: partitions, replication factor, min.insync.replicas and lag per consumer group."""
    from infra.topics import describe

    settings = Settings()
    states = describe(settings, admin=connect(settings))
    print_rows(states, as_json, record=lambda s: s.as_dict(), sort_keys=True,
               table=Table("topic", "partitions", "RF", "min ISR", "lag (group=records)"), cells=_topic_cells,
               style=lambda s: "red" if s.exists and s.mismatch() is not None else None, console=console)


def _topic_cells(s: TopicState) -> tuple[str, ...]:
    if not s.exists:
        return s.name, "[red]missing[/]", "", "", ""
    return (s.name, str(s.partitions), str(s.replication_factor),
            str(s.min_insync_replicas if s.min_insync_replicas is not None else "?"), _lag_text(s.lag))


@app.command()
def ensure() -> None:
    """Create the missing topics (replication and min.insync.replicas from the settings or the cluster);
    exit 1 with one line for each existing topic whose partitions or replication factor differ."""
    from infra.topics import durability, ensure as ensure_all

    settings = Settings()
    admin = connect(settings)
    d = durability(settings, len(admin.list_topics(timeout=10).brokers))
    report = ensure_all(settings, admin=admin)
    for name in report.created:
        print(f"created {name} (replication factor {d.replication_factor}, min.insync.replicas {d.min_insync_replicas})")
    for line in report.mismatched:
        print(f"differs: {line}")
    if not report.created and not report.mismatched:
        print(f"all {settings.topic_prefix}.* topics exist as the settings say")
    if report.mismatched:
        raise typer.Exit(1)
