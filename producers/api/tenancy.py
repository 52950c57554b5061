"""Tenants: a key with a tenant reaches only users of that tenant; a key without one reaches every user.

Another tenant's user answers exactly like an unknown one (404), so a key cannot learn which ids exist elsewhere.
"""
from __future__ import annotations

from fastapi import HTTPException

from producers.api.keys import Caller
from producers.api.resources import ApiResources


def reaches(caller: Caller, user_tenant: str | None) -> bool:
    """Whether the caller's key may read or change a user of ``user_tenant``."""
    return caller.tenant is None or caller.tenant == user_tenant


async def user_tenant(res: ApiResources, user_id: str) -> tuple[bool, str | None]:
    """(whether the user exists, its tenant)."""
    async with res.db.connection() as conn:
        row = await (await conn.execute("SELECT tenant FROM users WHERE id = %s", (user_id,))).fetchone()
    return (row is not None, row[0] if row else None)


async def require_user(res: ApiResources, caller: Caller, user_id: str) -> None:
    """404 unless the user exists and the caller's tenant owns it."""
    exists, tenant = await user_tenant(res, user_id)
    if not exists or not reaches(caller, tenant):
        raise HTTPException(404, f"no user '{user_id}'")
