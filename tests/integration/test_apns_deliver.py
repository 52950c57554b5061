"""APNs in the pipeline: a worker subprocess, the real stack and the sandbox's APNs (issue 19).

A user with an iPhone (an APNs device token) and an Android phone (an FCM token) gets each push once; an APNs
410 or BadDeviceToken deactivates the device at once; the devices migration gives old rows a platform.
"""
from __future__ import annotations

import time
import uuid
from importlib import resources

import pytest

from infra.kafka.producer import Producer
from infra.tools.seed import seed_templates
from infra.topics import deliver_topic
from producers.sdk import Emitter
from schemas.codec import Codec
from tests.support.sandbox import delivery, delivery_record, sandbox  # noqa: F401 - fixture
from tests.support.worker import wait_for

pytestmark = pytest.mark.integration


def apns_token() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex


def fcm_token() -> str:
    return f"{uuid.uuid4().hex[:22]}:APA91b{uuid.uuid4().hex * 4}"


def _ledger(db, ds):
    return dict(db.execute("SELECT delivery_id, status FROM delivery_state WHERE delivery_id = ANY(%s)",
                           ([d["delivery_id"] for d in ds],)).fetchall())


def _device(db, token):
    return db.execute("SELECT active, deactivated_reason FROM devices WHERE token = %s", (token,)).fetchone()


def test_a_user_with_an_iphone_and_an_android_phone_gets_both_pushes_once_each(sandbox, db, worker_factory):
    settings = sandbox.settings
    seed_templates(db)
    uid = f"u-{uuid.uuid4().hex[:8]}"
    iphone, android = apns_token(), fcm_token()
    db.execute("INSERT INTO users (id, locale, time_zone) VALUES (%s, 'en', 'UTC')", (uid,))
    db.execute("INSERT INTO devices (user_id, token, platform) VALUES (%s, %s, 'ios'), (%s, %s, 'android')",
               (uid, iphone, uid, android))
    worker_factory(settings, agents=["route", "deliver-push", "status"])
    order = {"user_id": uid, "order_id": f"o-{uuid.uuid4().hex[:6]}", "currency": "EUR", "total_cents": 1495,
             "items": [{"sku": "MUG", "name": "Herald mug", "quantity": 1, "unit_price_cents": 1495}]}
    with Emitter(settings.kafka_bootstrap, topic_prefix=settings.topic_prefix) as sdk:
        event_id = sdk.emit("OrderPlaced", order)

    wait_for(lambda: db.execute("SELECT count(*) FROM delivery_state WHERE notification_id = %s AND channel = 'push' "
                                "AND status = 'sent'", (event_id,)).fetchone()[0] == 2, 120, message="both pushes sent")
    time.sleep(1.0)   # anything sent twice would be in the inbox by now
    inbox = sandbox.control.inbox("push")
    assert sorted((m["to"], m["provider"]) for m in inbox) == sorted([(iphone, "apns"), (android, "fcm")])
    by_provider = {m["provider"]: m for m in inbox}
    assert by_provider["apns"]["title"] == by_provider["fcm"]["title"] == f"Order {order['order_id']} confirmed"
    assert by_provider["apns"]["topic"] == settings.apns.topic
    assert int(by_provider["apns"]["expiration"]) > time.time()   # the route's time-to-live (a day)
    addresses = {r[0] for r in db.execute(
        "SELECT address FROM delivery_state WHERE notification_id = %s AND channel = 'push'", (event_id,))}
    assert addresses == {iphone, android}
    assert _device(db, iphone) == (True, None) and _device(db, android) == (True, None)


def test_apns_410_and_bad_device_token_deactivate_the_device_at_once(sandbox, db, worker_factory):
    settings = sandbox.settings
    ctl = sandbox.control
    uid = f"u-{uuid.uuid4().hex[:8]}"
    gone, bad, fine = apns_token(), apns_token(), apns_token()
    db.execute("INSERT INTO users (id) VALUES (%s)", (uid,))
    for t in (gone, bad, fine):
        db.execute("INSERT INTO devices (user_id, token, platform) VALUES (%s, %s, 'ios')", (uid, t))
    ctl.faults("apns", unregistered_tokens=[gone], bad_tokens=[bad])
    ds = [delivery("push", address=t, user_id=uid) for t in (gone, bad, fine)]
    worker_factory(settings, agents=["deliver-push"], extra_env={"HERALD_DELIVER__BREAKER_FAILURES": "1000"})
    Producer(settings).send_all_blocking([delivery_record(Codec(), deliver_topic(settings, "push"), d) for d in ds])
    wait_for(lambda: len(_ledger(db, ds)) == 3 and "claimed" not in _ledger(db, ds).values()
             and _device(db, gone)[0] is False and _device(db, bad)[0] is False, 120,
             message="the 410 and the BadDeviceToken devices deactivated")
    ledger = _ledger(db, ds)
    assert [ledger[d["delivery_id"]] for d in ds] == ["failed", "failed", "sent"]
    assert _device(db, gone) == (False, "unregistered") and _device(db, bad) == (False, "unregistered")
    assert _device(db, fine) == (True, None)
    assert [m["to"] for m in ctl.inbox("push")] == [fine]
    assert ctl.requests("apns") == 3    # permanent: no retry tier sends them again


def test_the_platform_migration_gives_old_rows_a_platform_and_runs_twice(db):
    sql = resources.files("infra").joinpath("migrations/007_device_platform.sql").read_text()
    uid = f"u-{uuid.uuid4().hex[:8]}"
    ios_as_android, fcm = apns_token(), fcm_token()
    db.execute("INSERT INTO users (id) VALUES (%s)", (uid,))
    db.execute("INSERT INTO devices (user_id, token, platform) VALUES (%s, %s, 'android')", (uid, ios_as_android))
    db.execute("INSERT INTO devices (user_id, token) VALUES (%s, %s)", (uid, fcm))   # no platform given: android
    db.execute(sql)
    db.execute(sql)
    rows = dict(db.execute("SELECT token, platform FROM devices WHERE user_id = %s", (uid,)).fetchall())
    assert rows == {ios_as_android: "ios", fcm: "android"}
    with pytest.raises(Exception, match="check"):
        db.execute("INSERT INTO devices (user_id, token, platform) VALUES (%s, 'x', 'windows')", (uid,))
