"""herald notifications cancel: cancel what waits, by cancellation key or notification id."""
from __future__ import annotations

import json

import psycopg
import typer
from rich.console import Console

from infra.settings import Settings
from infra.tools.cli.errors import CliError

app = typer.Typer(help="Notifications: cancel what has not been sent yet.", no_args_is_help=True)


@app.command()
def cancel(
    key: str | None = typer.Option(None, "--key", help="a cancellation_key: every unsent notification carrying it"),
    notification_id: str | None = typer.Option(None, "--id", help="one notification id"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Cancel notifications that have not been sent: scheduled (send_at), deferred by quiet hours, waiting in a
    retry tier or in Kafka. They end `canceled` and are never delivered.

    --key cancels every notification carrying that cancellation_key that occurred before the cancel (later events
    with the key go on); --id cancels one notification (a sent one is refused). The command returns once every
    worker has seen the cancel (HERALD_CAMPAIGN__CANCEL_CACHE_SECONDS); nothing is sent after that. Canceling
    twice is harmless.
    """
    from producers import cancellations as cx
    from streams.stores.cancellations import CancelKind

    if (key is None) == (notification_id is None):
        raise CliError("give exactly one of --key KEY or --id NOTIFICATION_ID")
    settings = Settings()
    try:
        conn = psycopg.connect(settings.dsn, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise CliError(f"PostgreSQL does not answer ({str(exc).strip()}); start it with `herald stack up`") from exc
    with conn:
        if key is not None:
            if problem := cx.key_problem(key):
                raise CliError(f"--key: {problem}")
            done = cx.cancel(settings, conn, CancelKind.KEY, key)
        else:
            assert notification_id is not None
            row = conn.execute("SELECT status FROM notifications WHERE id = %s", (notification_id,)).fetchone()
            waiting = cx.pending(conn, notification_id)
            if row is None and not waiting:
                raise CliError(f"no notification {notification_id} (a just-accepted one appears once it is queued)")
            if row is not None and not waiting and (cx.is_sent(row[0]) or row[0] in cx.ENDED):
                raise CliError(f"notification {notification_id} already ended '{row[0]}'; nothing to cancel")
            done = cx.cancel(settings, conn, CancelKind.NOTIFICATION, notification_id)
    if as_json:
        typer.echo(json.dumps({"kind": str(done.kind), "key": done.key, "canceled_at": done.canceled_at.isoformat(),
                               "scheduled_canceled": done.scheduled}))
    else:
        Console(stderr=True).print(f"{done.kind} {done.key} canceled at {done.canceled_at:%Y-%m-%d %H:%M:%S}; "
                                   f"{done.scheduled} waiting row(s) ended 'canceled'")
