"""Deliver agent under faults: crash after the provider accepted, circuit breaker, 429, device tokens."""
from __future__ import annotations

import json
import uuid

import pytest
import redis

from infra.kafka.producer import Producer
from infra.topics import deliver_topic
from schemas.codec import Codec
from streams.stores.circuit import circuit_key
from tests.support.sandbox import delivery, delivery_record, sandbox  # noqa: F401 - fixture
from tests.support.worker import wait_for

pytestmark = pytest.mark.integration


def _produce(settings, channel, ds):
    Producer(settings).send_all_blocking(
        [delivery_record(Codec(), deliver_topic(settings, channel), d) for d in ds])


def _ledger(db, ds):
    return dict(db.execute("SELECT delivery_id, status FROM delivery_state WHERE delivery_id = ANY(%s)",
                           ([d["delivery_id"] for d in ds],)).fetchall())


def test_sigkill_after_the_provider_accepted_a_chunk_sends_each_message_exactly_once(sandbox, db, worker_factory):
    settings = sandbox.settings.model_copy(update={"email_provider": "sendgrid"})
    ctl = sandbox.control
    first = [delivery("email", user_id="u-same") for _ in range(10)]
    held = delivery("email", user_id="u-same")   # same key: same partition, same batch, after the ten
    ctl.faults("sendgrid", hold=[held["address"]])
    _produce(settings, "email", [*first, held])
    # a 2 s batch window: the eleven records already in the log reach the agent as one batch even on a loaded
    # machine (with the default 50 ms window a batch boundary could fall between them, so part of the first
    # ten would travel in the held chunk and be 'claimed', not 'sent')
    env = {"HERALD_DELIVER__MAX_CHUNK": "10", "HERALD_BATCH_WITHIN": "2", "HERALD_INTERACTIVE_WITHIN": "2"}
    w = worker_factory(settings, agents=["deliver-email"], extra_env=env)
    # the first chunk is accepted and marked sent; the worker is now blocked inside the call of the second,
    # so the batch is unfinished and its offsets are not committed
    wait_for(lambda: ctl.stats()["held"] == 1, 120, message="second chunk held by the provider")
    assert set(_ledger(db, first).values()) == {"sent"} and len(_ledger(db, first)) == 10
    assert _ledger(db, [held]) == {held["delivery_id"]: "claimed"}
    w.kill()
    ctl.faults("sendgrid", hold=[])
    # restart; a lease of 0 lets the new worker take over the dead worker's claim at once
    worker_factory(settings, agents=["deliver-email"], extra_env={**env, "HERALD_DELIVER__CLAIM_LEASE": "0"})
    wait_for(lambda: _ledger(db, [held]).get(held["delivery_id"]) == "sent", 120, message="held delivery sent")
    counts: dict[str, int] = {}
    for m in ctl.inbox("email"):
        counts[m["to"]] = counts.get(m["to"], 0) + 1
    assert counts == {d["address"]: 1 for d in [*first, held]}


def test_circuit_opens_on_a_5xx_storm_stops_calling_probes_and_closes(sandbox, db, worker_factory):
    settings = sandbox.settings.model_copy(update={"email_provider": "sendgrid"})
    ctl = sandbox.control
    r = redis.Redis.from_url(settings.redis_dsn)
    key = circuit_key(settings, "sendgrid")
    ctl.faults("sendgrid", storm=-1)
    env = {"HERALD_DELIVER__MAX_CHUNK": "1", "HERALD_DELIVER__BREAKER_OPEN_SECONDS": "4"}
    worker_factory(settings, agents=["deliver-email"], extra_env=env)
    storm = [delivery("email") for _ in range(12)]
    _produce(settings, "email", storm)
    wait_for(lambda: set(_ledger(db, storm).values()) == {"failed"} and len(_ledger(db, storm)) == 12, 120,
             message="all storm deliveries failed over to the ladder")
    assert json.loads(r.get(key))["state"] == "open"
    assert ctl.requests("sendgrid") == 5   # five failures opened it; the other seven were not sent to the provider
    ctl.clear_faults()
    wait_for(lambda: json.loads(r.get(key))["state"] == "open", 1)
    after = [delivery("email") for _ in range(6)]
    import time
    time.sleep(4.5)  # the circuit's open period (configured 4 s) passes: the next calls are half-open probes
    _produce(settings, "email", after)
    wait_for(lambda: set(_ledger(db, after).values()) == {"sent"} and len(_ledger(db, after)) == 6, 120,
             message="recovered deliveries sent")
    assert json.loads(r.get(key))["state"] == "closed"
    assert ctl.requests("sendgrid") == 5 + 6
    r.delete(key)


def test_429_is_waited_out_without_spending_an_attempt(sandbox, db, worker_factory):
    settings = sandbox.settings.model_copy(update={"email_provider": "sendgrid"})
    ctl = sandbox.control
    ctl.faults("sendgrid", rate_limit=2, retry_after=1)
    ds = [delivery("email") for _ in range(3)]
    _produce(settings, "email", ds)
    # a 2 s batch window: the three records reach the agent as one batch, one request, even on a loaded machine
    worker_factory(settings, agents=["deliver-email"], extra_env={"HERALD_BATCH_WITHIN": "2", "HERALD_INTERACTIVE_WITHIN": "2"})
    wait_for(lambda: set(_ledger(db, ds).values()) == {"sent"} and len(_ledger(db, ds)) == 3, 120, message="sent")
    assert ctl.requests("sendgrid") == 3   # 429, 429, then accepted: the same request again, not a retry tier
    rows = db.execute("SELECT attempts FROM delivery_state WHERE delivery_id = ANY(%s)", ([d["delivery_id"] for d in ds],))
    assert {a for (a,) in rows} == {1}     # claimed once: no attempt spent
    assert len(ctl.inbox("email")) == 3


def test_unregistered_token_deactivates_at_once_and_five_temporary_failures_too(sandbox, db, worker_factory):
    settings = sandbox.settings
    ctl = sandbox.control
    uid = f"u-{uuid.uuid4().hex[:8]}"
    gone, flaky, fine = (f"tok-{n}-{uuid.uuid4().hex}" for n in ("gone", "flaky", "fine"))
    db.execute("INSERT INTO users (id) VALUES (%s)", (uid,))
    for t in (gone, flaky, fine):
        db.execute("INSERT INTO devices (user_id, token, platform) VALUES (%s, %s, 'android')", (uid, t))
    env = {"HERALD_DELIVER__BREAKER_FAILURES": "1000"}
    worker_factory(settings, agents=["deliver-push"], extra_env=env)
    ctl.faults("fcm", unregistered_tokens=[gone])
    first = [delivery("push", address=gone, user_id=uid), delivery("push", address=fine, user_id=uid)]
    _produce(settings, "push", first)
    # both outcomes in the ledger before the faults change (the two may travel in separate batches)
    wait_for(lambda: sorted(_ledger(db, first).values()) == ["failed", "sent"] and db.execute(
        "SELECT active FROM devices WHERE token=%s", (gone,)).fetchone()[0] is False, 120, message="gone deactivated, fine sent")
    assert db.execute("SELECT deactivated_reason FROM devices WHERE token=%s", (gone,)).fetchone()[0] == "unregistered"
    # temporary failures: four leave the device active, the fifth in a row deactivates it
    ctl.faults("fcm", error_rate=1.0, error_status=503)
    for n in range(1, 6):
        _produce(settings, "push", [delivery("push", address=flaky, user_id=uid)])
        wait_for(lambda n=n: db.execute("SELECT temp_failures FROM devices WHERE token=%s", (flaky,)).fetchone()[0] == n
                 or not db.execute("SELECT active FROM devices WHERE token=%s", (flaky,)).fetchone()[0], 120,
                 message=f"{n} temporary failures counted")
        active = db.execute("SELECT active FROM devices WHERE token=%s", (flaky,)).fetchone()[0]
        assert active is (n < 5)
    assert db.execute("SELECT deactivated_reason FROM devices WHERE token=%s", (flaky,)).fetchone()[0] == "temporary_failures"
    assert db.execute("SELECT active, temp_failures FROM devices WHERE token=%s", (fine,)).fetchone() == (True, 0)
