"""The ``herald`` command."""
from __future__ import annotations

import sys

import typer
from pydantic import ValidationError
from rich.console import Console

from infra.cli import db, schemas, stack, worker
from infra.cli import api as api_command, apikeys
from infra.cli.errors import CliError
from infra.cli.scheduler import scheduler as scheduler_command
from infra.cli import campaign as campaign_cli
from infra.cli import users as users_cli
from infra.cli import dlq as dlq_cli
from infra.cli import templates as templates_cli

app = typer.Typer(
    help="Herald: domain events on Kafka → email, SMS and push. Settings come from HERALD_* variables (see `herald config`).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(stack.app, name="stack")
app.add_typer(db.app, name="db")
app.add_typer(schemas.app, name="schemas")
app.command("worker")(worker.worker)
from infra.cli.demo import demo as demo_command  # noqa: E402
app.command("demo")(demo_command)
app.command("scheduler")(scheduler_command)
app.add_typer(campaign_cli.app, name="campaign")
app.add_typer(users_cli.app, name="users")
app.command("api")(api_command.api)
app.add_typer(apikeys.app, name="apikeys")
app.add_typer(dlq_cli.app, name="dlq")
app.add_typer(templates_cli.app, name="templates")
from infra.cli import devices as devices_cli, sandbox as sandbox_cli  # noqa: E402
app.add_typer(sandbox_cli.app, name="sandbox")
app.add_typer(devices_cli.app, name="devices")


@app.command()
def config() -> None:
    """Print every setting with its current value (secrets masked)."""
    from infra.settings import Settings

    for k, v in Settings().masked().items():
        print(f"HERALD_{k.upper():<28} {v}")


def main() -> None:
    err = Console(stderr=True)
    try:
        app()
    except CliError as exc:
        err.print(f"[red]error:[/] {exc}")
        sys.exit(1)
    except ValidationError as exc:
        err.print(f"[red]error:[/] invalid HERALD_* setting: {exc}")
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
