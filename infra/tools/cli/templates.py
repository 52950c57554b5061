"""herald templates list | show | add | activate | preview | seed"""
from __future__ import annotations

from pathlib import Path

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from infra.db import one_row
from infra.settings import CHANNELS, Settings
from infra.tools.cli.errors import CliError, json_object
from infra.tools.cli.output import print_rows
from streams.stages.route.render import RenderFailure, render
from streams.templates import Environments, TemplateSource, check_syntax, compile_template

app = typer.Typer(
    help="Notification templates: code x channel x locale, versioned, one active version each (Jinja2, sandboxed).",
    no_args_is_help=True,
)
console = Console()

CHANNEL = typer.Option(..., "--channel", "-c", help="email | sms | push")
LOCALE = typer.Option("default", "--locale", "-l", help="locale (fallback de-AT → de → default)")

SAMPLE_USER = {"id": "sample-user", "first_name": "Ada", "locale": "en", "time_zone": "Europe/Vienna"}
SAMPLE_VARIABLES: dict[str, dict] = {
    "order_confirmation": {
        "event_id": "e-sample", "user_id": "sample-user", "order_id": "A-1001", "currency": "EUR", "total_cents": 4550,
        "items": [{"sku": "mug", "name": "Mug", "quantity": 2, "unit_price_cents": 1275},
                  {"sku": "tee", "name": "T-Shirt", "quantity": 1, "unit_price_cents": 2000}],
        "shipping_address": {"line1": "Main St 1", "city": "Vienna", "postal_code": "1010", "country": "AT"},
    },
    "new_follower": {"follower_id": "u-2", "follower_name": "Grace", "follower_avatar_url": None},
    "password_reset": {"reset_url": "https://example.test/reset/abc", "expires_in_minutes": 30},
    "birthday_greeting": {"age": 30},
    "weekly_digest": {"headline": "Three things happened this week", "highlights": ["one", "two", "three"]},
}


def _connect() -> psycopg.Connection:
    settings = Settings()
    try:
        return psycopg.connect(settings.dsn, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise CliError(f"cannot reach PostgreSQL ({exc}); start the stack (`herald stack up`) and run `herald db migrate`") from exc


def _check_channel(channel: str) -> None:
    if channel not in CHANNELS:
        raise CliError(f"unknown channel {channel!r}; use one of {', '.join(CHANNELS)}")


def _read(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc}") from exc


def _load(conn: psycopg.Connection, code: str, channel: str, locale: str, version: int | None) -> TemplateSource:
    cond = "version = %s" if version is not None else "active"
    args = (code, channel, locale) + ((version,) if version is not None else ())
    row = conn.execute(
        f"SELECT code, channel, locale, version, body_text, subject, body_html, push_title FROM templates "
        f"WHERE code = %s AND channel = %s AND locale = %s AND {cond}", args).fetchone()
    if row is None:
        which = f"version {version}" if version is not None else "an active version"
        raise CliError(f"{code}/{channel}/{locale} has no {which}; see `herald templates list --code {code}`")
    return TemplateSource(*row)


@app.command("list")
def list_(code: str = typer.Option(None, "--code", help="only this template code"),
          as_json: bool = typer.Option(False, "--json", help="one JSON object per line instead of a table")) -> None:
    """List templates: each code, channel and locale with its active version and how many versions exist."""
    with _connect() as conn:
        rows = conn.execute(
            "SELECT code, channel, locale, max(version) FILTER (WHERE active), count(*), max(created_at) FROM templates "
            "WHERE %s::text IS NULL OR code = %s GROUP BY code, channel, locale ORDER BY code, channel, locale",
            (code, code)).fetchall()
    if not rows:
        raise CliError("no templates" + (f" with code {code!r}" if code else "") + "; `herald templates seed` adds the shipped ones")
    print_rows(rows, as_json,
               record=lambda r: {"code": r[0], "channel": r[1], "locale": r[2], "active_version": r[3], "versions": r[4],
                                 "last_added": r[5].isoformat()},
               table=Table("code", "channel", "locale", "active", "versions", "last added"),
               cells=lambda r: (r[0], r[1], r[2], f"v{r[3]}" if r[3] else "[red]none[/]", str(r[4]),
                                r[5].strftime("%Y-%m-%d %H:%M")), console=console)


@app.command()
def show(code: str, channel: str = CHANNEL, locale: str = LOCALE,
         version: int = typer.Option(None, "--version", "-v", help="a version (default: the active one)")) -> None:
    """Print one template's parts (subject, text, HTML, push title)."""
    _check_channel(channel)
    with _connect() as conn:
        t = _load(conn, code, channel, locale, version)
    console.print(f"[bold]{t.code}/{t.channel}/{t.locale} v{t.version}[/]")
    for label, part in (("subject", t.subject), ("push title", t.push_title), ("text", t.body_text), ("html", t.body_html)):
        if part is not None:
            console.rule(label)
            console.print(part, markup=False, highlight=False)


@app.command()
def add(
    code: str,
    channel: str = CHANNEL,
    locale: str = LOCALE,
    text_file: Path = typer.Option(..., "--text", help="file with the text part (SMS body, push body, email text part)"),
    subject: str = typer.Option(None, "--subject", help="email subject (a template too)"),
    html_file: Path = typer.Option(None, "--html", help="file with the email HTML part (autoescaped)"),
    push_title: str = typer.Option(None, "--push-title", help="push title (a template too)"),
    activate: bool = typer.Option(False, "--activate", help="make the new version the active one"),
) -> None:
    """Add a new version of a template (syntax-checked first); running workers pick it up once it is activated."""
    _check_channel(channel)
    if channel == "email" and not subject:
        raise CliError("an email template needs --subject")
    src = TemplateSource(code, channel, locale, 0, _read(text_file) or "", subject, _read(html_file), push_title)
    if not src.body_text.strip():
        raise CliError(f"{text_file} is empty: the text part is required")
    if err := check_syntax(Environments(), src):
        raise CliError(f"template does not compile: {err}; nothing was added")
    with _connect() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{code}/{channel}/{locale}",))
        version = one_row(conn.execute(
            "SELECT COALESCE(max(version), 0) + 1 FROM templates WHERE code = %s AND channel = %s AND locale = %s",
            (code, channel, locale)).fetchone())[0]
        if activate:
            conn.execute("UPDATE templates SET active = false WHERE code = %s AND channel = %s AND locale = %s AND active",
                         (code, channel, locale))
        conn.execute("INSERT INTO templates (code, channel, locale, version, subject, body_text, body_html, push_title, active) "
                     "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                     (code, channel, locale, version, src.subject, src.body_text, src.body_html, src.push_title, activate))
    console.print(f"[green]✓[/] added {code}/{channel}/{locale} v{version}" + (" (active)" if activate else
                  f"; activate it with `herald templates activate {code} -c {channel} -l {locale} -v {version}`"))


def activate_version(conn: psycopg.Connection, code: str, channel: str, locale: str, version: int) -> bool:
    """Make ``version`` the active one of its code, channel and locale (one transaction); False when it does not exist.

    `herald templates activate` and the console's Activate button both call this.
    """
    with conn.transaction():
        exists = conn.execute("SELECT 1 FROM templates WHERE code = %s AND channel = %s AND locale = %s AND version = %s",
                              (code, channel, locale, version)).fetchone()
        if not exists:
            return False
        conn.execute("UPDATE templates SET active = false WHERE code = %s AND channel = %s AND locale = %s AND active",
                     (code, channel, locale))
        conn.execute("UPDATE templates SET active = true WHERE code = %s AND channel = %s AND locale = %s AND version = %s",
                     (code, channel, locale, version))
    return True


def sample_context(code: str, locale: str, variables: dict | None = None) -> dict:
    """What a preview renders with: ``variables``, else the code's sample data, plus a sample user and ids."""
    context = dict(variables if variables is not None else SAMPLE_VARIABLES.get(code, {}))
    context.setdefault("user", {**SAMPLE_USER, "locale": locale})
    context.setdefault("event_id", "e-sample")
    context.setdefault("notification_id", context["event_id"])
    return context


@app.command()
def activate(code: str, channel: str = CHANNEL, locale: str = LOCALE,
             version: int = typer.Option(..., "--version", "-v", help="the version to make active")) -> None:
    """Make one version the active one (the others of that code, channel and locale become inactive)."""
    _check_channel(channel)
    with _connect() as conn:
        if not activate_version(conn, code, channel, locale, version):
            raise CliError(f"{code}/{channel}/{locale} has no version {version}; see `herald templates list --code {code}`")
    console.print(f"[green]✓[/] {code}/{channel}/{locale} v{version} is active (workers pick it up within seconds)")


@app.command()
def preview(
    code: str,
    channel: str = CHANNEL,
    locale: str = LOCALE,
    version: int = typer.Option(None, "--version", "-v", help="a version (default: the active one)"),
    variables: str = typer.Option(None, "--vars", help="template variables as a JSON object (default: sample data for the code)"),
) -> None:
    """Render a template with sample data (or --vars) exactly as the route stage would, without sending anything."""
    _check_channel(channel)
    context = json_object(variables, "--vars") if variables is not None else None
    context = sample_context(code, locale, context)
    with _connect() as conn:
        src = _load(conn, code, channel, locale, version)
    out = render(compile_template(Environments(), src), channel, context, {"notification_id": context["event_id"]})
    if isinstance(out, RenderFailure):
        raise CliError(f"{out.reason}: {out.message}")
    console.print(f"[bold]{src.code}/{src.channel}/{src.locale} v{src.version}[/]")
    for label, part in (("subject", out.subject), ("push title", out.push_title), ("text", out.text), ("html", out.html)):
        if part is not None:
            console.rule(label)
            console.print(part, markup=False, highlight=False)
    if channel == "sms":
        console.print(f"[dim]{out.sms_segments} SMS segment(s)[/]")


@app.command()
def seed(demo_users: int = typer.Option(0, "--demo-users", help="also upsert this many demo users (demo-000000...)")) -> None:
    """Add the shipped templates (every route's and the campaigns'), leaving existing ones untouched."""
    from infra.tools.seed import seed_demo_users, seed_templates

    with _connect() as conn:
        n = seed_templates(conn)
        console.print(f"[green]✓[/] {n} template(s) added")
        if demo_users:
            ids = seed_demo_users(conn, demo_users)
            console.print(f"[green]✓[/] {len(ids)} demo user(s) upserted")
