"""OpenTelemetry spans: off by default; when on, a notification's route, deliver and provider-call spans share
its Herald trace id as their OpenTelemetry trace id."""
from __future__ import annotations

import asyncio

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from infra.kafka.records import TRACE, InRecord
from infra.settings import DeliverTuning, OtelConfig, Settings
from infra.tracing import otel_trace_id, record_span, tracer_for
from schemas.vocabulary import Channel, Lane
from sinks.memory import MemorySink
from streams.handlers.deliver import DeliverHandler, DeliverStores, LaneGate
from streams.metrics import Metrics
from streams.runtime.context import Context
from streams.stages.route.recipient import Recipient
from tests.unit.test_route_handler import MemoryRouteEnv, order_placed

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def test_without_an_endpoint_there_is_no_tracer_and_no_span() -> None:
    assert tracer_for(Settings()) is None
    record_span(None, "route", TRACE_ID, 0)   # a no-op, not an error
    assert tracer_for(Settings(otel=OtelConfig(endpoint="http://127.0.0.1:4318/v1/traces"))) is not None


def test_herald_trace_ids_become_otel_trace_ids() -> None:
    assert otel_trace_id(TRACE_ID) == int(TRACE_ID, 16)
    assert otel_trace_id(TRACE_ID.upper()) == int(TRACE_ID, 16)
    other = otel_trace_id("herald.events/3/1234")   # a record without a trace header: its position, hashed
    assert 0 < other < 2**128 and other == otel_trace_id("herald.events/3/1234")


def test_route_deliver_and_the_provider_call_are_spans_of_the_notifications_trace() -> None:
    exporter = InMemorySpanExporter()
    env = MemoryRouteEnv()
    tracer = tracer_for(env.settings, exporter)

    async def run() -> None:
        uid = env.uid()
        await env.add_user(Recipient(uid, email="t@example.test"))
        route = env.handler()
        route.ctx.tracer = tracer
        event = order_placed(uid)
        rec = InRecord(env.settings.topic("events"), 0, 7, uid.encode(), env.codec.encode("OrderPlaced", event),
                       [(TRACE, TRACE_ID.encode())])
        out = await route.handle([rec])
        emails = [InRecord(o.topic, 0, i, o.key, o.value, o.headers) for i, o in enumerate(out)
                  if o.topic == env.settings.topic("deliver.email")]
        assert emails
        sink = MemorySink()
        ctx = Context(settings=env.settings, codec=env.codec, output=None, redis=None, db=None,  # type: ignore[arg-type]
                      metrics=Metrics(), tracer=tracer)
        tuning = DeliverTuning()
        deliver = DeliverHandler(ctx, Channel.EMAIL, Lane.INTERACTIVE, sink, LaneGate(), tuning,
                                 stores=DeliverStores.memory(tuning))
        await deliver.handle(emails)
        assert len(sink.given) == 1

    asyncio.run(run())
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["route", "provider call: memory", "deliver-email"]
    assert {s.context.trace_id for s in spans} == {int(TRACE_ID, 16)}
    assert all(s.end_time >= s.start_time for s in spans)
    call = spans[1]
    assert call.attributes["outcome"] == "sent" and call.attributes["chunk"] == 1
    assert call.resource.attributes["service.name"] == "herald"
