"""The ``herald`` command."""
from __future__ import annotations

import json
import re
import sys
from importlib.metadata import PackageNotFoundError, version as package_version

import psycopg
import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.markup import escape

from infra.tools.cli import (
    api as api_command,
    apikeys,
    campaign as campaign_cli,
    db,
    devices as devices_cli,
    dlq as dlq_cli,
    notifications as notifications_cli,
    sandbox as sandbox_cli,
    schedules as schedules_cli,
    schemas,
    segments as segments_cli,
    stack,
    tail as tail_cli,
    templates as templates_cli,
    topics as topics_cli,
    users as users_cli,
    worker,
)
from infra.tools.cli.demo import demo as demo_command
from infra.tools.cli.errors import CliError
from infra.tools.cli.scheduler import scheduler as scheduler_command

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
app.command("demo")(demo_command)
app.command("scheduler")(scheduler_command)
app.add_typer(campaign_cli.app, name="campaign")
app.add_typer(users_cli.app, name="users")
app.command("api")(api_command.api)
app.add_typer(apikeys.app, name="apikeys")
app.add_typer(dlq_cli.app, name="dlq")
app.add_typer(templates_cli.app, name="templates")
app.add_typer(topics_cli.app, name="topics")
app.add_typer(sandbox_cli.app, name="sandbox")
app.add_typer(devices_cli.app, name="devices")
app.add_typer(notifications_cli.app, name="notifications")
app.add_typer(schedules_cli.app, name="schedules")
app.add_typer(segments_cli.app, name="segments")
app.command("tail")(tail_cli.tail)


def _version() -> str:
    try:
        return package_version("herald")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        print(f"herald {_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="print Herald's version and exit", is_eager=True,
                                 callback=_print_version),
) -> None:
    """Herald: domain events on Kafka → email, SMS and push. Settings come from HERALD_* variables (see `herald config`)."""
    from infra.settings import Settings

    if "--help" not in sys.argv[1:]:
        Settings()  # a bad HERALD_* value stops every command here, as one line (main), before any work starts


@app.command()
def config() -> None:
    """Print every setting with its current value (secrets masked)."""
    from infra.settings import Settings

    for k, v in Settings().masked().items():
        print(f"HERALD_{k.upper():<28} {v}")


def _variable(loc: tuple[object, ...]) -> str:
    return "HERALD_" + "__".join(str(part).upper() for part in loc if not isinstance(part, int))


def _expected(field: str) -> str:
    """What a variable that did not parse should look like, from the setting's default."""
    from infra.settings import Settings

    info = Settings.model_fields.get(field)
    if info is None:
        return "a valid value"
    default = info.get_default(call_default_factory=True)
    if hasattr(default, "model_dump"):
        return f"a JSON object of {', '.join(type(default).model_fields)}, or set them one by one ({_variable((field, 'FIELD'))})"
    if isinstance(default, list):
        return f"a JSON list, e.g. '{json.dumps(default)}'"
    return "a valid value"


def setting_error(exc: ValidationError | SettingsError) -> str:
    """One line naming the HERALD_* variable and what it expects."""
    if isinstance(exc, SettingsError):
        m = re.search(r'field "([^"]+)"', str(exc))
        field = m.group(1) if m else ""
        return f"invalid {_variable((field,)) if field else 'HERALD_* setting'}: expected {_expected(field)}"
    problems = []
    for e in exc.errors():
        if not e["loc"]:  # a check across settings names its variables itself
            problems.append(str(e["msg"]).removeprefix("Value error, "))
            continue
        got = f" (got {e['input']!r})" if isinstance(e.get("input"), (str, int, float)) else ""
        problems.append(f"{_variable(e['loc'])}: {e['msg']}{got}")
    return "invalid HERALD_* setting: " + "; ".join(problems)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def main() -> None:
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    try:
        app()
    except CliError as exc:
        err.print("[red]error:[/] " + escape(_one_line(exc)))
        sys.exit(1)
    except (SettingsError, ValidationError) as exc:
        err.print("[red]error:[/] " + escape(_one_line(setting_error(exc))))
        sys.exit(2)
    except psycopg.OperationalError as exc:  # PostgreSQL went away in a command without its own message
        err.print("[red]error:[/] " + escape(_one_line(
            f"PostgreSQL does not answer ({exc}); start it with `herald stack up` or check HERALD_DATABASE_URL")))
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
