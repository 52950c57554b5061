"""herald sandbox: the local provider stand-ins (SendGrid, Twilio, FCM, APNs, SMTP)."""
from __future__ import annotations

import asyncio
import json

import httpx
import typer
from rich.console import Console
from rich.table import Table

from infra.settings import Settings
from infra.tools.cli.errors import CliError

app = typer.Typer(help="Local stand-ins for SendGrid, Twilio, FCM, APNs, SMTP and a Schema Registry: record what they receive, "
                  "inject faults.",
                  no_args_is_help=True)


def _control():
    from infra.tools.sandbox.control import SandboxControl
    from infra.tools.sandbox.server import Ports

    return SandboxControl(Ports.from_settings(Settings()).control_url)


@app.command()
def run(registry_port: int = typer.Option(None, "--registry-port", help="port of the Schema Registry stand-in (default: "
                                          "the port of HERALD_SCHEMA_REGISTRY__URL, else 8081; 0: none)")) -> None:
    """Start every sandbox provider in this process until Ctrl-C.

    Ports come from settings: SendGrid HERALD_SENDGRID_HOST (8025), Twilio HERALD_TWILIO_BASE_URL (8026),
    FCM HERALD_FCM_URL (8027), APNs HERALD_APNS__URL (8028, HTTP/2 over TLS; key, CA and certificate generated
    under HERALD_HOME/sandbox/apns), SMTP HERALD_SMTP_PORT (2525). The control API is on the SendGrid port.
    The Schema Registry stand-in (Confluent's REST API; infra/tools/sandbox/registry.py) listens beside them.
    """
    from infra.tools.sandbox.server import Ports

    settings = Settings()
    p = Ports.from_settings(settings)
    if registry_port is None:
        url = settings.schema_registry.url
        registry_port = _registry_port(url.split(",")[0]) if url else 8081
    Console().print(f"sandbox: sendgrid :{p.sendgrid}  twilio :{p.twilio}  fcm :{p.fcm}  apns :{p.apns}  smtp :{p.smtp}  "
                    + (f"schema registry :{registry_port}  " if registry_port else "")
                    + f"(inbox: {p.control_url}/_sandbox/inbox)")
    try:
        asyncio.run(_serve(settings, registry_port))
    except OSError as exc:
        raise CliError(f"cannot listen: {exc}; is another sandbox running? (`herald sandbox inbox` asks it)") from exc


def _registry_port(url: str) -> int:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


async def _serve(settings: Settings, registry_port: int) -> None:
    from infra.tools.sandbox.registry import RegistrySandbox
    from infra.tools.sandbox.server import serve_forever

    registry = RegistrySandbox(settings.sandbox_host, registry_port) if registry_port else None
    if registry is not None:
        await registry.start()
    try:
        await serve_forever(settings)
    finally:
        if registry is not None:
            await registry.stop()


@app.command()
def inbox(channel: str = typer.Option(None, help="email, sms or push; default: all"),
          to: str = typer.Option(None, help="only messages to this address"),
          limit: int = typer.Option(20, help="show the last N messages"),
          as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table")) -> None:
    """Show what the running sandbox received (and how many requests each provider got)."""
    try:
        ctl = _control()
        messages = ctl.inbox(channel, to)
        stats = ctl.stats()
    except httpx.HTTPError as exc:
        raise CliError(f"the sandbox does not answer ({exc}); start it with `herald sandbox run`") from exc
    if as_json:
        print(json.dumps(messages[-limit:], indent=2, default=str))
        return
    table = Table(title=f"{len(messages)} messages; requests {stats['requests']}")
    for col in ("channel", "provider", "to", "subject / title", "text"):
        table.add_column(col)
    for m in messages[-limit:]:
        table.add_row(m["channel"], m["provider"], m["to"], m.get("subject") or m.get("title") or "",
                      (m.get("text") or "")[:60])
    Console().print(table)


@app.command()
def clear() -> None:
    """Forget every recorded message and request count."""
    try:
        _control().clear()
    except httpx.HTTPError as exc:
        raise CliError(f"the sandbox does not answer ({exc}); start it with `herald sandbox run`") from exc


@app.command()
def fault(provider: str = typer.Argument(..., help="sendgrid, twilio, fcm, apns or smtp"),
          spec: list[str] = typer.Argument(None, help="name=value, e.g. storm=-1 error_rate=0.1 latency_ms=200 "
                                           "rate_limit=5 retry_after=2 unregistered_tokens=a,b"),
          reset: bool = typer.Option(False, "--reset", help="clear the faults of every provider")) -> None:
    """Inject faults into a running sandbox provider (or --reset them all)."""
    try:
        ctl = _control()
        if reset:
            ctl.clear_faults()
            return
        changes: dict[str, object] = {}
        for item in spec or []:
            name, eq, value = item.partition("=")
            if not eq:
                raise CliError(f"fault {item!r} is not name=value; e.g. storm=-1")
            if name in ("unregistered_tokens", "bad_tokens", "invalid_numbers", "undelivered_numbers", "invalid_addresses",
                        "refused_accounts", "hold"):
                changes[name] = [v for v in value.split(",") if v]
            else:
                try:
                    changes[name] = float(value) if "." in value else int(value)
                except ValueError as exc:
                    raise CliError(f"fault {name}: {value!r} is not a number") from exc
        print(json.dumps(ctl.faults(provider, **changes)))
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    except httpx.HTTPError as exc:
        raise CliError(f"the sandbox does not answer ({exc}); start it with `herald sandbox run`") from exc
