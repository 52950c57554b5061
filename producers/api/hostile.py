"""The API's edge: NUL bytes, unpaired surrogates and absurd nesting never get past it.

PostgreSQL text cannot hold NUL, and a lone surrogate cannot be encoded as
UTF-8 (not in a response, a Kafka key or an Avro string), so either would
surface far away as a 500 or a poison record. They are refused here with a
422 that names where the value was, never the value itself.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect

MAX_DEPTH = 32
_BAD = re.compile("[\x00\ud800-\udfff]")

Loc = tuple[str | int, ...]


def string_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored or sent (None when it can)."""
    m = _BAD.search(text)
    if m is None:
        return None
    return "contains a NUL byte" if m[0] == "\x00" else "contains an unpaired UTF-16 surrogate"


def find_problem(value: Any, loc: Loc = ()) -> tuple[Loc, str] | None:
    """The first place in a decoded JSON value holding a bad string (keys too), or nested deeper than MAX_DEPTH."""
    stack: list[tuple[Any, Loc]] = [(value, loc)]
    while stack:
        item, where = stack.pop()
        if len(where) - len(loc) > MAX_DEPTH:
            return where[: len(loc) + MAX_DEPTH], f"nested deeper than {MAX_DEPTH} levels"
        if isinstance(item, str):
            if problem := string_problem(item):
                return where, problem
        elif isinstance(item, dict):
            for k, v in item.items():
                if problem := string_problem(k):
                    return (*where, "<key>"), f"a key {problem}"
                stack.append((v, (*where, k)))
        elif isinstance(item, list):
            stack.extend((v, (*where, i)) for i, v in enumerate(item))
    return None


def refuse(loc: Loc, problem: str) -> RequestValidationError:
    return RequestValidationError([{"type": "hostile_input", "loc": loc, "msg": problem}])


def check_request_parts(request: Request) -> None:
    """Path parameters and the query string (names and values)."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and (problem := string_problem(value)):
            raise refuse(("path", name), problem)
    for name, value in request.query_params.multi_items():
        if problem := string_problem(name):
            raise refuse(("query", "<name>"), f"a parameter name {problem}")
        if problem := string_problem(value):
            raise refuse(("query", name), problem)


async def check_json_body(request: Request) -> None:
    try:
        raw = await request.body()  # cached on the request: FastAPI's own parsing reads it again for free
    except ClientDisconnect:
        return  # gone (or cut off by the body limit, which already answered 413): FastAPI's parsing ends it
    if not raw:
        return
    try:
        decoded = json.loads(raw)
    except RecursionError:
        raise refuse(("body",), f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:
        return  # not JSON: FastAPI's own parsing answers that (without the input, see errors.py)
    if found := find_problem(decoded, ("body",)):
        raise refuse(*found)


class CheckedRoute(APIRoute):
    """An APIRoute that runs the edge checks before FastAPI parses and validates anything."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            check_request_parts(request)
            if "json" in request.headers.get("content-type", "") or request.method in ("POST", "PUT", "PATCH"):
                await check_json_body(request)
            return await handler(request)

        return checked
