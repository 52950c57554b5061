"""OpenTelemetry spans for the path of a notification: API → route → deliver → provider call.

Off unless ``HERALD_OTEL__ENDPOINT`` is set (then spans go to that OTLP/HTTP endpoint in batches). Herald's
trace id is the span's trace id: a 32-hex id (from ``X-Trace-Id``, a W3C ``traceparent``, or generated) is
used as it is, any other id is hashed to 128 bits. Each stage's span is a child of that trace's remote root,
so a notification's stages appear as one trace even though they run in different processes and batches.
A batch stage gives each record's span the batch's start and end times: what the record waited for.
"""
from __future__ import annotations

import hashlib
import random
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, Tracer

from infra.settings import Settings

_HEX = frozenset("0123456789abcdef")


def tracer_for(settings: Settings, exporter: SpanExporter | None = None) -> Tracer | None:
    """A tracer when spans are configured (or ``exporter`` is given, e.g. an in-memory one in tests), else None."""
    if exporter is None and not settings.otel.endpoint:
        return None
    processor: SpanProcessor
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otel.endpoint))
    else:
        processor = SimpleSpanProcessor(exporter)
    provider = TracerProvider(resource=Resource.create({"service.name": settings.otel.service_name}))
    provider.add_span_processor(processor)
    return provider.get_tracer("herald")


def otel_trace_id(trace_id: str) -> int:
    """Herald's trace id as OpenTelemetry's 128-bit one."""
    t = trace_id.lower()
    if len(t) == 32 and set(t) <= _HEX and t != "0" * 32:
        return int(t, 16)
    return int.from_bytes(hashlib.sha256(trace_id.encode()).digest()[:16], "big") or 1


def record_span(tracer: Tracer | None, name: str, trace_id: str, start_ns: int, end_ns: int | None = None,
                **attributes: Any) -> None:
    """One finished span of ``trace_id``'s trace (no-op without a tracer)."""
    if tracer is None:
        return
    parent = NonRecordingSpan(SpanContext(otel_trace_id(trace_id), random.getrandbits(64) or 1, is_remote=True,
                                          trace_flags=TraceFlags(TraceFlags.SAMPLED)))
    span = tracer.start_span(name, context=trace.set_span_in_context(parent), start_time=start_ns,
                             attributes={k: v for k, v in attributes.items() if v is not None})
    span.end(end_time=end_ns or time.time_ns())
