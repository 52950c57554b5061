"""PUT/GET/DELETE /v1/users/{id} (addresses, locale, time zone; erasure) and POST/DELETE its push devices.

Every change invalidates the user's cached recipient right after it commits, so
the route stage's very next event reads the new data.
"""
from __future__ import annotations

from typing import Annotated, Any

import psycopg.errors
from fastapi import APIRouter, HTTPException, Path, Response

from producers.api.auth import AdminKey, ReadKey, Resources
from producers.api.erasure import erase_user
from producers.api.hostile import CheckedRoute
from producers.api.models import ID, DeviceIn, DeviceView, ErasureView, UserUpdate, UserView
from producers.api.tenancy import reaches, require_user
from streams.stores.recipients import invalidate_recipient

router = APIRouter(tags=["users"], route_class=CheckedRoute)

USER_COLUMNS = "id, email, phone, locale, time_zone, first_name, email_undeliverable, phone_undeliverable, updated_at, tenant"
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no valid API key"}, 403: {"description": "the API key lacks the scope"},
    429: {"description": "rate limit exceeded"}}
UserId = Annotated[str, Path(pattern=ID)]


def _user(row: tuple) -> UserView:
    return UserView(**dict(zip(USER_COLUMNS.split(", "), row, strict=True)))


@router.put("/v1/users/{user_id}", response_model=UserView,
            responses={**ERRORS, 404: {"description": "the user belongs to another tenant"},
                       422: {"description": "invalid address, locale or time zone"}})
async def put_user(user_id: UserId, body: UserUpdate, caller: AdminKey, res: Resources) -> UserView:
    """Create or update a user: email, phone (E.164), locale, time zone, first name (scope ``admin``).

    Fields left out keep their value; a changed address is deliverable again (its undeliverable mark is cleared).
    A key with a tenant creates users in its tenant and cannot change another tenant's (404).
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
    # a tenant's key changes only its tenant's users; a key without a tenant changes any (and leaves the tenant as it is)
    sql = (
        "INSERT INTO users AS u (id, email, phone, locale, time_zone, first_name, tenant) VALUES (%s, %s, %s, %s, %s, %s, %s) "
        f"ON CONFLICT (id) DO UPDATE SET {', '.join(sets)} "
        f"WHERE EXCLUDED.tenant IS NULL OR u.tenant = EXCLUDED.tenant RETURNING {USER_COLUMNS}"
    )
    async with res.db.connection() as conn:
        row = await (await conn.execute(sql, (user_id, values["email"], values["phone"], values["locale"],
                                              values["time_zone"], values["first_name"], caller.tenant))).fetchone()
    if row is None:
        raise HTTPException(404, f"no user '{user_id}' (the id is taken outside this key's tenant; pick another)")
    await invalidate_recipient(res.redis, res.settings, user_id)
    return _user(row)


@router.get("/v1/users/{user_id}", response_model=UserView, responses={**ERRORS, 404: {"description": "unknown user"}})
async def get_user(user_id: UserId, caller: ReadKey, res: Resources) -> UserView:
    """A user's addresses, locale, time zone and whether an address bounced (scope ``read``)."""
    async with res.db.connection() as conn:
        row = await (await conn.execute(f"SELECT {USER_COLUMNS} FROM users WHERE id = %s", (user_id,))).fetchone()
    if row is None or not reaches(caller, row[-1]):
        raise HTTPException(404, f"no user '{user_id}'")
    return _user(row)


@router.post("/v1/users/{user_id}/devices", status_code=201, response_model=DeviceView,
             responses={**ERRORS, 404: {"description": "unknown user"}, 409: {"description": "token held in another tenant"},
                        422: {"description": "token not valid for the platform"}})
async def add_device(user_id: UserId, body: DeviceIn, caller: AdminKey, res: Resources) -> DeviceView:
    """Register (or re-activate) a push token (scope ``admin``). A token registered to another user moves to this one.

    A key with a tenant moves tokens only between its tenant's users (409 otherwise).
    """
    if caller.tenant is not None:
        await require_user(res, caller, user_id)
    try:
        async with res.db.connection() as conn:
            row = await (await conn.execute(
                """
                WITH prev AS (SELECT user_id FROM devices WHERE token = %s)
                INSERT INTO devices (user_id, token, platform) VALUES (%s, %s, %s)
                ON CONFLICT (token) DO UPDATE SET user_id = EXCLUDED.user_id, platform = EXCLUDED.platform, active = true,
                    temp_failures = 0, last_seen_at = now(), deactivated_at = NULL, deactivated_reason = NULL
                WHERE %s::text IS NULL OR (SELECT tenant FROM users WHERE id = devices.user_id) = %s::text
                RETURNING (SELECT user_id FROM prev)
                """,
                (body.token, user_id, body.token, body.platform, caller.tenant, caller.tenant),
            )).fetchone()
    except psycopg.errors.ForeignKeyViolation as exc:
        raise HTTPException(404, f"no user '{user_id}': create it first with PUT /v1/users/{user_id}") from exc
    if row is None:
        raise HTTPException(409, "this push token is registered to a user outside this key's tenant")
    await invalidate_recipient(res.redis, res.settings, user_id)
    if row and row[0] and row[0] != user_id:
        await invalidate_recipient(res.redis, res.settings, row[0])
    return DeviceView(token=body.token, platform=body.platform, active=True)


@router.delete("/v1/users/{user_id}/devices/{token}", status_code=204, response_class=Response,
               responses={**ERRORS, 404: {"description": "no such device for this user"}})
async def remove_device(user_id: UserId, token: Annotated[str, Path(min_length=1, max_length=4096)], caller: AdminKey,
                        res: Resources) -> Response:
    """Forget a push token (the app was uninstalled or the user logged out; scope ``admin``)."""
    if caller.tenant is not None:
        await require_user(res, caller, user_id)
    async with res.db.connection() as conn:
        row = await (await conn.execute("DELETE FROM devices WHERE user_id = %s AND token = %s RETURNING id", (user_id, token))).fetchone()
    if row is None:
        raise HTTPException(404, f"user '{user_id}' has no such device")
    await invalidate_recipient(res.redis, res.settings, user_id)
    return Response(status_code=204)


@router.delete("/v1/users/{user_id}", response_model=ErasureView, responses={**ERRORS, 404: {"description": "unknown user"}})
async def delete_user(user_id: UserId, caller: AdminKey, res: Resources) -> ErasureView:
    """Erase a user's personal data (scope ``admin``): profile, addresses, devices, preferences, the addresses in the
    delivery ledger and the free texts of its history; its notifications stay as anonymous counts.

    Records still in Kafka topics expire with the topics' retention.
    """
    async with res.db.connection() as conn:
        erased = await erase_user(conn, user_id, caller.tenant)
    if erased is None:
        raise HTTPException(404, f"no user '{user_id}'")
    res.users.forget(user_id)
    await invalidate_recipient(res.redis, res.settings, user_id)
    return ErasureView(user_id=user_id, profile_deleted=erased.user, notifications_anonymised=erased.notifications,
                       deliveries_anonymised=erased.deliveries, devices_deleted=erased.devices, scheduled_deleted=erased.scheduled)
