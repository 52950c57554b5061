"""POST /v1/campaigns (a list of user ids) and /v1/campaigns/upload (a streamed file), GET and DELETE /v1/campaigns/{id}.

The same implementation as ``herald campaign send`` (``producers.campaign_run``):
the recipients are kept as a file under ``HERALD_HOME/campaigns/`` (an upload
is streamed there, never held whole in memory), pre-flight runs before the
answer (422 naming a missing template, locale or variable), and production runs
in a thread of the API process. A campaign the API was producing when it
stopped is left ``interrupted``: ``herald campaign send --resume ID`` finishes it.
"""
from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path as PathParam, Query, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from infra.settings import Settings
from producers import campaign as cp, campaign_run as run, segments
from producers.api import views
from producers.api.auth import ReadKey, Resources, SendKey
from producers.api.errors import ApiError
from producers.api.hostile import CheckedRoute, check_request_parts
from producers.api.keys import Caller
from producers.api.models import ID, CampaignView, Strict
from producers.campaign_preflight import Preflight, PreflightError
from producers.campaign_source import SourceError
from schemas.vocabulary import Channel
from streams.stages.route.window import parse_window

router = APIRouter(tags=["campaigns"], route_class=CheckedRoute)
uploads = APIRouter(tags=["campaigns"], route_class=APIRoute)   # the body is streamed to disk, not read whole

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no valid API key"}, 403: {"description": "the API key lacks the scope"},
    429: {"description": "rate limit exceeded"}}
MAX_LIST = 100_000
MAX_AHEAD = timedelta(days=30)
UPLOAD_FORMATS = {"text/csv": "csv", "application/x-ndjson": "jsonl", "application/jsonl": "jsonl",
                  "application/json-lines": "jsonl", "text/plain": "txt"}
CampaignId = Annotated[str, PathParam(pattern=ID)]


class CampaignParams(Strict):
    template: str = Field(pattern=ID, description="template code; pre-flight checks it has an active version for every "
                                                  "channel and every locale the recipients use")
    variables: dict[str, Any] = Field(default_factory=dict, description="template variables shared by every recipient")
    category: str = Field("marketing", pattern=ID, description="the category preferences check (users can mute marketing)")
    channels: list[Channel] = Field(default_factory=lambda: [Channel.EMAIL], min_length=1, max_length=3)
    send_at: datetime | None = Field(None, description="start producing at this time (ISO 8601 with offset, at most 30 "
                                                       "days ahead) instead of now; held by the API process")
    id: str | None = Field(None, pattern=ID, description="campaign id (default: generated)")
    rate_per_minute: int | None = Field(None, ge=1, le=10_000_000, description="at most this many messages (recipient x "
                                        "channel) a minute: production is paced (default: as fast as it goes)")
    send_window: str | None = Field(None, max_length=40, description="HH:MM-HH:MM in each recipient's time zone (e.g. "
                                    "09:00-18:00, may span midnight): a recipient outside it waits for it (deferred)")

    @field_validator("send_window")
    @classmethod
    def _window(cls, v: str | None) -> str | None:
        if v is not None:
            parse_window(v)   # a ValueError names the problem
        return v

    @field_validator("send_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return v
        if v.tzinfo is None:
            raise ValueError("send_at needs a UTC offset (like 2030-01-01T09:00:00+01:00)")
        if v - datetime.now(UTC) > MAX_AHEAD:
            raise ValueError("send_at is more than 30 days ahead")
        return v


class CampaignIn(CampaignParams):
    recipients: list[Annotated[str, Field(pattern=ID)]] | None = Field(
        None, min_length=1, max_length=MAX_LIST,
        description="user ids (more than 100,000: POST /v1/campaigns/upload a file, or name a segment)")
    segment: str | None = Field(None, pattern=ID, description="a saved recipient query (`herald segments save`), "
                                                              "instead of recipients")

    @model_validator(mode="after")
    def _one_source(self) -> CampaignIn:
        if (self.recipients is None) == (self.segment is None):
            raise ValueError("give exactly one of recipients (user ids) and segment (a saved query's name)")
        return self


class SegmentOut(BaseModel):
    name: str
    description: str | None
    updated_at: datetime


class CampaignAccepted(BaseModel):
    id: str
    status: str
    recipients: int
    unknown_users: int
    rejected_lines: int
    locales: dict[str, int]
    estimate_seconds: float
    send_at: datetime | None = None


class CampaignCanceled(BaseModel):
    id: str
    canceled_at: datetime
    status: str


def campaign_dir(settings: Settings) -> Path:
    d = settings.home / "campaigns"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _no_tenant(caller: Caller) -> None:
    if caller.tenant is not None:
        raise ApiError(403, "forbidden", "campaigns reach users of every tenant: use an API key without a tenant")


def _spec(params: CampaignParams, source: dict[str, str], cid: str) -> cp.CampaignSpec:
    return cp.CampaignSpec(cid, params.template, source, tuple(params.channels), params.category,
                           params.variables, params.rate_per_minute, params.send_window)


def _prepare_and_create(settings: Settings, spec: cp.CampaignSpec, send_at: datetime | None) -> Preflight:
    """Pre-flight, then record the campaign (in a thread: synchronous PostgreSQL)."""
    with run.connect(settings) as conn:
        pf = run.prepare(settings, conn, spec)
        if pf.total == 0:
            raise SourceError("no recipients")
        cp.create(conn, spec, pf.total)
        if send_at is not None:
            conn.execute("UPDATE campaigns SET status = 'scheduled', send_at = %s WHERE id = %s", (send_at, spec.id))
    return pf


async def _start(request: Request, res: Resources, params: CampaignParams, path: Path | None, cid: str,
                 query: str | None = None) -> CampaignAccepted:
    spec = _spec(params, {"query": query} if query is not None else {"file": str(path)}, cid)
    try:
        pf = await asyncio.to_thread(_prepare_and_create, res.settings, spec, params.send_at)
    except PreflightError as exc:
        if path is not None:
            path.unlink(missing_ok=True)
        raise ApiError(422, exc.kind, str(exc)) from exc
    except (SourceError, UnicodeDecodeError) as exc:
        if path is not None:
            path.unlink(missing_ok=True)
        raise ApiError(422, "bad_recipients", f"the recipients cannot be read: {exc}") from exc
    except cp.CampaignError as exc:
        raise ApiError(409, "conflict", f"campaign {cid} already exists") from exc
    request.app.state.campaigns.start(spec, pf.total, params.send_at)
    return CampaignAccepted(id=cid, status="scheduled" if params.send_at else "producing", recipients=pf.total,
                            unknown_users=pf.unknown_users, rejected_lines=pf.rejected_count, locales=dict(pf.locales),
                            estimate_seconds=round(pf.estimate_seconds, 3), send_at=params.send_at)


def _new_path(settings: Settings, cid: str, ext: str) -> Path:
    path = campaign_dir(settings) / f"{cid}.{ext}"
    if path.exists():
        raise ApiError(409, "conflict", f"campaign {cid} already exists")
    return path


@router.post("/v1/campaigns", status_code=202, response_model=CampaignAccepted,
             responses={**ERRORS, 409: {"description": "the campaign id is taken"},
                        422: {"description": "pre-flight failed: no template, a locale without a version, a missing variable"}})
async def post_campaign(body: CampaignIn, request: Request, caller: SendKey, res: Resources) -> CampaignAccepted:
    """Start a campaign to a list of user ids (scope ``send``): pre-flight, then 202 while it is produced.

    Follow it with GET /v1/campaigns/{id}; cancel it with DELETE. A million recipients: POST /v1/campaigns/upload.
    """
    _no_tenant(caller)
    cid = body.id or cp.new_campaign_id()
    if body.segment is not None:
        query = await asyncio.to_thread(_segment_query, res.settings, body.segment)
        if query is None:
            raise ApiError(422, "unknown_segment", f"no segment {body.segment!r}: save it with `herald segments save`; "
                                                   "GET /v1/segments lists them")
        return await _start(request, res, body, None, cid, query)
    assert body.recipients is not None
    path = _new_path(res.settings, cid, "txt")
    await asyncio.to_thread(path.write_text, "".join(f"{u}\n" for u in body.recipients), "utf-8")
    return await _start(request, res, body, path, cid)


def _segment_query(settings: Settings, name: str) -> str | None:
    with run.connect(settings) as conn:
        return segments.query_of(conn, name)


def _segments(settings: Settings) -> list[SegmentOut]:
    with run.connect(settings) as conn:
        return [SegmentOut(name=s.name, description=s.description, updated_at=s.updated_at)
                for s in segments.all_segments(conn)]


@router.get("/v1/segments", response_model=list[SegmentOut], responses=ERRORS)
async def list_segments(caller: ReadKey, res: Resources) -> list[SegmentOut]:
    """The saved recipient queries a campaign may name (scope ``read``); operators save them with the CLI."""
    return await asyncio.to_thread(_segments, res.settings)


@uploads.post("/v1/campaigns/upload", status_code=202, response_model=CampaignAccepted,
              responses={**ERRORS, 409: {"description": "the campaign id is taken"},
                         413: {"description": "file larger than HERALD_CAMPAIGN__MAX_UPLOAD_BYTES"},
                         415: {"description": "not text/csv, application/x-ndjson or text/plain"},
                         422: {"description": "pre-flight failed, or the file names no recipient"}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "text/csv": {"schema": {"type": "string"}}, "application/x-ndjson": {"schema": {"type": "string"}},
                  "text/plain": {"schema": {"type": "string"}}}}})
async def upload_campaign(
    request: Request, caller: SendKey, res: Resources,
    template: Annotated[str, Query(pattern=ID)],
    variables: Annotated[str, Query(max_length=65536, description="template variables as a JSON object")] = "{}",
    category: Annotated[str, Query(pattern=ID)] = "marketing",
    channel: Annotated[list[Channel] | None, Query()] = None,
    send_at: datetime | None = None,
    id: Annotated[str | None, Query(pattern=ID)] = None,  # noqa: A002 - the public parameter name
    rate_per_minute: Annotated[int | None, Query(ge=1, le=10_000_000)] = None,
    send_window: Annotated[str | None, Query(max_length=40)] = None,
) -> CampaignAccepted:
    """Start a campaign to the recipients of the request body, streamed to disk (scope ``send``).

    ``text/csv``: a header with a ``user_id`` (or ``id``) column, the other columns are the recipient's variables;
    ``application/x-ndjson``: one ``{"user_id": ..., "variables": {...}}`` a line; ``text/plain``: one user id a line.
    Campaign parameters go in the query string.
    """
    check_request_parts(request)
    _no_tenant(caller)
    ext = UPLOAD_FORMATS.get(request.headers.get("content-type", "").split(";")[0].strip().lower())
    if ext is None:
        raise ApiError(415, "unsupported_media_type", f"send the recipients as {', '.join(UPLOAD_FORMATS)}")
    try:
        shared = json.loads(variables)
    except json.JSONDecodeError as exc:
        raise ApiError(422, "validation_failed", f"variables is not JSON: {exc.msg}") from exc
    try:
        params = CampaignParams(template=template, variables=shared, category=category,
                                channels=channel or [Channel.EMAIL], send_at=send_at, id=id,
                                rate_per_minute=rate_per_minute, send_window=send_window)
    except ValidationError as exc:   # name the parameter and the problem (str(exc) ends with a pydantic URL)
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "query"
        raise ApiError(422, "validation_failed", f"{where}: {first['msg']}") from exc
    cid = params.id or cp.new_campaign_id()
    path = _new_path(res.settings, cid, ext)
    limit = res.settings.campaign.max_upload_bytes
    seen = 0
    part = path.with_suffix(path.suffix + ".part")
    try:
        with part.open("wb") as f:
            async for piece in request.stream():
                seen += len(piece)
                if seen > limit:
                    raise ApiError(413, "too_large", f"recipient file larger than {limit} bytes (HERALD_CAMPAIGN__MAX_UPLOAD_BYTES)")
                if b"\x00" in piece:
                    raise ApiError(422, "hostile_input", "the recipient file contains a NUL byte")
                f.write(piece)
        part.rename(path)
    finally:
        part.unlink(missing_ok=True)
    if seen == 0:
        path.unlink(missing_ok=True)
        raise ApiError(422, "bad_recipients", "the request body is empty: send the recipient file")
    return await _start(request, res, params, path, cid)


@router.get("/v1/campaigns/{campaign_id}", response_model=CampaignView,
            responses={**ERRORS, 404: {"description": "unknown campaign"}})
async def get_campaign(campaign_id: CampaignId, caller: ReadKey, res: Resources) -> CampaignView:
    """How far a campaign has got (scope ``read``): produced, sent, suppressed by reason, rate-limited, failed,
    dead-lettered, canceled, and the share of recipients at an end."""
    async with res.db.connection() as conn:
        view = await views.campaign(conn, campaign_id)
    if view is None:
        raise HTTPException(404, f"no campaign '{campaign_id}'")
    return view


@router.delete("/v1/campaigns/{campaign_id}", response_model=CampaignCanceled,
               responses={**ERRORS, 404: {"description": "unknown campaign"}})
async def cancel_campaign(campaign_id: CampaignId, caller: SendKey, res: Resources) -> CampaignCanceled:
    """Cancel a campaign (scope ``send``): production stops; whatever is not sent yet ends ``canceled`` and is never
    delivered, including deliveries waiting in the retry tiers or the scheduler.

    Answers once every worker has seen the cancel (``HERALD_CAMPAIGN__CANCEL_CACHE_SECONDS``): nothing is sent after
    the answer. Canceling again answers the same.
    """
    _no_tenant(caller)

    def cancel() -> tuple[datetime, str] | None:
        with run.connect(res.settings) as conn:
            at = run.cancel(conn, campaign_id)
            if at is None:
                return None
            run.wait_for_workers(res.settings, at)
            status = conn.execute("SELECT status FROM campaigns WHERE id = %s", (campaign_id,)).fetchone()
            return at, status[0] if status else "canceled"

    done = await asyncio.to_thread(cancel)
    if done is None:
        raise HTTPException(404, f"no campaign '{campaign_id}'")
    return CampaignCanceled(id=campaign_id, canceled_at=done[0], status=done[1])
