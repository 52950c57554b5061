"""Trace ids: a W3C traceparent's trace-id is honoured, an invalid one ignored; every API line carries the request's."""
from __future__ import annotations

import json
import logging

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from infra.logs import JsonFormatter
from infra.traces import from_traceparent, request_trace
from producers.api.middleware import TraceIds, trace_of

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


@pytest.mark.parametrize(("value", "trace"), [
    (PARENT, TRACE),
    (f"00-{TRACE}-00f067aa0ba902b7-00", TRACE),                  # not sampled: still the same trace
    (f"  {PARENT} ", TRACE),                                     # optional whitespace around the value
    (f"01-{TRACE}-00f067aa0ba902b7-01-future-field", TRACE),     # a later version may append fields
    (None, None), ("", None), ("garbage", None),
    (f"ff-{TRACE}-00f067aa0ba902b7-01", None),                   # version ff is invalid
    (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),                # all-zero trace-id
    (f"00-{TRACE}-{'0' * 16}-01", None),                         # all-zero parent-id
    (f"00-{TRACE.upper()}-00f067aa0ba902b7-01", None),           # upper case hex is not the format
    (f"00-{TRACE[:-1]}-00f067aa0ba902b7-01", None),              # 31 digits
    (f"00-{TRACE}-00f067aa0ba902b7-01-extra", None),             # version 00 has nothing after the flags
])
def test_traceparent(value, trace):
    assert from_traceparent(value) == trace


def test_x_trace_id_wins_then_traceparent_then_a_new_one():
    assert request_trace("order-42", PARENT) == "order-42"
    assert request_trace(None, PARENT) == TRACE
    assert request_trace("bad id with spaces", PARENT) == TRACE
    made = request_trace(None, "00-nonsense")
    assert len(made) == 32 and int(made, 16) >= 0 and made != TRACE


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(JsonFormatter().format(record)))


@pytest.fixture
def client_and_lines():
    app = FastAPI()

    @app.get("/work")
    async def work(request: Request) -> dict:
        logging.getLogger("herald.api").warning("working")
        return {"trace": trace_of(request.scope)}

    app.add_middleware(TraceIds)
    lines = Lines()
    logging.getLogger().addHandler(lines)
    try:
        with TestClient(app) as client:
            yield client, lines.lines
    finally:
        logging.getLogger().removeHandler(lines)


def test_every_line_of_a_request_carries_its_trace_id_and_the_answer_says_it(client_and_lines):
    client, lines = client_and_lines
    r = client.get("/work", headers={"traceparent": PARENT})
    assert r.headers["X-Trace-Id"] == TRACE and r.json() == {"trace": TRACE}
    assert [line.get("trace_id") for line in lines if line["msg"] == "working"] == [TRACE]
    r = client.get("/work", headers={"X-Trace-Id": "order-42", "traceparent": PARENT})
    assert r.headers["X-Trace-Id"] == "order-42" and lines[-1]["trace_id"] == "order-42"
    r = client.get("/work", headers={"traceparent": "00-broken"})
    made = r.headers["X-Trace-Id"]
    assert len(made) == 32 and made != TRACE and lines[-1]["trace_id"] == made
