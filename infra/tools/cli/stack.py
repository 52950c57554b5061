"""herald stack up | down | status"""
from __future__ import annotations

import os
import time

import typer
from rich.console import Console
from rich.table import Table

from infra.settings import Settings
from infra.tools.cli.errors import CliError
from infra.tools.stack import ComponentStatus, components, stack_status
from infra.topics import ensure_topics

app = typer.Typer(help="Start, stop and inspect the local Kafka (KRaft), PostgreSQL and Redis on loopback.", no_args_is_help=True)
console = Console()


def bring_up(settings: Settings, quiet: bool = False) -> None:
    """Start what does not answer yet, then create Herald's topics. Harmless when all runs."""
    if settings.stack == "containers":
        from infra.tools.stack.containers import up_containers

        env = up_containers(settings)
        for k, v in env.items():
            console.print(f"export {k}={v}")
        return
    for name, comp in components(settings):
        t0 = time.monotonic()
        try:
            result = comp.up()
        except RuntimeError as exc:
            raise CliError(f"{name}: {exc}") from exc
        if not quiet:
            console.print(f"[green]✓[/] {name:<11} {comp.address:<28} {result} ({time.monotonic() - t0:.1f}s)")
    created = ensure_topics(settings)
    if not quiet:
        console.print(f"[green]✓[/] topics      {len(created)} created, prefix '{settings.topic_prefix}.'")


BROKERS = typer.Option(1, "--brokers", min=1, max=9,
                       help="1: the single node on HERALD_KAFKA_BOOTSTRAP; N > 1: an N-broker KRaft cluster on "
                            "HERALD_CLUSTER__PORT.. beside it (PostgreSQL and Redis as usual)")
SECURITY = typer.Option("plaintext", "--security", help="the cluster's client listener: plaintext or sasl_ssl "
                        "(SCRAM-SHA-512 over TLS, certificates and password made under HERALD_HOME)")


def bring_up_cluster(settings: Settings, brokers: int, security: str, quiet: bool = False) -> dict[str, str]:
    """PostgreSQL, Redis and an N-broker cluster; prints (and returns) the variables a client needs."""
    from infra.tools.stack.cluster import KafkaCluster

    if security not in ("plaintext", "sasl_ssl"):
        raise CliError(f"--security {security}: expected plaintext or sasl_ssl")
    for name, comp in components(settings):
        if name == "kafka":
            continue
        try:
            result = comp.up()
        except RuntimeError as exc:
            raise CliError(f"{name}: {exc}") from exc
        if not quiet:
            console.print(f"[green]✓[/] {name:<11} {comp.address:<28} {result}")
    cluster = KafkaCluster(settings, brokers)
    t0 = time.monotonic()
    try:
        result = cluster.up(security)  # type: ignore[arg-type]
    except RuntimeError as exc:
        raise CliError(f"kafka cluster: {exc}") from exc
    env = cluster.client_env(security)  # type: ignore[arg-type]
    if not quiet:
        console.print(f"[green]✓[/] {'cluster':<11} {env['HERALD_KAFKA_BOOTSTRAP']:<28} {result} "
                      f"({time.monotonic() - t0:.1f}s)")
        console.print("# a client of the cluster needs (then `herald topics ensure` creates Herald's topics on it):")
        for k, v in env.items():
            console.print(f"export {k}={v}", soft_wrap=True, highlight=False)
    return env


@app.command()
def up(brokers: int = BROKERS, security: str = SECURITY) -> None:
    """Start Kafka, PostgreSQL and Redis (each only if it does not answer) and create Herald's topics.

    Kafka's jars come from Maven Central once and are cached under HERALD_HOME;
    PostgreSQL and Redis come from Debian's packages when missing. With
    HERALD_STACK=containers and a Docker engine, testcontainers starts them instead.
    `--brokers 3 [--security sasl_ssl]` starts a 3-broker cluster beside the single node instead and
    prints the HERALD_KAFKA_* variables of its connection.
    """
    if brokers > 1 or security != "plaintext":
        if brokers == 1:
            raise CliError("--security sasl_ssl is for the cluster: add --brokers 3")
        bring_up_cluster(Settings(), brokers, security)
        return
    bring_up(Settings())


@app.command()
def down(cluster_only: bool = typer.Option(False, "--cluster", help="stop only the multi-broker cluster")) -> None:
    """Stop the components that `herald stack up` started (servers it found running are left alone)."""
    from infra.tools.stack.cluster import KafkaCluster

    settings = Settings()
    console.print(f"{'cluster':<11} {KafkaCluster(settings).down()}")
    if cluster_only:
        return
    for name, comp in reversed(components(settings)):
        console.print(f"{name:<11} {comp.down()}")


@app.command()
def status() -> None:
    """Print each component, its address and whether it answers; exit 1 if one does not."""
    from infra.tools.stack.cluster import KafkaCluster

    settings = Settings()
    table = Table("component", "address", "answers")
    rows = stack_status(settings)
    cluster = KafkaCluster(settings)
    state = cluster.state()
    if state is not None:   # started by `herald stack up --brokers N`
        sasl = state.get("security") == "sasl_ssl"
        for n in cluster.nodes:
            address = f"{n.address}" + (f", SASL_SSL {n.sasl_port}" if sasl else "")
            rows.append(ComponentStatus(f"kafka-{n.node_id}", address, n.pid is not None and n.answers()))
    for row in rows:
        table.add_row(row.name, row.address, "[green]yes[/]" if row.answers else "[red]no[/]")
    console.print(table)
    if not all(r.answers for r in rows):
        raise typer.Exit(1)


def env_no_proxy() -> None:
    """With a proxy in the environment the SDKs would route loopback through it."""
    for var in ("NO_PROXY", "no_proxy"):
        current = os.environ.get(var, "")
        if "127.0.0.1" not in current:
            os.environ[var] = ",".join(filter(None, [current, "127.0.0.1", "localhost"]))
