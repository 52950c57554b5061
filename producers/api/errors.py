"""Herald's error bodies: ``{"detail": ..., "code": ..., "errors": [{"field", "message"}], "request_id"}``.

FastAPI's default 422 echoes each bad value (``input``): an address ends up in
a response and a log line, and a lone surrogate cannot even be encoded, so a
bad request turned into a 500. Herald's body names the field, never the value.
Anything unexpected is a 500 carrying a request id (also the X-Request-Id
header) and no traceback; the traceback goes to the (masked) log.
"""
from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any

import psycopg
import psycopg_pool
import redis.exceptions
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("herald.api")

REQUEST_ID = "X-Request-Id"
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
_MAX_ERRORS = 20


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    detail: str
    code: str
    errors: list[FieldError] = []
    request_id: str | None = None


class ApiError(Exception):
    """An expected refusal with a machine-readable code (e.g. 422 ``unknown_user``)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part)[:64].encode("utf-8", "replace").decode()  # a field name is user input too
            out += f".{text}" if out else text
    return out or "body"


def _message(error: dict[str, Any]) -> str:
    msg = str(error.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")[:300].encode("utf-8", "replace").decode()


def request_id(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


async def validation_failed(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [FieldError(field=field_name(e.get("loc", ())), message=_message(e)) for e in exc.errors()[:_MAX_ERRORS]]
    summary = "; ".join(f"{e.field}: {e.message}" for e in errors[:3])
    body = ErrorBody(detail=f"invalid request: {summary}", code="invalid_request", errors=errors, request_id=request_id(request))
    return JSONResponse(body.model_dump(), 422)


async def api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(ErrorBody(detail=exc.detail, code=exc.code, request_id=request_id(request)).model_dump(), exc.status)


def request_id_of(scope: Scope) -> str:
    """The request's id: its valid X-Request-Id, else a new one."""
    given = next((v for k, v in scope.get("headers", []) if k == b"x-request-id"), b"").decode("latin-1")
    return given if _REQUEST_ID_OK.match(given) else uuid.uuid4().hex


async def send_internal_error(send: Send, rid: str) -> None:
    data = json.dumps(ErrorBody(detail="internal error; quote the request id when reporting it",
                                code="internal_error", request_id=rid).model_dump()).encode()
    await send({"type": "http.response.start", "status": 500,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            (b"x-request-id", rid.encode())]})
    await send({"type": "http.response.body", "body": data})


class RequestIds:
    """Outermost: every response carries X-Request-Id; an exception nobody handled becomes a JSON 500 with that id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def send_with_id(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
                msg = {**msg, "headers": [*msg.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(msg)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            return  # nobody is listening for an answer
        except Exception:
            log.exception("%s %s: unhandled error (request id %s)", scope.get("method"), scope.get("path"), rid)
            if started:
                raise  # the response is half sent: only the server can cut the connection
            await send_internal_error(send, rid)


UNAVAILABLE = (   # answered 503 "unavailable": the client retries
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)


def unavailable_body(exc: Exception, rid: str | None) -> dict[str, Any]:
    return ErrorBody(detail=f"a dependency is unavailable ({type(exc).__name__}); retry", code="unavailable",
                     request_id=rid).model_dump()


_CODES = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          409: "conflict", 413: "too_large", 422: "invalid_request", 429: "rate_limited", 503: "unavailable"}


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    """HTTPExceptions in the same body (their headers, e.g. Retry-After and WWW-Authenticate, kept)."""
    from starlette.exceptions import HTTPException

    assert isinstance(exc, HTTPException)
    return JSONResponse(http_error_body(exc, request_id(request)), exc.status_code, headers=getattr(exc, "headers", None))


def http_error_body(exc: Exception, rid: str | None) -> dict[str, Any]:
    """An HTTPException's ``ErrorBody``."""
    from starlette.exceptions import HTTPException

    assert isinstance(exc, HTTPException)
    return ErrorBody(detail=str(exc.detail), code=_CODES.get(exc.status_code, f"http_{exc.status_code}"),
                     request_id=rid).model_dump()


ERROR_STATUSES = {"500": "internal error; the body carries the request id to quote",
                  "503": "a dependency (Kafka, PostgreSQL, Redis) is unavailable; retry after Retry-After"}


def with_herald_errors(app: Any) -> None:
    """The OpenAPI spec documents Herald's one error body for every 4xx and 5xx answer (FastAPI's generated 422
    describes its own, replaced, model), and every operation may answer 500 and 503 with it."""
    from fastapi import FastAPI

    assert isinstance(app, FastAPI)
    generate = app.openapi
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = generate()
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(body.pop("$defs", {}))
        schemas["ErrorBody"] = body
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        for operations in spec.get("paths", {}).values():
            for op in operations.values():
                responses = op.setdefault("responses", {})
                for status, description in ERROR_STATUSES.items():
                    responses.setdefault(status, {"description": description})
                if "requestBody" in op:
                    responses.setdefault("413", {"description": "request body too large"})
                for status, response in responses.items():
                    content = response.get("content", {})
                    generated = "HTTPValidationError" in str(content)
                    if status[:1] in ("4", "5") and (not content or generated):
                        response["content"] = error_ref
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
