"""herald demo: the whole pipeline on the local stack, with the sandbox providers, and what it delivered."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from infra.db import migrate, one_row
from infra.settings import Settings
from infra.tools.children import spawn, stop
from infra.tools.cli.errors import CliError
from infra.tools.cli.kafka import client_config
from infra.tools.cli.stack import env_no_proxy
from infra.topics import ensure_topics

console = Console(width=None if sys.stdout.isatty() else 150)

# a notification is finished when its status is one of these (it may still be "sent" on one
# channel while another waits, so the wait below also compares queued and sent deliveries)
FINISHED = {"sent", "delivered", "suppressed", "skipped", "rate_limited", "expired", "failed", "dead_lettered"}


def _wait_for_worker(settings: Settings, worker: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    """Until the worker's consumer group is stable, so the latencies shown are the pipeline's, not start-up."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(client_config(settings))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise CliError(f"the worker stopped (exit {worker.returncode}); see {log}")
        try:
            group = admin.describe_consumer_groups([settings.app_id])[settings.app_id].result(5)
            if group.state == ConsumerGroupState.STABLE and group.members:
                return
        except Exception:  # noqa: BLE001 - the group does not exist yet
            pass
        time.sleep(0.3)
    raise CliError(f"the worker did not join its consumer group within {timeout:.0f}s; see {log}")


def demo_order(user_id: str, i: int) -> dict[str, Any]:
    """The i-th demo OrderPlaced: its total is what its items add up to."""
    items: list[dict[str, Any]] = [{"sku": "MUG", "name": "Herald mug", "quantity": 1 + i, "unit_price_cents": 1495},
             {"sku": "TEE", "name": "Herald tee", "quantity": 1, "unit_price_cents": 1500}]
    total = sum(it["quantity"] * it["unit_price_cents"] for it in items)
    return {"user_id": user_id, "order_id": f"A-{1000 + i}", "currency": "EUR", "total_cents": total, "items": items}


def _emit(settings: Settings, users: list[str]) -> tuple[list[tuple[str, str, str]], float]:
    """A handful of events from 'upstream services'; returns (event id, type, user) and the emit time."""
    from infra.kafka.producer import Producer
    from infra.kafka.records import OutRecord
    from producers.sdk import Emitter

    sent: list[tuple[str, str, str]] = []
    t0 = time.time()
    with Emitter(settings=settings) as sdk:
        for i, uid in enumerate(users):
            sent.append((sdk.emit("OrderPlaced", demo_order(uid, i)), "OrderPlaced", uid))
        sent.append((sdk.emit("UserFollowed", {"user_id": users[0], "follower_id": users[1], "follower_name": "Grace"}),
                     "UserFollowed", users[0]))
        sent.append((sdk.emit("PasswordResetRequested", {"user_id": users[1], "reset_url": "https://example.test/reset/abc",
                                                         "expires_in_minutes": 15}), "PasswordResetRequested", users[1]))
        soon = datetime.now(UTC) + timedelta(seconds=4)
        sent.append((sdk.emit("BirthdayReached", {"user_id": users[2], "age": 30, "send_at": soon}), "BirthdayReached", users[2]))
    # bad input, as an upstream bug would produce it: dead-lettered with a reason, nothing else affected
    Producer(settings).send_all_blocking([OutRecord(settings.topic("events"), b"demo", b"{not avro}")])
    return sent, t0


def _progress(conn: psycopg.Connection, ids: list[str]) -> tuple[int, bool]:
    rows = conn.execute("SELECT id, status FROM notifications WHERE id = ANY(%s)", (ids,)).fetchall()
    # every queued delivery must have its outcome in the status history (the table reads it), not only in the ledger
    queued, sent = one_row(conn.execute(
        """SELECT count(*) FILTER (WHERE status = 'queued'),
                  count(*) FILTER (WHERE status IN ('sent', 'failed', 'dead_lettered') AND channel IS NOT NULL)
           FROM status_history WHERE notification_id = ANY(%s)""",
        (ids,)).fetchone())
    finished = sum(1 for _, s in rows if s in FINISHED)
    return finished, finished == len(ids) and queued == sent


def _report(conn: psycopg.Connection, sent: list[tuple[str, str, str]], t0: float, sandbox) -> None:
    ids = [e for e, _, _ in sent]
    table = Table(title="What Herald delivered", show_lines=False)
    for col in ("event", "user", "channel", "to", "template", "status", "reason", "after emit"):
        table.add_column(col)
    kinds = {e: k for e, k, _ in sent}
    rows = conn.execute(
        """
        SELECT n.id, n.user_id, h.channel, d.address, n.template, h.status, h.reason, d.sent_at
        FROM notifications n
        JOIN LATERAL (SELECT DISTINCT ON (channel) channel, status, reason FROM status_history
                      WHERE notification_id = n.id AND channel IS NOT NULL ORDER BY channel, id DESC) h ON true
        LEFT JOIN delivery_state d ON d.notification_id = n.id AND d.channel = h.channel
        WHERE n.id = ANY(%s) ORDER BY n.created_at, n.id, h.channel
        """, (ids,)).fetchall()
    for nid, uid, channel, address, template, status, reason, sent_at in rows:
        took = f"{sent_at.timestamp() - t0:.2f}s" if sent_at else ""
        colour = "green" if status in ("sent", "delivered") else "yellow"
        table.add_row(kinds.get(nid, "?"), uid, channel, address or "", template or "", f"[{colour}]{status}[/]", reason or "", took)
    console.print(table)
    inbox = sandbox.control.inbox()
    by_provider: dict[str, int] = {}
    for m in inbox:
        by_provider[m["provider"]] = by_provider.get(m["provider"], 0) + 1
    console.print("Sandbox providers received: " + ", ".join(f"{p} {n}" for p, n in sorted(by_provider.items())))
    sample = next((m for m in inbox if m["provider"] == "smtp"), None)
    if sample:
        console.print(f"[bold]An email as the SMTP sandbox got it[/] (to {sample['to']}): {sample.get('subject', '')}")
        console.print("  " + (sample.get("text") or "").strip().replace("\n", "\n  "))


def demo(
    users: int = typer.Option(3, min=3, max=50, help="demo users to create (each run makes new ones)"),
    timeout: float = typer.Option(90.0, help="seconds to wait for the pipeline to finish"),
) -> None:
    """Run the pipeline end to end and print what was delivered.

    Expects the stack (`herald stack up`, done by `make demo`). Migrates, seeds
    templates and demo users, starts the sandbox providers, a worker and the
    scheduler, emits a handful of events (orders, a follower, a password reset,
    a birthday scheduled 4 s ahead, one undecodable record), waits until every
    notification is finished, prints a table (to whom, which template, how long
    it took), and stops everything it started.
    """
    from infra.tools.sandbox.server import running_sandbox, with_free_ports
    from infra.tools.seed import seed_demo_users, seed_templates
    from infra.tools.stack import stack_status

    env_no_proxy()
    base = Settings()
    down = [c.name for c in stack_status(base) if not c.answers]
    if down:
        raise CliError(f"{', '.join(down)} not answering: run `herald stack up` first (make demo does)")
    ensure_topics(base)
    migrate(base)
    tag = uuid.uuid4().hex[:6]
    logs = base.home / "demo"
    logs.mkdir(parents=True, exist_ok=True)
    with psycopg.connect(base.dsn, autocommit=True) as conn:
        seed_templates(conn)
        ids = seed_demo_users(conn, users, prefix=f"demo-{tag}")
    console.print(f"[bold]Herald demo[/] {tag}: {len(ids)} users, templates seeded; logs in {logs}")

    with running_sandbox(with_free_ports(base)) as sandbox:
        settings = sandbox.settings.model_copy(update={"metrics_port": 0})
        env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}
        worker = spawn(["worker", "--loglevel", "warning"], env, logs / f"worker-{tag}.log")
        scheduler = spawn(["scheduler", "--metrics-port", "0"], env, logs / f"scheduler-{tag}.log")
        try:
            with console.status("starting the worker and the scheduler"):
                _wait_for_worker(settings, worker, logs / f"worker-{tag}.log")
            sent, t0 = _emit(settings, ids)
            event_ids = [e for e, _, _ in sent]
            console.print(f"emitted {len(sent)} events with the SDK (+1 undecodable record)")
            with psycopg.connect(settings.dsn, autocommit=True) as conn, Progress(
                TextColumn("notifications finished"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(), console=console, transient=True) as bar:
                task = bar.add_task("wait", total=len(event_ids))
                deadline = time.monotonic() + timeout
                while True:
                    done, complete = _progress(conn, event_ids)
                    bar.update(task, completed=done)
                    if complete:
                        break
                    if worker.poll() is not None:
                        raise CliError(f"the worker stopped (exit {worker.returncode}); see {logs}/worker-{tag}.log")
                    if time.monotonic() > deadline:
                        raise CliError(f"not finished after {timeout:.0f}s ({done}/{len(event_ids)}); see {logs}")
                    time.sleep(0.2)
                _report(conn, sent, t0, sandbox)
            console.print(f"finished in {time.time() - t0:.1f}s after the first emit; the undecodable record is in "
                          f"{settings.topic('dlq')} (try `herald dlq stats`)")
        finally:
            stop(worker)
            stop(scheduler)
    console.print("[green]✓[/] demo done, worker and scheduler stopped")
    _console_key(base)


def _console_key(settings: Settings) -> None:
    """The last lines: where the console is and a key (read, admin) that signs in to it."""
    import httpx

    from producers.api.keys import new_key

    k = new_key()
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO api_keys (name, prefix, key_hash, scopes) VALUES (%s, %s, %s, %s)",
                     ("demo-console", k.prefix, k.key_hash, ["read", "admin"]))
    url = f"http://{settings.api_host}:{settings.api_port}/console"
    try:
        up = httpx.get(f"{url}/login", timeout=1).status_code == 200
    except httpx.HTTPError:
        up = False
    console.print(f"Console: [bold]{url}[/] ({'answering now' if up else 'served by `herald api`: start it to open it'})",
                  highlight=False, soft_wrap=True)
    console.print(f"Sign in with this key (scopes read, admin; shown once): {k.key}", highlight=False, soft_wrap=True)
