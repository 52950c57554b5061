"""GET/PUT /v1/users/{id}/preferences: mute, per channel, per category, quiet hours (cache invalidated in the same step)."""
from __future__ import annotations

from typing import Annotated, Any

import psycopg.errors
from fastapi import APIRouter, HTTPException, Path
from psycopg.types.json import Jsonb

from producers.api.auth import AdminKey, ReadKey, Resources
from producers.api.hostile import CheckedRoute
from producers.api.models import ID, Preferences
from producers.api.tenancy import reaches, require_user
from streams.stores.recipients import invalidate_recipient

router = APIRouter(tags=["preferences"], route_class=CheckedRoute)
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no valid API key"}, 403: {"description": "the API key lacks the scope"},
    404: {"description": "unknown user"}, 429: {"description": "rate limit exceeded"}}


@router.get("/v1/users/{user_id}/preferences", response_model=Preferences, responses=ERRORS)
async def get_preferences(user_id: Annotated[str, Path(pattern=ID)], caller: ReadKey, res: Resources) -> Preferences:
    """The user's preferences (the defaults, everything allowed, when none were set; scope ``read``)."""
    async with res.db.connection() as conn:
        row = await (await conn.execute(
            "SELECT p.user_id IS NOT NULL, p.muted, p.channels, p.categories, p.quiet_start, p.quiet_end, u.tenant"
            " FROM users u LEFT JOIN preferences p ON p.user_id = u.id WHERE u.id = %s",
            (user_id,),
        )).fetchone()
    if row is None or not reaches(caller, row[6]):
        raise HTTPException(404, f"no user '{user_id}'")
    if not row[0]:
        return Preferences()
    return Preferences(muted=row[1], channels=row[2], categories=row[3], quiet_start=row[4], quiet_end=row[5])


@router.put("/v1/users/{user_id}/preferences", response_model=Preferences,
            responses={**ERRORS, 422: {"description": "unknown channel or bad quiet hours"}})
async def put_preferences(user_id: Annotated[str, Path(pattern=ID)], body: Preferences, caller: AdminKey,
                          res: Resources) -> Preferences:
    """Replace the user's preferences (scope ``admin``); the next event for this user already sees them."""
    if caller.tenant is not None:
        await require_user(res, caller, user_id)
    try:
        async with res.db.connection() as conn:
            await conn.execute(
                """
                INSERT INTO preferences (user_id, muted, channels, categories, quiet_start, quiet_end)
                VALUES (%s, %s, %s, %s, %s, %s)
                ON CONFLICT (user_id) DO UPDATE SET muted = EXCLUDED.muted, channels = EXCLUDED.channels,
                    categories = EXCLUDED.categories, quiet_start = EXCLUDED.quiet_start, quiet_end = EXCLUDED.quiet_end,
                    updated_at = now()
                """,
                (user_id, body.muted, Jsonb(body.channels), Jsonb(body.categories), body.quiet_start, body.quiet_end),
            )
    except psycopg.errors.ForeignKeyViolation as exc:
        raise HTTPException(404, f"no user '{user_id}': create it first with PUT /v1/users/{user_id}") from exc
    await invalidate_recipient(res.redis, res.settings, user_id)
    return body
