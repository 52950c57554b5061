"""``POST /v1/notifications`` without FastAPI's machinery when the request is plainly acceptable.

FastAPI's dependency solving, its middleware stack and the route's edge checks cost most of a POST's CPU (a py-spy
profile at 400 requests/s: the route's own work, Kafka included, was under a fifth of it). This ASGI app, called by
``HeraldApi`` before FastAPI's own stack, takes the common case itself: a JSON body within the size limit that the
``NotificationRequest`` model accepts, from a known API key with the ``send`` scope, for a stored user the key reaches
and a known template. It runs the same functions the route runs (``send_problem``, ``claim_idempotency``,
``produce_accepted``) and answers the same 202, headers included.

Anything else goes to the full app untouched, and that answers as it always has: every refusal (401, 403, 404, 413,
422, 429) is FastAPI's. Nothing with an effect happens before that hand-over, except the rate-limit count: a request
over its rate is handed over with its verdict (``ratelimit.hand_over``), so it is counted once.
"""
from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.logs import traced
from infra.traces import request_trace
from producers.api.auth import caller_of, rate_key
from producers.api.errors import UNAVAILABLE, http_error_body, request_id_of, send_internal_error, unavailable_body
from producers.api.hostile import MAX_DEPTH
from producers.api.keys import Scope as KeyScope, key_from_headers
from producers.api.models import NotificationRequest
from producers.api.notification_record import body_hash
from producers.api.notifications import claim_idempotency, produce_accepted, send_problem
from producers.api.ratelimit import hand_over, hit
from producers.api.resources import ApiResources

log = logging.getLogger("herald.api")

PATH = "/v1/notifications"
ROUTE = PATH   # the route label of herald_api_requests
# what the edge checks (producers.api.hostile) refuse, as it can appear in a JSON text: a NUL byte, an escaped NUL or
# an escaped surrogate. A body holding any of them goes to the full app, whose checks say where it is.
_HOSTILE = re.compile(rb"\x00|\\u0000|\\u[dD][89abcdefABCDEF]")
_IDEMPOTENCY_OK = re.compile(r"^[\x21-\x7e]{1,200}$")
_TRACE_OK = re.compile(r"^[A-Za-z0-9\-_.]{1,64}$")


class _HandOver(Exception):
    """Not the common case: the full app answers."""


class FastAccept:
    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app, self.max_body = app, max_body
        self._counted: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST" or scope.get("query_string"):
            await self.app(scope, receive, send)
            return
        res: ApiResources | None = getattr(scope["app"].state, "resources", None)
        headers = _headers(scope)
        length = headers.get("content-length", "")
        if res is None or not length.isdigit() or int(length) > self.max_body or not _json_type(headers):
            await self.app(scope, receive, send)
            return
        received: list[Message] = []
        body = await _read_body(receive, received, self.max_body)
        if body is None:   # longer than said, or the client left: the full app answers (413) or ends it
            await self.app(scope, _replay(received, receive), send)
            return
        t0 = time.perf_counter()
        trace = request_trace(headers.get("x-trace-id"), headers.get("traceparent"))
        with traced(trace):
            try:
                answer = await self._accept(res, scope, headers, body, trace)
            except _HandOver:
                await self.app(scope, _replay(received, receive), send)
                return
            except Exception:
                rid = request_id_of(scope)
                log.exception("POST %s: unhandled error (request id %s)", PATH, rid)
                await send_internal_error(send, rid)
                self._count(res, 500, t0)
                return
        status, payload, extra = answer
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        out = [(b"content-length", str(len(data)).encode()), (b"content-type", b"application/json"),
               *((k.encode(), v.encode()) for k, v in extra.items()),
               (b"x-request-id", request_id_of(scope).encode()), (b"x-trace-id", trace.encode())]
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": data})
        res.metrics.fast_accepted.inc()
        self._count(res, status, t0)

    async def _accept(self, res: ApiResources, scope: Scope, headers: dict[str, str], raw: bytes,
                      trace: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        """(status, body, headers) of the answer, or _HandOver before any effect but the rate count."""
        idempotency_key = headers.get("idempotency-key")
        x_trace = headers.get("x-trace-id")
        if ((idempotency_key is not None and not _IDEMPOTENCY_OK.match(idempotency_key))
                or (x_trace is not None and not _TRACE_OK.match(x_trace))
                or _HOSTILE.search(raw) or raw.count(b"{") + raw.count(b"[") > MAX_DEPTH):
            raise _HandOver
        try:
            key = key_from_headers(headers.get("authorization"), headers.get("x-api-key"))
            caller = await caller_of(res, key) if key else None
            if caller is None or KeyScope.SEND not in caller.scopes:
                raise _HandOver
            body = NotificationRequest.model_validate_json(raw)
            if await send_problem(res, caller, body) is not None:
                raise _HandOver
            cfg = res.config
            verdict = await hit(res.redis, rate_key(res, caller), caller.rate_limit or cfg.rate_limit, cfg.rate_window)
        except (ValidationError, *UNAVAILABLE):   # the full app says what is wrong (422, 503)
            raise _HandOver from None
        if not verdict.allowed:
            hand_over(scope, verdict)
            raise _HandOver
        limits = {"x-ratelimit-limit": str(verdict.limit), "x-ratelimit-remaining": str(verdict.remaining)}
        notification_id = uuid.uuid4().hex
        try:
            if idempotency_key is not None:
                notification_id = await claim_idempotency(res, caller.key_id, idempotency_key, body_hash(body),
                                                          notification_id)
            await produce_accepted(res, body, notification_id, trace)
        except HTTPException as exc:
            return exc.status_code, http_error_body(exc, request_id_of(scope)), {**limits, **(exc.headers or {})}
        except UNAVAILABLE as exc:
            log.warning("POST %s: dependency unavailable: %r", PATH, exc)
            return 503, unavailable_body(exc, request_id_of(scope)), {**limits, "retry-after": "1"}
        return 202, {"id": notification_id, "status": "accepted", "trace_id": trace}, {
            "location": f"{PATH}/{notification_id}", **limits}

    def _count(self, res: ApiResources, status: int, t0: float) -> None:
        m = res.metrics
        key = str(status)
        if (child := self._counted.get(key)) is None:
            child = self._counted[key] = m.requests.labels("POST", ROUTE, key)
        child.inc()
        m.latency.labels(ROUTE).observe(time.perf_counter() - t0)


def _headers(scope: Scope) -> dict[str, str]:
    """The first value of each header (as Starlette's ``headers.get``)."""
    out: dict[str, str] = {}
    for k, v in scope["headers"]:
        name = k.decode("latin-1").lower()
        if name not in out:
            out[name] = v.decode("latin-1")
    return out


def _json_type(headers: dict[str, str]) -> bool:
    kind = headers.get("content-type", "").partition(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


async def _read_body(receive: Receive, received: list[Message], limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        received.append(msg)
        if msg["type"] != "http.request":
            return None
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not msg.get("more_body", False):
            return b"".join(chunks)


def _replay(received: list[Message], receive: Receive) -> Receive:
    pending = list(received)

    async def again() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return again
