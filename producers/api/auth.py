"""API-key authentication, scopes and the per-key request-rate limit (FastAPI dependencies).

A route takes ``SendKey``, ``ReadKey`` or ``AdminKey``: the caller must present an active
key (401), within its rate (429), holding that scope (403). The key is read from
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; both are declared as OpenAPI
security schemes.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Response, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from producers.api.errors import ApiError
from producers.api.keys import Caller, Scope, hash_key, key_from_headers
from producers.api.ratelimit import hit, verdict_taken
from producers.api.resources import MISSING_KEY, ApiResources, resources

bearer = HTTPBearer(auto_error=False, scheme_name="bearer", description="`Authorization: Bearer <API key>`")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="apiKey",
                              description="the API key, instead of Authorization")


async def caller_of(res: ApiResources, key: str) -> Caller | None:
    """The active key's caller, None for an unknown or revoked one (cached briefly both ways)."""
    digest = hash_key(key)
    cached = res.keys.get(digest)
    if cached is not None:
        return cached if isinstance(cached, Caller) else None
    async with res.db.connection() as conn:
        row = await (await conn.execute(
            "SELECT id, scopes, tenant, rate_limit FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL", (digest,)
        )).fetchone()
    caller = Caller.from_row(*row) if row else None
    res.keys.put(digest, caller or MISSING_KEY)
    return caller


async def api_key(
    request: Request,
    response: Response,
    res: Annotated[ApiResources, Depends(resources)],
    authorization: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None,
    x_api_key: Annotated[str | None, Security(api_key_header)] = None,
) -> Caller:
    """Authenticate the caller by API key and count the request against its rate limit."""
    key = key_from_headers(f"Bearer {authorization.credentials}" if authorization else None, x_api_key)
    caller = await caller_of(res, key) if key else None
    if caller is None:
        res.metrics.rejected.labels("unauthenticated").inc()
        raise HTTPException(
            401,
            "missing, unknown or revoked API key: send `Authorization: Bearer <key>` (create one with `herald apikeys create`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    cfg = res.config
    limit = caller.rate_limit or cfg.rate_limit
    verdict = verdict_taken(request.scope) or await hit(res.redis, rate_key(res, caller), limit, cfg.rate_window)
    response.headers["X-RateLimit-Limit"] = str(verdict.limit)
    response.headers["X-RateLimit-Remaining"] = str(verdict.remaining)
    if not verdict.allowed:
        res.metrics.rejected.labels("rate_limited").inc()
        raise HTTPException(
            429,
            f"rate limit of {limit} requests per {cfg.rate_window}s exceeded for this API key; retry after {verdict.retry_after}s",
            headers={"Retry-After": str(verdict.retry_after), "X-RateLimit-Limit": str(verdict.limit), "X-RateLimit-Remaining": "0"},
        )
    return caller


def rate_key(res: ApiResources, caller: Caller) -> str:
    return res.settings.rkey("api-rate", str(caller.key_id))


def requires(scope: Scope) -> Callable[..., Awaitable[Caller]]:
    """A dependency: an authenticated caller whose key holds ``scope`` (403 otherwise)."""

    async def scoped(caller: Annotated[Caller, Depends(api_key)], res: Annotated[ApiResources, Depends(resources)]) -> Caller:
        if scope not in caller.scopes:
            res.metrics.rejected.labels("forbidden").inc()
            held = ", ".join(sorted(caller.scopes)) or "none"
            raise ApiError(403, "forbidden", f"this API key lacks the '{scope}' scope (it has: {held}); "
                                             f"create a key with it: `herald apikeys create NAME --scope {scope}`")
        return caller

    return scoped


SendKey = Annotated[Caller, Depends(requires(Scope.SEND))]
ReadKey = Annotated[Caller, Depends(requires(Scope.READ))]
AdminKey = Annotated[Caller, Depends(requires(Scope.ADMIN))]
Resources = Annotated[ApiResources, Depends(resources)]
