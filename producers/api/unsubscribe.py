"""One-click unsubscribe (RFC 8058): ``POST /v1/unsubscribe/{token}`` turns one category off for one user.

The link comes from the ``List-Unsubscribe`` header of a marketing email
(``infra.unsubscribe``); the signed token is its only credential, so the
endpoint takes no API key. The mail provider (Gmail, Yahoo) POSTs
``List-Unsubscribe=One-Click``; a ``GET`` (a person who opened the link, or a
link scanner) changes nothing and shows a page with one button that POSTs it
(a bad link: the same JSON error as the POST).
The change is the one ``PUT /v1/users/{id}/preferences`` makes (the category
set to false in ``preferences.categories``, every other preference kept) and
the cached recipient is dropped in the same step, so the next campaign skips
the user (``suppressed``, reason ``preference``). SendGrid's ``unsubscribe``,
``group_unsubscribe`` and ``spamreport`` events use ``opt_out`` too
(``producers.api.webhooks``).
"""
from __future__ import annotations

import html
from typing import Annotated, Any
from urllib.parse import parse_qsl

import psycopg.errors
from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse
from psycopg.types.json import Jsonb
from pydantic import BaseModel

from infra.unsubscribe import ONE_CLICK, TokenError, read_token
from producers.api.auth import Resources
from producers.api.errors import ApiError
from producers.api.hostile import check_request_parts
from producers.api.resources import ApiResources
from streams.stores.recipients import invalidate_recipients

router = APIRouter(tags=["unsubscribe"])   # the body is a form, not JSON: the edge checks are called by hand

TOKEN = r"^[A-Za-z0-9_\-]{8,1200}\.[A-Za-z0-9_\-]{8,100}$"
Token = Annotated[str, Path(pattern=TOKEN, description="the signed token of the List-Unsubscribe link")]
TOKEN_STATUS = {"expired": 410, "forged": 403, "malformed": 400}
RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "malformed link, or a body without List-Unsubscribe=One-Click"},
    403: {"description": "the link was not signed by Herald (forged or altered)"},
    404: {"description": "the user no longer exists"},
    410: {"description": "the link has expired"},
}
OPT_OUT_SQL = """
INSERT INTO preferences (user_id, categories) VALUES (%s, %s)
ON CONFLICT (user_id) DO UPDATE SET categories = preferences.categories || EXCLUDED.categories, updated_at = now()
"""


class Unsubscribed(BaseModel):
    user_id: str
    category: str
    unsubscribed: bool


async def opt_out(res: ApiResources, pairs: set[tuple[str, str]], source: str) -> set[tuple[str, str]]:
    """Turn each (user, category) off, keeping every other preference; drop the users' cached recipients.
    Returns the pairs whose user exists (an erased user has nothing left to turn off)."""
    done: set[tuple[str, str]] = set()
    async with res.db.connection() as conn:
        for user_id, category in sorted(pairs):
            try:
                await conn.execute(OPT_OUT_SQL, (user_id, Jsonb({category: False})))
            except psycopg.errors.ForeignKeyViolation:
                continue
            done.add((user_id, category))
    await invalidate_recipients(res.redis, res.settings, sorted({u for u, _ in done}))
    if done:
        res.metrics.unsubscribed.labels(source).inc(len(done))
    return done


def _read(res: ApiResources, token: str) -> tuple[str, str]:
    try:
        return read_token(res.settings.unsubscribe.secret.get_secret_value().encode(), token)
    except TokenError as exc:
        raise ApiError(TOKEN_STATUS[exc.reason], f"{exc.reason}_link", str(exc)) from exc


def _one_click(body: bytes, content_type: str) -> bool:
    """RFC 8058: the POST carries ``List-Unsubscribe=One-Click`` (urlencoded, or as a multipart field)."""
    if content_type.startswith("multipart/form-data"):
        return b'name="List-Unsubscribe"' in body and b"One-Click" in body
    try:
        return ("List-Unsubscribe", "One-Click") in parse_qsl(body.decode("utf-8"), max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return False


ONE_CLICK_BODY = {"requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
    "type": "object", "required": ["List-Unsubscribe"],
    "properties": {"List-Unsubscribe": {"type": "string", "enum": ["One-Click"]}}}}}}}


@router.post("/v1/unsubscribe/{token}", response_model=Unsubscribed, responses=RESPONSES, openapi_extra=ONE_CLICK_BODY)
async def unsubscribe(token: Token, request: Request, res: Resources) -> Unsubscribed:
    """One-click unsubscribe (RFC 8058), no API key: the signed token names the user and the category it turns off."""
    check_request_parts(request)
    user_id, category = _read(res, token)
    if not _one_click(await request.body(), request.headers.get("content-type", "").lower()):
        raise ApiError(400, "not_one_click", f"the body must be the form field {ONE_CLICK} (RFC 8058)")
    if not await opt_out(res, {(user_id, category)}, "link"):
        raise ApiError(404, "not_found", "the user of this link no longer exists")
    return Unsubscribed(user_id=user_id, category=category, unsubscribed=True)


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Unsubscribe</title></head>
<body><p>{message}</p>{form}</body></html>
"""   # a bad link answers the JSON error body, as every other route


@router.get("/v1/unsubscribe/{token}", response_class=HTMLResponse, responses=RESPONSES)
async def unsubscribe_page(token: Token, request: Request, res: Resources) -> HTMLResponse:
    """The link opened in a browser: changes nothing (link scanners open links too), offers one button that POSTs."""
    check_request_parts(request)
    _, category = _read(res, token)
    form = (f'<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
            f'<button type="submit">Unsubscribe from {html.escape(category)} email</button></form>')
    return HTMLResponse(PAGE.format(message=f"Stop receiving {html.escape(category)} email?", form=form))
