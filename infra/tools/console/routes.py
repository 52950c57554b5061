"""The console's pages: server-rendered HTML (Jinja2, autoescaped) under /console of the API app.

Every page needs a session (``session.py``) of an API key with the read or admin scope and no tenant; every POST
carries the session's CSRF token; replay, cancel and activate need the admin scope. Regions that refresh on their
own are fetched again as HTML fragments (``…/part``) by ``static/console.js``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

import psycopg
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from infra.db import connect
from infra.settings import Settings
from infra.tools.cli.dlq import decoded
from infra.tools.cli.templates import activate_version, sample_context
from infra.tools.console import data
from infra.tools.console.jobs import ReplayJobs, by_target
from infra.tools.console.kafka_view import KafkaView, circuits
from infra.tools.console.session import (
    COOKIE,
    LOGIN_COOKIE,
    Session,
    SessionError,
    csrf_ok,
    csrf_token,
    new_session,
    sign,
    verify,
)
from producers import campaign_run, dlq
from producers.api.auth import caller_of
from producers.api.keys import Scope
from producers.api.ratelimit import hit
from producers.api.resources import ApiResources
from streams.stages.route.render import RenderFailure, render
from streams.templates import Environments, TemplateSource, compile_template

log = logging.getLogger("herald.console")

STATIC = Path(__file__).parent / "static"
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
# no script but our own file; inline styles only for a previewed email (its own HTML in a sandboxed frame)
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
LOGIN_ATTEMPTS = 20       # sign-in attempts per client address a minute
DLQ_SHOWN = 200

router = APIRouter(include_in_schema=False)


def shared_secret(settings: Settings) -> bytes:
    """The session secret every API process shares when none is configured: one random row in PostgreSQL (migration
    018), made by whichever process comes first. PostgreSQL away: a secret of this process alone (its sessions end
    with it, and another process refuses them), said in the log."""
    mine = secrets.token_bytes(32)
    try:
        with connect(settings, autocommit=True) as conn:
            conn.execute("INSERT INTO console_secret (id, secret) VALUES (1, %s) ON CONFLICT (id) DO NOTHING", (mine,))
            row = conn.execute("SELECT secret FROM console_secret WHERE id = 1").fetchone()
        return bytes(row[0]) if row else mine
    except psycopg.Error as exc:
        log.warning("console: no shared session secret (%s); sessions hold in this process only", exc)
        return mine


@dataclass
class Console:
    """The console's state in the API process (``app.state.console``)."""

    settings: Settings
    secret: bytes
    jobs: ReplayJobs
    kafka: KafkaView
    pages: Environment

    @classmethod
    def of(cls, settings: Settings) -> Console:
        cfg = settings.console
        secret = cfg.secret.get_secret_value().encode() if cfg.secret else shared_secret(settings)
        pages = Environment(loader=PackageLoader("infra.tools.console", "templates"), autoescape=select_autoescape(default=True))
        pages.filters["ts"] = _ts
        pages.filters["ms"] = lambda ms: dlq.format_ms(ms) if ms else ""
        pages.filters["pct"] = lambda x: f"{100 * x:.1f} %"
        return cls(settings, secret, ReplayJobs(settings), KafkaView(settings, cfg.refresh_seconds), pages)

    def close(self) -> None:
        self.kafka.close()


def _ts(v: datetime | None) -> str:
    return v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if v else ""


class NeedsSignIn(Exception):
    """No valid session: the page answers with the sign-in page (a fragment request: 401)."""


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Viewer:
    """Who is signed in: the API key's id, name, prefix and scopes, and the session (its CSRF token)."""

    key_id: int
    name: str
    prefix: str
    scopes: frozenset[str]
    session: Session
    csrf: str

    @property
    def admin(self) -> bool:
        return Scope.ADMIN in self.scopes


def console_of(request: Request) -> Console:
    return request.app.state.console


def res_of(request: Request) -> ApiResources:
    return request.app.state.resources


async def viewer(request: Request) -> Viewer:
    con = console_of(request)
    try:
        s = verify(con.secret, request.cookies.get(COOKIE))
    except SessionError as exc:
        raise NeedsSignIn(str(exc)) from exc
    res = res_of(request)
    if await res.redis.exists(con.settings.rkey("console-signed-out", s.nonce)):
        raise NeedsSignIn("this session was signed out; sign in again")
    async with res.db.connection() as conn:
        row = await (await conn.execute("SELECT name, prefix, scopes, tenant FROM api_keys WHERE id = %s AND revoked_at IS NULL",
                                        (s.key_id,))).fetchone()
    if row is None:
        raise NeedsSignIn("the API key of this session was revoked; sign in with another")
    name, prefix, scopes, tenant = row
    if tenant is not None or not {Scope.READ, Scope.ADMIN} & set(scopes):
        raise NeedsSignIn("the API key of this session lost the read and admin scopes; sign in with another")
    return Viewer(s.key_id, name, prefix, frozenset(scopes), s, csrf_token(con.secret, s.nonce))


SignedIn = Annotated[Viewer, Depends(viewer)]


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    con = console_of(request)
    html = con.pages.get_template(template).render(request=request, refresh=con.settings.console.refresh_seconds, **context)
    return HTMLResponse(html, status, headers=SECURITY_HEADERS)


SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY", "Cache-Control": "no-store",
                    "Referrer-Policy": "same-origin", "X-Content-Type-Options": "nosniff"}


async def form_of(request: Request) -> dict[str, str]:
    """An url-encoded form's fields (first value each); no multipart: the console's forms are small."""
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


async def checked_form(request: Request, who: Viewer, admin: bool = False) -> dict[str, str]:
    form = await form_of(request)
    if not csrf_ok(console_of(request).secret, who.session.nonce, form.get("csrf")):
        raise Refused(403, "refused: this form did not come from a console page of your session (missing or wrong CSRF "
                           "token); reload the page and try again")
    if admin and not who.admin:
        raise Refused(403, f"this needs an API key with the admin scope; the key {who.prefix} has: "
                           f"{', '.join(sorted(who.scopes))}")
    return form


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, 303, headers={"Cache-Control": "no-store"})


# --- sign-in ------------------------------------------------------------------

def login_page(request: Request, message: str | None, status: int = 200) -> HTMLResponse:
    con = console_of(request)
    nonce = secrets.token_urlsafe(16)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    resp = page(request, "login.html", status, message=message, csrf=csrf_token(con.secret, nonce),
                next=here if request.method == "GET" and not request.url.path.startswith("/console/login") else "")
    resp.set_cookie(LOGIN_COOKIE, nonce, max_age=3600, path="/console", httponly=True, samesite="strict",
                    secure=request.url.scheme == "https")
    return resp


@router.get("/login")
async def login_form(request: Request, why: str | None = None) -> HTMLResponse:
    return login_page(request, why)


@router.post("/login")
async def login(request: Request) -> Response:
    con, res = console_of(request), res_of(request)
    form = await form_of(request)
    if not csrf_ok(con.secret, request.cookies.get(LOGIN_COOKIE), form.get("csrf")):
        return login_page(request, "refused: the sign-in form was not this console's (CSRF); try again", 403)
    client = request.client.host if request.client else "?"
    verdict = await hit(res.redis, con.settings.rkey("console-login", client), LOGIN_ATTEMPTS, 60)
    if not verdict.allowed:
        return login_page(request, f"too many sign-in attempts; wait {verdict.retry_after}s", 429)
    key = form.get("key", "").strip()
    caller = await caller_of(res, key) if key.startswith("hk_") and len(key) <= 200 else None
    if caller is None:
        return login_page(request, "unknown or revoked API key", 401)
    if not {Scope.READ, Scope.ADMIN} & caller.scopes:
        return login_page(request, "this API key has neither the read nor the admin scope: "
                                   "create one with `herald apikeys create NAME --scope read` (or admin)", 403)
    if caller.tenant is not None:
        return login_page(request, "this API key is bound to a tenant; the console shows every tenant's data: "
                                   "use a key without a tenant", 403)
    s = new_session(caller.key_id, con.settings.console.session_minutes * 60)
    nxt = form.get("next", "")
    resp = see_other(nxt if nxt.startswith("/console/") and "//" not in nxt and "\\" not in nxt else "/console/")
    resp.set_cookie(COOKIE, sign(con.secret, s), max_age=int(con.settings.console.session_minutes * 60), path="/console",
                    httponly=True, samesite="strict", secure=request.url.scheme == "https")
    resp.delete_cookie(LOGIN_COOKIE, path="/console")
    return resp


@router.post("/logout")
async def logout(request: Request, who: SignedIn) -> Response:
    await checked_form(request, who)
    # the cookie is deleted, and its session refused from now on should a copy of it come back
    left = max(1, who.session.expires_at - int(time.time()))
    await res_of(request).redis.set(console_of(request).settings.rkey("console-signed-out", who.session.nonce), 1, ex=left)
    resp = see_other("/console/login?why=" + quote("signed out"))
    resp.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict")
    return resp


@router.get("/static/{name}")
async def static(name: str) -> Response:
    path = STATIC / name
    if "/" in name or path.suffix not in STATIC_TYPES or not path.is_file():
        return Response("not found", 404)
    return Response(path.read_bytes(), media_type=STATIC_TYPES[path.suffix], headers={"Cache-Control": "max-age=300"})


# --- overview -----------------------------------------------------------------

@router.get("")
async def root() -> Response:
    return see_other("/console/")


@router.get("/")
async def overview_page(request: Request, who: SignedIn) -> HTMLResponse:
    return page(request, "overview.html", who=who, tab="overview", **await overview_context(request))


@router.get("/overview/part")
async def overview_part(request: Request, who: SignedIn) -> HTMLResponse:
    return page(request, "overview_part.html", who=who, **await overview_context(request))


async def overview_context(request: Request) -> dict[str, Any]:
    con, res = console_of(request), res_of(request)
    ov, kafka, circ = await asyncio.gather(data.overview(res.db, time.time()), asyncio.to_thread(con.kafka.current),
                                           circuits(res.redis, con.settings))
    chart = {"x": ov.minutes, "series": [{"name": k, "values": v} for k, v in ov.deliveries.items()], "unit": "per minute"}
    lag: dict[str, int] = Counter()
    for (agent, _topic), n in kafka.lag.items():
        lag[agent] += n
    return {"ov": ov, "chart": json.dumps(chart), "kafka": kafka, "lag": sorted(lag.items()), "circuits": circ,
            "dlq_total": sum(kafka.dlq.values()), "dlq": sorted(kafka.dlq.items(), key=lambda kv: -kv[1])}


# --- message log --------------------------------------------------------------

@router.get("/messages")
async def messages(request: Request, who: SignedIn, q: str = "") -> HTMLResponse:
    q = q.strip()[:200]
    found = await data.search(res_of(request).db, q) if q else []
    return page(request, "messages.html", who=who, tab="messages", q=q, found=found, limit=data.SEARCH_LIMIT)


@router.get("/messages/{nid}")
async def message(request: Request, who: SignedIn, nid: str) -> HTMLResponse:
    got = await data.notification(res_of(request).db, nid[:200])
    if got is None:
        return page(request, "error.html", 404, who=who, tab="messages",
                    message=f"no notification '{nid}' (a just-accepted one appears once the pipeline has queued it)")
    n, events = got
    return page(request, "message.html", who=who, tab="messages", n=n, events=events)


# --- dead letters -------------------------------------------------------------

FILTERS = ("since", "until", "stage", "reason", "origin_topic")


def _words(text: str | None) -> frozenset[str]:
    return frozenset(w.strip() for w in (text or "").replace(",", " ").split() if w.strip())


def selection_from(f: dict[str, str]) -> dlq.Selection:
    """The filters of `herald dlq list/replay` from a form or query string; ValueError with a message for bad ones."""
    return dlq.Selection(
        since_ms=dlq.parse_time(f["since"]) if f.get("since") else None,
        until_ms=dlq.parse_time(f["until"]) if f.get("until") else None,
        stages=_words(f.get("stage")), error_classes=_words(f.get("reason")), origin_topics=_words(f.get("origin_topic")))


def _scan(settings: Settings, sel: dlq.Selection) -> tuple[list[dlq.Entry], Counter[tuple[str, str]]]:
    shown: list[dlq.Entry] = []
    counts: Counter[tuple[str, str]] = Counter()
    for e in sel.apply(dlq.scan(settings)):
        counts[(e.stage, e.error_class)] += 1
        if len(shown) < DLQ_SHOWN:
            shown.append(e)
    return shown, counts


@router.get("/dlq")
async def dead_letters(request: Request, who: SignedIn) -> HTMLResponse:
    filters = {k: request.query_params.get(k, "").strip() for k in FILTERS}
    ctx: dict[str, Any] = {"who": who, "tab": "dlq", "filters": filters, "entries": [], "counts": [], "error": None,
                           "shown": DLQ_SHOWN, "topic": console_of(request).settings.topic("dlq")}
    try:
        entries, counts = await asyncio.to_thread(_scan, console_of(request).settings, selection_from(filters))
        ctx.update(entries=entries, counts=sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])), total=sum(counts.values()))
    except (ValueError, dlq.DlqError) as exc:
        ctx["error"] = str(exc)
    return page(request, "dlq.html", **ctx)


@router.get("/dlq/record/{partition}/{offset}")
async def dead_letter(request: Request, who: SignedIn, partition: int, offset: int) -> HTMLResponse:
    settings = console_of(request).settings
    try:
        e = await asyncio.to_thread(dlq.fetch, settings, partition, offset, 15.0)
    except dlq.DlqError as exc:
        return page(request, "error.html", 404, who=who, tab="dlq", message=str(exc))
    headers, value = await asyncio.to_thread(decoded, settings, e)
    return page(request, "dlq_record.html", who=who, tab="dlq", e=e, summary=e.summary(), headers=headers,
                value=json.dumps(value, indent=2, default=str))


@router.post("/dlq/replay")
async def replay(request: Request, who: SignedIn) -> Response:
    """A dry run (the plan: what would go where, what is skipped and why) or, confirmed, the replay itself."""
    form = await checked_form(request, who, admin=True)
    con = console_of(request)
    filters = {k: form.get(k, "").strip() for k in FILTERS}
    try:
        sel = selection_from(filters)
        rate = float(form.get("rate") or 100)
        max_replays = int(form.get("max_replays") or 3)
        limit = int(form["limit"]) if form.get("limit") else None
        if rate <= 0 or max_replays < 1 or (limit is not None and limit < 1):
            raise ValueError("the rate must be positive, max replays and limit at least 1")
    except ValueError as exc:
        raise Refused(422, f"bad replay request: {exc}") from exc
    if form.get("action") == "replay":
        job = con.jobs.start(who.key_id, sel, max_replays, limit, rate)
        return see_other(f"/console/dlq/jobs/{job.id}")
    try:
        plan = await asyncio.to_thread(dlq.prepare_replay, con.settings, sel, max_replays, limit)
    except dlq.DlqError as exc:
        raise Refused(503, str(exc)) from exc
    return page(request, "dlq_plan.html", who=who, tab="dlq", filters=filters, rate=rate, max_replays=max_replays,
                limit=limit or "", plan=plan, targets=by_target(plan))


@router.get("/dlq/jobs/{job_id}")
async def replay_job(request: Request, who: SignedIn, job_id: str) -> HTMLResponse:
    job = console_of(request).jobs.get(job_id)
    if job is None:
        return page(request, "error.html", 404, who=who, tab="dlq", message=f"no replay {job_id} in this API process")
    return page(request, "dlq_job.html", who=who, tab="dlq", job=job)


@router.get("/dlq/jobs/{job_id}/part")
async def replay_job_part(request: Request, who: SignedIn, job_id: str) -> HTMLResponse:
    job = console_of(request).jobs.get(job_id)
    if job is None:
        return HTMLResponse("gone", 404)
    return page(request, "dlq_job_part.html", who=who, job=job)


@router.get("/dlq/jobs/{job_id}.json")
async def replay_job_json(request: Request, who: SignedIn, job_id: str) -> JSONResponse:
    job = console_of(request).jobs.get(job_id)
    return JSONResponse(job.json() if job else {"error": "no such replay"}, 200 if job else 404)


# --- campaigns ----------------------------------------------------------------

@router.get("/campaigns")
async def campaigns(request: Request, who: SignedIn) -> HTMLResponse:
    return page(request, "campaigns.html", who=who, tab="campaigns", campaigns=await data.campaigns(res_of(request).db))


@router.get("/campaigns/part")
async def campaigns_part(request: Request, who: SignedIn) -> HTMLResponse:
    return page(request, "campaigns_part.html", who=who, campaigns=await data.campaigns(res_of(request).db))


async def campaign_context(request: Request, cid: str) -> dict[str, Any] | None:
    db = res_of(request).db
    c = await data.campaign(db, cid)
    if c is None:
        return None
    bucket, points = await data.delivery_curve(db, c, datetime.now(UTC))
    total, xs, ys = 0, [], []
    for t, n in points:
        total += n
        xs.append(t)
        ys.append(total)
    curve = {"x": xs, "series": [{"name": "sent (cumulative)", "values": ys}], "unit": f"sent, {bucket}s buckets"}
    return {"c": c, "curve": json.dumps(curve)}


@router.get("/campaigns/{cid}")
async def campaign(request: Request, who: SignedIn, cid: str, flash: str | None = None) -> HTMLResponse:
    ctx = await campaign_context(request, cid[:200])
    if ctx is None:
        return page(request, "error.html", 404, who=who, tab="campaigns", message=f"no campaign '{cid}'")
    return page(request, "campaign.html", who=who, tab="campaigns", flash=flash, **ctx)


@router.get("/campaigns/{cid}/part")
async def campaign_part(request: Request, who: SignedIn, cid: str) -> HTMLResponse:
    ctx = await campaign_context(request, cid[:200])
    if ctx is None:
        return HTMLResponse("gone", 404)
    return page(request, "campaign_part.html", who=who, **ctx)


@router.post("/campaigns/{cid}/cancel")
async def cancel_campaign(request: Request, who: SignedIn, cid: str) -> Response:
    """The same cancel as DELETE /v1/campaigns/{id}: marked, then answered once every worker has seen it."""
    await checked_form(request, who, admin=True)
    settings = console_of(request).settings

    def cancel() -> datetime | None:
        with campaign_run.connect(settings) as conn:
            at = campaign_run.cancel(conn, cid)
            if at is not None:
                campaign_run.wait_for_workers(settings, at)
            return at

    at = await asyncio.to_thread(cancel)
    if at is None:
        raise Refused(404, f"no campaign '{cid}'")
    return see_other(f"/console/campaigns/{quote(cid)}?flash=" + quote(f"canceled at {_ts(at)} UTC: nothing is sent after this"))


# --- templates ----------------------------------------------------------------

@router.get("/templates")
async def templates(request: Request, who: SignedIn) -> HTMLResponse:
    rows = await data.templates(res_of(request).db)
    codes: dict[str, dict[str, Any]] = {}
    for t in rows:
        c = codes.setdefault(t.code, {"channels": set(), "locales": set(), "versions": 0, "active": 0})
        c["channels"].add(t.channel)
        c["locales"].add(t.locale)
        c["versions"] += 1
        c["active"] += t.active
    return page(request, "templates.html", who=who, tab="templates", codes=codes)


@router.get("/templates/{code}")
async def template(request: Request, who: SignedIn, code: str, channel: str = "", locale: str = "", version: int = 0,
                   vars: str = "", flash: str | None = None) -> HTMLResponse:  # noqa: A002 - the query parameter's name
    db = res_of(request).db
    versions = await data.templates(db, code[:200])
    if not versions:
        return page(request, "error.html", 404, who=who, tab="templates", message=f"no template '{code}'")
    # the version to preview: the one asked for, else the active one of the channel and locale, else the newest
    pick = ([v for v in versions if (not channel or v.channel == channel) and (not locale or v.locale == locale)
             and (v.version == version if version else v.active)]
            or [v for v in versions if (not channel or v.channel == channel) and (not locale or v.locale == locale)]
            or versions)[0]
    preview, error = None, None
    try:
        given = json.loads(vars) if vars.strip() else None
        if given is not None and not isinstance(given, dict):
            raise ValueError("the variables must be a JSON object")
        context = sample_context(pick.code, pick.locale, given)
    except ValueError as exc:
        error, context = f"variables: {exc}", sample_context(pick.code, pick.locale)
    async with db.connection() as conn:
        row = await (await conn.execute(
            "SELECT code, channel, locale, version, body_text, subject, body_html, push_title FROM templates "
            "WHERE code = %s AND channel = %s AND locale = %s AND version = %s",
            (pick.code, pick.channel, pick.locale, pick.version))).fetchone()
    if row is None:   # removed since the list was read
        return page(request, "error.html", 404, who=who, tab="templates", message=f"no template '{code}'")
    out = render(compile_template(Environments(), TemplateSource(*row)), pick.channel, context,
                 {"notification_id": context["event_id"]})
    if isinstance(out, RenderFailure):
        error = f"{out.reason}: {out.message}"
    else:
        preview = out
    return page(request, "template.html", who=who, tab="templates", code=code, versions=versions, pick=pick,
                preview=preview, error=error, vars=vars or json.dumps({k: v for k, v in context.items() if k != "user"}, indent=1),
                flash=flash)


@router.post("/templates/{code}/activate")
async def activate(request: Request, who: SignedIn, code: str) -> Response:
    form = await checked_form(request, who, admin=True)
    channel, locale = form.get("channel", ""), form.get("locale", "")
    try:
        version = int(form.get("version", ""))
    except ValueError as exc:
        raise Refused(422, "version must be a number") from exc
    settings = console_of(request).settings

    def run() -> bool:
        with psycopg.connect(settings.dsn, autocommit=True, connect_timeout=5) as conn:
            return activate_version(conn, code, channel, locale, version)

    if not await asyncio.to_thread(run):
        raise Refused(404, f"{code}/{channel}/{locale} has no version {version}")
    flash = f"{code}/{channel}/{locale} v{version} is active (workers pick it up within seconds)"
    return see_other(f"/console/templates/{quote(code)}?channel={quote(channel)}&locale={quote(locale)}&version={version}"
                     f"&flash={quote(flash)}")
