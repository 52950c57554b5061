"""The batch runner: a record that cannot be processed never stops the batch, and an outage loses nothing."""
from __future__ import annotations

import asyncio
import json
import logging
from contextlib import asynccontextmanager

import psycopg
import pytest

from infra.kafka.dead_letters import ERROR_CLASS, STAGE
from infra.kafka.producer import RecordTooLarge
from infra.kafka.records import TRACE, InRecord, OutRecord
from infra.logs import JsonFormatter
from infra.settings import Settings
from streams.metrics import Metrics
from streams.runtime.context import Context
from streams.runtime.runner import BatchRunner, is_infra_error


class MemoryOutput:
    """The producer's twin: keeps what was sent; can refuse everything while 'down'."""

    def __init__(self, max_record_bytes: int = 1_000_000) -> None:
        self.max_record_bytes = max_record_bytes
        self.sent: list[OutRecord] = []
        self.down = False

    def check_sizes(self, records: list[OutRecord]) -> None:
        for r in records:
            if r.size > self.max_record_bytes:
                raise RecordTooLarge(r.size, self.max_record_bytes, r.topic)

    async def send_all(self, records: list[OutRecord]) -> int:
        if self.down:
            raise ConnectionError("broker away")
        self.check_sizes(records)
        self.sent += records
        return len(records)

    def reachable(self, timeout: float = 3.0) -> bool:
        return not self.down


class Services:
    """Redis and PostgreSQL twins that answer unless told not to."""

    def __init__(self) -> None:
        self.up = True

    async def ping(self) -> bool:
        if not self.up:
            raise ConnectionError("redis away")
        return True

    @asynccontextmanager
    async def connection(self, timeout: float = 3.0):
        if not self.up:
            raise psycopg.OperationalError("postgres away")

        class Conn:
            async def execute(self, _sql: str) -> None:
                return None

        yield Conn()


class ScriptedHandler:
    """Emits one record per input; ``poison`` values fail however they are retried, ``huge`` ones make a too-large output."""

    name = "test"
    stage = "route"

    def __init__(self, poison: set[bytes] = frozenset(), huge: set[bytes] = frozenset(), error: type[Exception] = ConnectionError,
                 outage: Services | None = None) -> None:
        self.poison, self.huge, self.error, self.outage = poison, huge, error, outage
        self.calls: list[list[bytes]] = []

    async def handle(self, batch: list[InRecord]) -> list[OutRecord]:
        values = [r.value or b"" for r in batch]
        self.calls.append(values)
        if self.outage is not None and not self.outage.up:
            raise psycopg.OperationalError("connection refused")
        if any(v in self.poison for v in values):
            raise self.error("looks like an outage, but only this record causes it")
        return [OutRecord("out", None, v * (2_000_000 if v in self.huge else 1)) for v in values]


def runner_for(handler: ScriptedHandler, retries: int = 2) -> tuple[BatchRunner, MemoryOutput, Services]:
    out, services = MemoryOutput(), Services()
    ctx = Context(settings=Settings(batch_infra_retries=retries, topic_prefix="t"), codec=None, output=out,  # type: ignore[arg-type]
                  redis=services, db=services, metrics=Metrics())  # type: ignore[arg-type]
    return BatchRunner(handler, ctx, max_backoff=0.001), out, services


def batch(*values: bytes) -> list[InRecord]:
    return [InRecord("t.events", 0, i, b"k", v) for i, v in enumerate(values)]


def dead(out: MemoryOutput) -> dict[bytes, tuple[bytes, bytes]]:
    return {r.value: (dict(r.headers)[STAGE], dict(r.headers)[ERROR_CLASS]) for r in out.sent if r.topic == "t.dlq"}


def produced(out: MemoryOutput) -> list[bytes]:
    return [r.value for r in out.sent if r.topic == "out"]


def test_a_record_that_keeps_failing_like_an_outage_is_split_out_and_the_rest_go_on():
    handler = ScriptedHandler(poison={b"bad"})
    runner, out, _ = runner_for(handler)
    asyncio.run(runner.run(batch(b"a", b"bad", b"c")))
    assert produced(out) == [b"a", b"c"]
    assert dead(out) == {b"bad": (b"route", b"persistent_error")}
    # the whole batch was tried 1 + 2 times before the split
    assert handler.calls[:3] == [[b"a", b"bad", b"c"]] * 3


def test_an_output_over_the_size_limit_dead_letters_its_own_record_only():
    handler = ScriptedHandler(huge={b"big"})
    runner, out, _ = runner_for(handler)
    asyncio.run(runner.run(batch(b"a", b"big", b"c")))
    assert produced(out) == [b"a", b"c"]
    assert dead(out) == {b"big": (b"route", b"too_large")}
    # not an outage: no infrastructure retries of the whole batch, one isolating pass
    assert handler.calls == [[b"a", b"big", b"c"], [b"a"], [b"big"], [b"c"]]


def test_an_outage_is_waited_out_and_nothing_is_dead_lettered():
    services = Services()
    handler = ScriptedHandler(outage=services)
    runner, out, probe = runner_for(handler, retries=1)
    services.up = probe.up = False

    async def scenario() -> None:
        task = asyncio.create_task(runner.run(batch(b"a", b"b")))
        await asyncio.sleep(0.3)  # many more failures than the retries allow, every service away
        assert not task.done()
        services.up = probe.up = True
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert sorted(produced(out)) == [b"a", b"b"] and not dead(out)


def test_a_lone_record_failing_while_every_service_answers_is_dead_lettered():
    runner, out, _ = runner_for(ScriptedHandler(poison={b"bad"}))
    asyncio.run(asyncio.wait_for(runner.run(batch(b"bad")), 5))
    assert dead(out) == {b"bad": (b"route", b"persistent_error")}


def test_a_lone_record_is_not_blamed_for_an_outage_that_just_ended():
    """Its failures during the outage do not count: one more failure right after (a pooled connection still broken)
    is not 'keeps failing while every service answers', and the record goes through on the next try."""
    services = Services()
    stale = [1]

    class AfterTheOutage(ScriptedHandler):
        async def handle(self, batch: list[InRecord]) -> list[OutRecord]:
            if services.up and stale[0]:
                stale[0] -= 1
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            return await super().handle(batch)

    handler = AfterTheOutage(outage=services)
    runner, out, probe = runner_for(handler, retries=2)
    services.up = probe.up = False

    async def scenario() -> None:
        task = asyncio.create_task(runner.run(batch(b"reset")))
        await asyncio.sleep(0.3)  # far more failures than the retries allow, every service away
        services.up = probe.up = True
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert produced(out) == [b"reset"] and not dead(out)


@pytest.mark.parametrize("exc, infra", [
    (psycopg.OperationalError("connection refused"), True),
    (psycopg.errors.ProgramLimitExceeded("index row size 9000 exceeds btree version 4 maximum 2704"), False),
    (RecordTooLarge(2_000_000, 1_000_000, "t"), False),
    (ConnectionError("reset"), True),
])
def test_which_errors_count_as_an_outage(exc, infra):
    assert is_infra_error(exc) is infra


# --- trace ids on log lines ------------------------------------------------------------------------------------

class TraceCapture(logging.Handler):
    """Each line as the JSON formatter writes it: (message, trace_id or None)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, str | None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = json.loads(JsonFormatter().format(record))
        self.lines.append((line["msg"], line.get("trace_id")))


@pytest.fixture
def trace_lines():
    capture = TraceCapture()
    root = logging.getLogger()
    root.addHandler(capture)
    try:
        yield capture.lines
    finally:
        root.removeHandler(capture)


class ChattyHandler(ScriptedHandler):
    """Logs one line per record it handles, as a handler does (a provider call, a skipped recipient)."""

    async def handle(self, batch: list[InRecord]) -> list[OutRecord]:
        for rec in batch:
            logging.getLogger("herald.test").warning("handling %s", (rec.value or b"").decode())
        return await super().handle(batch)


def traced_batch(*values: bytes) -> list[InRecord]:
    return [InRecord("t.events", 0, i, b"k", v, [(TRACE, f"trace-{v.decode()}".encode())]) for i, v in enumerate(values)]


def test_a_lone_records_lines_carry_its_trace_id_the_handlers_included(trace_lines):
    runner, out, _ = runner_for(ChattyHandler())
    asyncio.run(runner.run(traced_batch(b"a")))
    assert produced(out) == [b"a"]
    assert ("handling a", "trace-a") in trace_lines


def test_isolated_records_log_with_their_own_trace_id_and_batch_lines_with_none(trace_lines):
    runner, out, _ = runner_for(ChattyHandler(huge={b"big"}))
    asyncio.run(runner.run(traced_batch(b"a", b"big", b"c")))
    assert dead(out) == {b"big": (b"route", b"too_large")}
    # the batch of three: its lines carry no trace id (none of the three is "the" record in hand)
    assert next(t for m, t in trace_lines if m == "handling a") is None
    assert all(t is None for m, t in trace_lines if "isolating records" in m)
    # then each record alone, in its own trace; the dead letter's line says the dead record's
    for v in ("a", "big", "c"):
        assert (f"handling {v}", f"trace-{v}") in trace_lines
    dead_lines = [(m, t) for m, t in trace_lines if "dead-lettered" in m]
    assert dead_lines and all(t == "trace-big" for _, t in dead_lines), dead_lines


def test_a_persistently_failing_record_is_dead_lettered_on_a_line_with_its_trace_id(trace_lines):
    runner, out, _ = runner_for(ChattyHandler(poison={b"bad"}))
    asyncio.run(runner.run(traced_batch(b"a", b"bad")))
    assert dead(out) == {b"bad": (b"route", b"persistent_error")}
    dead_lines = [(m, t) for m, t in trace_lines if "dead-lettered" in m]
    assert dead_lines == [("test: record t.events/0/1 dead-lettered: persistent_error", "trace-bad")]
    retries = [t for m, t in trace_lines if "on record t.events/0/1" in m]
    assert retries and set(retries) == {"trace-bad"}
