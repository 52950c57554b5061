"""The SDK for upstream services: ``emit()`` any catalogued record to Herald.

    from producers.sdk import Emitter
    with Emitter() as herald:                        # HERALD_KAFKA_BOOTSTRAP (and HERALD_KAFKA__*) or settings=...
        herald.emit("OrderPlaced", {...})            # validated against the catalog, keyed by user id
        herald.emit("BirthdayReached", {"user_id": "u1", "age": 30},
                    send_at=next_local("09:00", "Europe/Vienna", weekday="monday"))

Idempotent producer with ``acks=all``; a record the broker did not take
raises ``EmitError`` from ``flush()`` (and from leaving the ``with`` block).
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from infra.kafka.producer import Producer
from infra.kafka.records import TRACE, OutRecord
from infra.schema_registry import catalog_for
from infra.settings import Settings
from infra.topics import events_topic
from producers.send_at import next_local, to_ms
from schemas.codec import Codec
from streams.routes import REQUEST_RECORDS, RouteConfigError, load_routes

LANE_TOPIC = {"CampaignMessage": "bulk"}  # everything else goes to the interactive lane

log = logging.getLogger(__name__)

__all__ = ["EmitError", "Emitter", "next_local"]


class EmitError(RuntimeError):
    """The broker did not acknowledge one or more emitted records."""

    def __init__(self, errors: list[tuple[str, KafkaError]]) -> None:
        first_id, first = errors[0]
        super().__init__(f"{len(errors)} record(s) not delivered; first: event {first_id}: {first.str()}")
        self.errors = errors


def _critical(s: Settings, events: set[str] | frozenset[str] | None) -> tuple[frozenset[str], frozenset[str]]:
    """The critical event types (given, or read from the routes file) and the critical categories."""
    try:
        cfg = load_routes(s.routes_file)
    except RouteConfigError as exc:
        # the topic only decides how soon an event is routed, never how: everything can take the events topic
        log.warning("the routes file cannot be read (%s); every event goes to the events topic", exc)
        return frozenset(events or ()), frozenset()
    return (cfg.critical_events() if events is None else frozenset(events)), cfg.critical_categories


class Emitter:
    def __init__(
        self,
        bootstrap: str | None = None,
        *,
        topic_prefix: str | None = None,
        codec: Codec | None = None,
        settings: Settings | None = None,
        critical_events: set[str] | frozenset[str] | None = None,
        **producer_extra: object,
    ) -> None:
        """``settings`` (default: from ``HERALD_*``) carry the cluster's address and credentials;
        ``bootstrap`` and ``topic_prefix`` override theirs; ``producer_extra`` are librdkafka properties.

        ``critical_events`` (default: from the routes file, ``HERALD_ROUTES_FILE``) are the event types sent to the
        critical events topic, which an agent of its own routes ahead of everything else; a ``NotificationRequested``
        goes there when its category is critical."""
        s = settings or Settings()
        if bootstrap is not None:
            s = s.model_copy(update={"kafka_bootstrap": bootstrap})
        if topic_prefix:
            s = s.model_copy(update={"topic_prefix": topic_prefix})
        self.topic_prefix = s.topic_prefix
        self._events, self._critical_events = events_topic(s), events_topic(s, critical=True)
        self._bulk = s.topic(LANE_TOPIC["CampaignMessage"])
        self.critical_events, self.critical_categories = _critical(s, critical_events)
        self.codec = codec or Codec(catalog_for(s))  # HERALD_SCHEMAS_DIR's event types too
        self._producer = Producer(s, **producer_extra)
        self._errors: list[tuple[str, KafkaError]] = []
        self._lock = threading.Lock()

    def emit(
        self,
        name: str,
        record: Mapping[str, Any],
        *,
        trace_id: str | None = None,
        key: str | None = None,
        send_at: datetime | int | None = None,
        cancellation_key: str | None = None,
        wait: bool = False,
    ) -> str:
        """Encode and send ``record`` as the latest version of schema ``name``; returns its event id.

        ``event_id`` and ``occurred_at`` are filled in when absent. ``send_at`` (an
        aware datetime, e.g. from ``next_local``, or epoch ms) schedules the
        notification, for schemas with a ``send_at`` field. ``cancellation_key`` (for schemas
        with that field) lets ``POST /v1/cancellations`` or ``herald notifications cancel --key``
        cancel the notification while it waits. ``wait=True`` blocks
        until the broker acknowledged (``EmitError`` otherwise). Raises ``ValueError``
        at once when the record does not match the schema.
        """
        rec = dict(record)
        if send_at is not None:
            if "send_at" not in self._fields(name):
                raise ValueError(f"{name} has no send_at field; schedulable records: NotificationRequested, BirthdayReached, …")
            rec["send_at"] = to_ms(send_at)
        if cancellation_key is not None:
            if "cancellation_key" not in self._fields(name):
                raise ValueError(f"{name} has no cancellation_key field; cancelable records: NotificationRequested, "
                                 "BirthdayReached, …")
            rec["cancellation_key"] = cancellation_key
        rec.setdefault("event_id", uuid.uuid4().hex)
        rec.setdefault("occurred_at", datetime.now(UTC))
        value = self.codec.encode(name, rec)
        user = key or rec.get("user_id")
        if not user:
            raise ValueError(f"{name}: a user_id (or key=) is needed to key the record")
        topic = self._topic(name, rec)
        event_id = str(rec["event_id"])

        def report(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                with self._lock:
                    self._errors.append((event_id, err))

        headers = [(TRACE, (trace_id or uuid.uuid4().hex).encode())]
        try:
            self._producer.produce(OutRecord(topic, str(user).encode(), value, headers), report)
        except KafkaException as exc:  # refused locally (e.g. larger than message.max.bytes): the caller hears now
            raise EmitError([(event_id, exc.args[0])]) from exc
        self._producer.poll(0)
        if wait:
            self.flush()
        return event_id

    def _topic(self, name: str, rec: Mapping[str, Any]) -> str:
        if name in LANE_TOPIC:
            return self._bulk
        # a request names its own category; a domain event's fields are its own business, whatever their names
        critical = name in self.critical_events or (name in REQUEST_RECORDS and rec.get("category") in self.critical_categories)
        return self._critical_events if critical else self._events

    def _fields(self, name: str) -> set[str]:
        return {f["name"] for f in self.codec.catalog.latest(name).parsed["fields"]}

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for every record; raise ``EmitError`` for those the broker refused or that timed out."""
        deadline = time.monotonic() + timeout
        left = self._producer.flush(timeout)
        while left and time.monotonic() < deadline:
            left = self._producer.flush(max(0.1, deadline - time.monotonic()))
        with self._lock:
            errors, self._errors = self._errors, []
        if left:
            errors.append(("?", KafkaError(KafkaError._MSG_TIMED_OUT, f"{left} record(s) still in flight after {timeout}s")))
        if errors:
            raise EmitError(errors)

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, exc_type, *_: object) -> None:
        if exc_type is None:
            self.flush()
        else:
            self._producer.flush(5)
