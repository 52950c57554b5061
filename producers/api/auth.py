"""API-key authentication and the per-key request-rate limit (a FastAPI dependency)."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, HTTPException, Response

from producers.api.keys import hash_key, key_from_headers
from producers.api.ratelimit import hit
from producers.api.resources import ApiResources, resources

MISSING = -1  # cached "no such key" (None means "not cached")


async def key_id_of(res: ApiResources, key: str) -> int | None:
    """The id of an active key, None for an unknown or revoked one (cached briefly both ways)."""
    digest = hash_key(key)
    cached = res.keys.get(digest)
    if cached is not None:
        return None if cached == MISSING else cached
    async with res.db.connection() as conn:
        row = await (await conn.execute(
            "SELECT id FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL", (digest,)
        )).fetchone()
    res.keys.put(digest, row[0] if row else MISSING)
    return row[0] if row else None


async def api_key(
    response: Response,
    res: Annotated[ApiResources, Depends(resources)],
    authorization: Annotated[str | None, Header(description="Bearer <API key>")] = None,
    x_api_key: Annotated[str | None, Header(description="the API key (instead of Authorization)")] = None,
) -> int:
    """Authenticate the caller by API key and count the request against its rate limit; returns the key id."""
    key = key_from_headers(authorization, x_api_key)
    key_id = await key_id_of(res, key) if key else None
    if key_id is None:
        res.metrics.rejected.labels("unauthenticated").inc()
        raise HTTPException(
            401,
            "missing, unknown or revoked API key: send `Authorization: Bearer <key>` (create one with `herald apikeys create`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    cfg = res.config
    verdict = await hit(res.redis, res.settings.rkey("api-rate", str(key_id)), cfg.rate_limit, cfg.rate_window)
    response.headers["X-RateLimit-Limit"] = str(verdict.limit)
    response.headers["X-RateLimit-Remaining"] = str(verdict.remaining)
    if not verdict.allowed:
        res.metrics.rejected.labels("rate_limited").inc()
        raise HTTPException(
            429,
            f"rate limit of {cfg.rate_limit} requests per {cfg.rate_window}s exceeded for this API key; retry after {verdict.retry_after}s",
            headers={"Retry-After": str(verdict.retry_after), "X-RateLimit-Limit": str(verdict.limit), "X-RateLimit-Remaining": "0"},
        )
    return key_id


ApiKey = Annotated[int, Depends(api_key)]
Resources = Annotated[ApiResources, Depends(resources)]
