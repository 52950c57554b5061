"""POST /v1/notifications (accept and produce), GET a notification with its history, GET a user's history."""
from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from infra.kafka.producer import ProduceError
from infra.kafka.records import TRACE, OutRecord, now_ms
from infra.topics import events_topic
from infra.traces import TRACE_ID_PATTERN, request_trace
from infra.tracing import record_span
from producers.api import views
from producers.api.auth import ReadKey, Resources, SendKey
from producers.api.cursor import CursorError, decode_cursor, encode_cursor
from producers.api.errors import ApiError
from producers.api.hostile import CheckedRoute
from producers.api.keys import Caller, Scope
from producers.api.middleware import trace_of
from producers.api.models import ID, NotificationAccepted, NotificationPage, NotificationRequest, NotificationView
from producers.api.notification_record import body_hash, to_record
from producers.api.resources import ApiResources
from producers.api.tenancy import reaches, require_user

router = APIRouter(tags=["notifications"], route_class=CheckedRoute)

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no valid API key"}, 403: {"description": "the API key lacks the scope"},
    429: {"description": "rate limit exceeded (see Retry-After)"}}


async def template_channels(res: ApiResources, code: str) -> frozenset[str]:
    cached = res.templates.get(code)
    if cached is not None:
        return cached
    async with res.db.connection() as conn:
        rows = await (await conn.execute("SELECT DISTINCT channel FROM templates WHERE code = %s AND active", (code,))).fetchall()
    channels = frozenset(r[0] for r in rows)
    if channels:  # only known templates are cached: a template added a moment ago must not read as unknown
        res.templates.put(code, channels)
    return channels


async def stored_user(res: ApiResources, user_id: str) -> tuple[str | None] | None:
    """``(tenant,)`` of a stored user, None for an unknown one (only users that exist are cached)."""
    if cached := res.users.get(user_id):
        return cached
    async with res.db.connection() as conn:
        row = await (await conn.execute("SELECT tenant FROM users WHERE id = %s", (user_id,))).fetchone()
    if row is None:
        return None
    res.users.put(user_id, (row[0],))
    return (row[0],)


async def check_recipient(res: ApiResources, caller: Caller, body: NotificationRequest) -> None:
    """The user must be stored and in the key's tenant, unless the request brings its addresses inline."""
    found = await stored_user(res, body.user_id)
    if found is not None and not reaches(caller, found[0]):
        if body.recipient is not None:  # a stored user's own profile would win over the inline addresses
            raise HTTPException(404, f"no user '{body.user_id}' (the id is taken outside this key's tenant; pick another)")
        found = None
    if found is None and body.recipient is None:
        # accepted, it would only end as `skipped no_recipient`, out of the caller's sight
        raise ApiError(422, "unknown_user", f"no user '{body.user_id}': create it first with PUT /v1/users/{body.user_id}, "
                                            "or give its addresses inline as `recipient`")


async def claim_idempotency(res: ApiResources, key_id: int, key: str, digest: str, fresh_id: str) -> str:
    """The notification id for this (API key, Idempotency-Key): ``fresh_id`` the first time, the stored one after; 409 when the body differs."""
    async with res.db.connection() as conn:
        row = await (await conn.execute(
            """
            WITH ins AS (
                INSERT INTO api_idempotency (api_key_id, key, body_hash, notification_id) VALUES (%s, %s, %s, %s)
                ON CONFLICT (api_key_id, key) DO NOTHING RETURNING body_hash, notification_id
            )
            SELECT body_hash, notification_id FROM ins
            UNION ALL
            SELECT body_hash, notification_id FROM api_idempotency WHERE api_key_id = %s AND key = %s
            LIMIT 1
            """,
            (key_id, key, digest, fresh_id, key_id, key),
        )).fetchone()
    if row is None:  # the row was inserted by a concurrent request whose snapshot we cannot see yet
        raise HTTPException(409, "a request with this Idempotency-Key is in flight; retry it")
    stored_hash, notification_id = row
    if stored_hash != digest:
        raise HTTPException(409, "this Idempotency-Key was used with a different request body; use a new key for a new request")
    return notification_id


async def send_problem(res: ApiResources, caller: Caller, body: NotificationRequest) -> Exception | None:
    """Why this caller may not send this body (the exception to raise), None when it may; reads only (cached)."""
    have = await template_channels(res, body.template)
    if not have:
        return HTTPException(422, f"unknown template '{body.template}'")
    if missing := [c for c in body.channels if c not in have]:
        return HTTPException(422, f"template '{body.template}' has no active {', '.join(missing)} version "
                                  f"(it has: {', '.join(sorted(have))})")
    if body.category in res.critical_categories and Scope.CRITICAL not in caller.scopes:
        return ApiError(403, "forbidden", f"category '{body.category}' is critical (it bypasses preferences, quiet hours "
                                          "and caps): this API key may not pick it; it needs the 'critical' scope "
                                          "(`herald apikeys create NAME --scope send,critical`)")
    try:
        await check_recipient(res, caller, body)
    except (HTTPException, ApiError) as exc:
        return exc
    return None


async def produce_accepted(res: ApiResources, body: NotificationRequest, notification_id: str, trace: str) -> None:
    """Produce the ``NotificationRequested`` and await the broker's acknowledgement (422 unencodable, 503 not taken)."""
    try:
        value = res.codec.encode("NotificationRequested", to_record(body, notification_id, now_ms()))
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    topic = events_topic(res.settings, critical=body.category in res.critical_categories)
    started = time.time_ns()
    try:
        await res.producer.send([OutRecord(topic, body.user_id.encode(), value, [(TRACE, trace.encode())])])
    except ProduceError as exc:
        raise HTTPException(503, f"the notification was not stored in Kafka ({exc}); retry with the same Idempotency-Key",
                            headers={"Retry-After": "1"}) from exc
    res.metrics.accepted.inc()
    record_span(res.tracer, "api: notification accepted", trace, started, notification_id=notification_id,
                template=body.template, topic=topic)


@router.post(
    "/v1/notifications",
    status_code=202,
    response_model=NotificationAccepted,
    responses={**ERRORS, 409: {"description": "Idempotency-Key reused with another body"},
               403: {"description": "the key lacks the 'send' scope, or picks a critical category without the 'critical' scope"},
               422: {"description": "invalid request, unknown template or channel, unknown user (code unknown_user)"},
               503: {"description": "Kafka did not take the request; retry"}},
)
async def create_notification(
    request: Request,
    response: Response,
    body: NotificationRequest,
    caller: SendKey,
    res: Resources,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$",
                                                  description="same key and body → same notification id")] = None,
    x_trace_id: Annotated[str | None, Header(max_length=64, pattern=TRACE_ID_PATTERN,
                                             description="the trace id to carry (wins over traceparent)")] = None,
    traceparent: Annotated[str | None, Header(description="W3C Trace Context: its trace-id becomes the trace id "
                                                          "when no X-Trace-Id is given (an invalid one is ignored)")] = None,
) -> JSONResponse:
    """Accept a notification (scope ``send``): validated, produced to the events topic (acks=all, delivery report awaited), 202 with its id.

    The id is also the event id. Re-sending with the same ``Idempotency-Key`` and body answers the same id
    (and produces the same event again, which the pipeline de-duplicates, so a request that failed half-way is safe to retry).
    The trace id (``X-Trace-Id``, else a W3C ``traceparent``'s trace-id, else a new one) is in the answer's body and
    ``X-Trace-Id`` header, on every log line about the notification and in ``GET /v1/notifications/{id}``.
    """
    if problem := await send_problem(res, caller, body):
        if isinstance(problem, ApiError) and problem.code == "forbidden":
            res.metrics.rejected.labels("forbidden").inc()
        raise problem
    notification_id = uuid.uuid4().hex
    if idempotency_key is not None:
        notification_id = await claim_idempotency(res, caller.key_id, idempotency_key, body_hash(body), notification_id)
    trace = trace_of(request.scope) or request_trace(x_trace_id, traceparent)
    await produce_accepted(res, body, notification_id, trace)
    return JSONResponse(
        {"id": notification_id, "status": "accepted", "trace_id": trace}, status_code=202,
        # the returned response is not the one the rate-limit dependency wrote its headers on: carry them over
        headers={**response.headers, "Location": f"/v1/notifications/{notification_id}", "X-Trace-Id": trace},
    )


@router.get("/v1/notifications/{notification_id}", response_model=NotificationView,
            responses={**ERRORS, 404: {"description": "unknown notification"}})
async def get_notification(notification_id: Annotated[str, Path(pattern=ID)], caller: ReadKey, res: Resources) -> NotificationView:
    """A notification's current status and its whole history (every change, in order; scope ``read``).

    A key with a tenant sees the notifications of its tenant's users only.
    """
    async with res.db.connection() as conn:
        view = await views.notification(conn, notification_id, caller.tenant)
    if view is None:
        raise HTTPException(404, f"no notification '{notification_id}' (a just-accepted one appears once the pipeline has queued it)")
    return view


@router.get("/v1/users/{user_id}/notifications", response_model=NotificationPage,
            responses={**ERRORS, 404: {"description": "a user of another tenant"}})
async def list_user_notifications(
    user_id: Annotated[str, Path(pattern=ID)],
    caller: ReadKey,
    res: Resources,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> NotificationPage:
    """A user's notifications, newest first, ``limit`` per page; follow ``next_cursor`` for older ones (scope ``read``)."""
    if caller.tenant is not None:
        await require_user(res, caller, user_id)
    args: list[object] = [user_id]
    where = "user_id = %s"
    if cursor:
        try:
            at, nid = decode_cursor(cursor)
        except CursorError as exc:
            raise HTTPException(422, str(exc)) from exc
        where += " AND (created_at, id) < (%s, %s)"
        args += [at, nid]
    async with res.db.connection() as conn:
        rows = await (await conn.execute(
            f"SELECT {views.NOTIFICATION_COLUMNS} FROM notifications WHERE {where} ORDER BY created_at DESC, id DESC LIMIT %s",
            (*args, limit + 1),
        )).fetchall()
    items = [views.notification_view(r) for r in rows[:limit]]
    nxt = encode_cursor(items[-1].created_at, items[-1].id) if len(rows) > limit else None
    return NotificationPage(items=items, next_cursor=nxt)

