"""ASGI middleware: the request's trace id, the request-body size limit (413) and request metrics."""
from __future__ import annotations

import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.logs import traced
from infra.traces import request_trace
from producers.api.resources import ApiMetrics

TRACE_HEADER = "X-Trace-Id"


async def _send_json(send: Send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


class BodyLimit:
    """Refuse bodies larger than the limit with 413: from Content-Length at once, or while a chunked body streams in."""

    def __init__(self, app: ASGIApp, default: int, webhooks: int, campaigns: int | None = None,
                 uploads: int | None = None) -> None:
        self.app, self.default, self.webhooks = app, default, webhooks
        # POST /v1/campaigns takes a list of user ids (as large as a webhook batch); the upload streams a file to disk
        self.campaigns, self.uploads = campaigns or webhooks, uploads or webhooks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path.startswith("/v1/webhooks/"):
            limit = self.webhooks
        elif path == "/v1/campaigns/upload":
            limit = self.uploads
        elif path == "/v1/campaigns":
            limit = self.campaigns
        else:
            limit = self.default
        message = {"detail": f"request body larger than {limit} bytes", "code": "too_large"}
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                if not value.isdigit():
                    await _send_json(send, 400, {"detail": "Content-Length is not a number", "code": "bad_request"})
                    return
                if int(value) > limit:
                    await _send_json(send, 413, message)
                    return
        seen = 0
        started = rejected = False

        async def limited_receive() -> Message:
            # past the limit: answer 413 ourselves and tell the app the client went away
            # (an exception would be turned into a 400 by FastAPI's body parsing)
            nonlocal seen, started, rejected
            if rejected:
                return {"type": "http.disconnect"}
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    rejected = True
                    if not started:
                        started = True
                        await _send_json(send, 413, message)
                    return {"type": "http.disconnect"}
            return msg

        async def tracked_send(msg: Message) -> None:
            nonlocal started
            if rejected:
                return  # the 413 is already out
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        await self.app(scope, limited_receive, tracked_send)


class RequestMetrics:
    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        t0 = time.perf_counter()

        async def tracked_send(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, tracked_send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - t0)


def _header(scope: Scope, name: bytes) -> str | None:
    value = next((v for k, v in scope.get("headers", []) if k == name), None)
    return value.decode("latin-1") if value is not None else None


def trace_of(scope: Scope) -> str | None:
    """The trace id ``TraceIds`` gave this request."""
    return scope.get("state", {}).get("trace_id")


class TraceIds:
    """Outermost: each request gets a trace id (``infra.traces.request_trace``: its ``X-Trace-Id``, else its W3C
    ``traceparent``'s trace-id, else a new one), every line logged while it is handled carries it, and every
    response says it in ``X-Trace-Id``. A notification accepted by the request carries it down the pipeline."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace = request_trace(_header(scope, b"x-trace-id"), _header(scope, b"traceparent"))
        scope.setdefault("state", {})["trace_id"] = trace

        async def send_with_trace(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                headers = [(k, v) for k, v in msg.get("headers", []) if k.lower() != b"x-trace-id"]
                msg = {**msg, "headers": [*headers, (b"x-trace-id", trace.encode())]}
            await send(msg)

        with traced(trace):
            await self.app(scope, receive, send_with_trace)
