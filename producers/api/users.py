"""PUT/GET /v1/users/{id} (addresses, locale, time zone) and POST/DELETE its push devices.

Every change invalidates the user's cached recipient right after it commits, so
the route stage's very next event reads the new data.
"""
from __future__ import annotations

from typing import Annotated, Any

import psycopg.errors
from fastapi import APIRouter, HTTPException, Path, Response

from infra.db import one_row
from producers.api.auth import ApiKey, Resources
from producers.api.hostile import CheckedRoute
from producers.api.models import ID, DeviceIn, DeviceView, UserUpdate, UserView
from streams.stores.recipients import invalidate_recipient

router = APIRouter(tags=["users"], route_class=CheckedRoute)

USER_COLUMNS = "id, email, phone, locale, time_zone, first_name, email_undeliverable, phone_undeliverable, updated_at"
ERRORS: dict[int | str, dict[str, Any]] = {401: {"description": "no valid API key"}, 429: {"description": "rate limit exceeded"}}
UserId = Annotated[str, Path(pattern=ID)]


def _user(row: tuple) -> UserView:
    return UserView(**dict(zip(USER_COLUMNS.split(", "), row, strict=True)))


@router.put("/v1/users/{user_id}", response_model=UserView, responses={**ERRORS, 422: {"description": "invalid address, locale or time zone"}})
async def put_user(user_id: UserId, body: UserUpdate, _key: ApiKey, res: Resources) -> UserView:
    """Create or update a user: email, phone (E.164), locale, time zone, first name.

    Fields left out keep their value; a changed address is deliverable again (its undeliverable mark is cleared).
    """
    given = body.model_fields_set
    values = {
        "email": body.email, "phone": body.phone, "first_name": body.first_name,
        "locale": body.locale or "en", "time_zone": body.time_zone or "UTC",
    }
    sets = [f"{col} = EXCLUDED.{col}" for col in ("email", "phone", "locale", "time_zone", "first_name") if col in given]
    if "email" in given:
        sets.append("email_undeliverable = CASE WHEN u.email IS DISTINCT FROM EXCLUDED.email THEN false ELSE u.email_undeliverable END")
    if "phone" in given:
        sets.append("phone_undeliverable = CASE WHEN u.phone IS DISTINCT FROM EXCLUDED.phone THEN false ELSE u.phone_undeliverable END")
    sets.append("updated_at = now()")
    sql = (
        "INSERT INTO users AS u (id, email, phone, locale, time_zone, first_name) VALUES (%s, %s, %s, %s, %s, %s) "
        f"ON CONFLICT (id) DO UPDATE SET {', '.join(sets)} RETURNING {USER_COLUMNS}"
    )
    async with res.db.connection() as conn:
        row = await (await conn.execute(sql, (user_id, values["email"], values["phone"], values["locale"],
                                              values["time_zone"], values["first_name"]))).fetchone()
    await invalidate_recipient(res.redis, res.settings, user_id)
    return _user(one_row(row))


@router.get("/v1/users/{user_id}", response_model=UserView, responses={**ERRORS, 404: {"description": "unknown user"}})
async def get_user(user_id: UserId, _key: ApiKey, res: Resources) -> UserView:
    """A user's addresses, locale, time zone and whether an address bounced."""
    async with res.db.connection() as conn:
        row = await (await conn.execute(f"SELECT {USER_COLUMNS} FROM users WHERE id = %s", (user_id,))).fetchone()
    if row is None:
        raise HTTPException(404, f"no user '{user_id}'")
    return _user(row)


@router.post("/v1/users/{user_id}/devices", status_code=201, response_model=DeviceView,
             responses={**ERRORS, 404: {"description": "unknown user"}, 422: {"description": "token not valid for the platform"}})
async def add_device(user_id: UserId, body: DeviceIn, _key: ApiKey, res: Resources) -> DeviceView:
    """Register (or re-activate) a push token. A token registered to another user moves to this one."""
    try:
        async with res.db.connection() as conn:
            row = await (await conn.execute(
                """
                WITH prev AS (SELECT user_id FROM devices WHERE token = %s)
                INSERT INTO devices (user_id, token, platform) VALUES (%s, %s, %s)
                ON CONFLICT (token) DO UPDATE SET user_id = EXCLUDED.user_id, platform = EXCLUDED.platform, active = true,
                    temp_failures = 0, last_seen_at = now(), deactivated_at = NULL, deactivated_reason = NULL
                RETURNING (SELECT user_id FROM prev)
                """,
                (body.token, user_id, body.token, body.platform),
            )).fetchone()
    except psycopg.errors.ForeignKeyViolation as exc:
        raise HTTPException(404, f"no user '{user_id}': create it first with PUT /v1/users/{user_id}") from exc
    await invalidate_recipient(res.redis, res.settings, user_id)
    if row and row[0] and row[0] != user_id:
        await invalidate_recipient(res.redis, res.settings, row[0])
    return DeviceView(token=body.token, platform=body.platform, active=True)


@router.delete("/v1/users/{user_id}/devices/{token}", status_code=204, response_class=Response,
               responses={**ERRORS, 404: {"description": "no such device for this user"}})
async def remove_device(user_id: UserId, token: Annotated[str, Path(min_length=1, max_length=4096)], _key: ApiKey, res: Resources) -> Response:
    """Forget a push token (the app was uninstalled or the user logged out)."""
    async with res.db.connection() as conn:
        row = await (await conn.execute("DELETE FROM devices WHERE user_id = %s AND token = %s RETURNING id", (user_id, token))).fetchone()
    if row is None:
        raise HTTPException(404, f"user '{user_id}' has no such device")
    await invalidate_recipient(res.redis, res.settings, user_id)
    return Response(status_code=204)
