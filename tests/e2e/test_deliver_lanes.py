"""The interactive lane is served before the bulk lane, and the critical lane before both: a password reset overtakes a
50k campaign backlog, and a backlog of interactive orders."""
from __future__ import annotations

import time
import uuid

import pytest

from infra.kafka.producer import Producer
from infra.kafka.records import OutRecord
from infra.tools.seed import seed_templates
from infra.topics import deliver_topic, events_topic
from producers.sdk import Emitter
from schemas.codec import Codec
from tests.integration.test_route_agent import add_user
from tests.integration.test_sdk import _records_on
from tests.support.sandbox import delivery, delivery_record, sandbox  # noqa: F401 - fixture
from tests.support.worker import wait_for

pytestmark = pytest.mark.e2e


def test_password_reset_reaches_the_provider_within_a_second_behind_a_50k_bulk_backlog(sandbox, worker_factory):
    settings = sandbox.settings.model_copy(update={"email_provider": "sendgrid"})
    ctl = sandbox.control
    codec, out = Codec(), Producer(settings)
    bulk_topic = deliver_topic(settings, "email", "bulk")
    backlog = []
    for i in range(50_000):
        d = delivery("email", user_id=f"u-{i % 997}", lane="bulk", category="marketing",
                     event_type="CampaignMessage", campaign_id="c-lanes")
        backlog.append(delivery_record(codec, bulk_topic, d))
    out.send_all_blocking(backlog)
    ctl.faults("sendgrid", latency_ms=20)   # a provider that takes its time, as real ones do
    worker_factory(settings, agents=["deliver-email", "deliver-email-bulk"])
    wait_for(lambda: ctl.stats()["count"] >= 3000, 180, interval=0.2, message="the bulk lane busy")
    reset = delivery("email", event_type="PasswordResetRequested")
    produced_at = time.time()
    out.send_all_blocking([delivery_record(codec, deliver_topic(settings, "email"), reset)])
    msg = wait_for(lambda: ctl.inbox("email", to=reset["address"]), 60, interval=0.05, message="the reset delivered")[0]
    latency = msg["received_at"] - produced_at
    still_queued = 50_000 - ctl.stats()["count"] + 1
    print(f"password reset latency {latency * 1000:.0f} ms with {still_queued} bulk deliveries still queued")
    assert still_queued > 0, "the backlog drained before the reset was measured: the test proved nothing"
    assert latency < 1.0


def test_a_password_reset_passes_an_interactive_backlog_of_orders_on_its_own_critical_lane(sandbox, db, worker_factory):
    """The critical lane: orders queued on deliver.email keep the interactive agent busy for half a minute (a slow
    SMTP server); a password reset emitted as an event is routed to deliver.email.critical and sent by its own agent,
    over its own connections, long before the orders drain. The deliver agents read with consumers of their own, so
    the route (a Faust agent) has no order backlog in its consumer to wait behind: under one shared Faust consumer
    this backlog held the reset's route back 0.6 to 23 s. The orders all arrive."""
    settings = sandbox.settings   # SMTP, the default email provider
    ctl = sandbox.control
    codec, out = Codec(), Producer(settings)
    orders = [delivery("email", user_id=f"u-{i % 97}", category="transactional", event_type="OrderPlaced",
                       template="order_confirmation") for i in range(6000)]
    out.send_all_blocking([delivery_record(codec, deliver_topic(settings, "email"), d) for d in orders])
    ctl.faults("smtp", latency_ms=20)   # 4 connections at ~20 ms a message: ~200 orders/s, about 30 s of backlog
    seed_templates(db)
    uid = f"u-{uuid.uuid4().hex[:8]}"
    add_user(db, uid, email=f"{uid}@example.test")
    worker_factory(settings, agents=["route", "deliver-email", "deliver-email-critical"])
    wait_for(lambda: ctl.stats()["count"] >= 200, 120, interval=0.2, message="the interactive agent busy with orders")

    def reset_delivered_after(emitted_at: float) -> float:
        reset = {"event_id": f"r-{uuid.uuid4().hex[:10]}", "occurred_at": int(emitted_at * 1000), "user_id": uid,
                 "reset_url": "https://example.test/r/1", "expires_in_minutes": 30}
        # the producer that wrote the backlog: a new idempotent producer spends ~0.5 s getting its id first
        out.send_all_blocking([OutRecord(settings.topic("events"), uid.encode(), codec.encode("PasswordResetRequested", reset))])
        wait_for(lambda: [m for m in ctl.inbox("email", to=f"{uid}@example.test") if m["received_at"] >= emitted_at],
                 60, interval=0.05, message="the reset delivered")
        return max(m["received_at"] for m in ctl.inbox("email", to=f"{uid}@example.test")) - emitted_at

    reset_delivered_after(time.time())   # the first: the route agent's handler is built on its first record
    latency = reset_delivered_after(time.time())
    still_queued = len(orders) - ctl.stats()["count"] + 2
    print(f"password reset latency {latency * 1000:.0f} ms with {still_queued} orders still queued")
    assert still_queued > 1000, "the orders drained before the reset was measured: the test proved nothing"
    assert latency < 0.5
    wait_for(lambda: ctl.stats()["count"] >= len(orders) + 2, 180, interval=0.5, message="every order delivered too")


def test_a_password_reset_is_routed_by_its_own_agent_whatever_the_route_agent_has_ahead(sandbox, db, worker_factory):
    """Critical events have a topic of their own (events.critical, chosen by the SDK from the routes file) and an
    agent of their own (route-critical): a worker that runs only the critical lane delivers a reset while the orders
    emitted before it wait on the events topic for a route agent (here none runs; under load, one with a backlog)."""
    settings = sandbox.settings
    ctl = sandbox.control
    seed_templates(db)
    uid = f"u-{uuid.uuid4().hex[:8]}"
    add_user(db, uid, email=f"{uid}@example.test")
    worker_factory(settings, agents=["route-critical", "deliver-email-critical"])
    with Emitter(settings=settings) as sdk:
        for i in range(500):
            sdk.emit("OrderPlaced", {"user_id": uid, "order_id": f"o-{i}", "currency": "EUR", "total_cents": 1495,
                                     "items": [{"sku": "MUG", "name": "mug", "quantity": 1, "unit_price_cents": 1495}]})
        sdk.emit("PasswordResetRequested", {"user_id": uid, "reset_url": "https://example.test/r/1",
                                            "expires_in_minutes": 30})
    [msg] = wait_for(lambda: ctl.inbox("email", to=f"{uid}@example.test"), 60, interval=0.1, message="the reset delivered")
    assert "https://example.test/r/1" in str(msg)
    time.sleep(1)
    assert len(ctl.inbox("email", to=f"{uid}@example.test")) == 1, "an order was delivered: it took the critical lane"
    ends = {t: _records_on(settings, t) for t in (events_topic(settings), events_topic(settings, critical=True))}
    assert ends == {events_topic(settings): 500, events_topic(settings, critical=True): 1}
