"""Scenarios of the status and receipts handlers, each run over a ``World`` (twins or real stores).

Each returns nothing and asserts; the unit tests run them over ``MemoryWorld``, the integration
tests over both worlds.
"""
from __future__ import annotations

from dataclasses import replace
from itertools import permutations

from infra.kafka.records import ATTEMPT
from schemas.records import StatusChange
from schemas.vocabulary import Channel, ReceiptStatus, Status
from streams.stages.retry import DUE_HEADER, ORIGIN_HEADER
from streams.stages.status_change import encode_status
from tests.support.status_world import (
    Sent,
    World,
    as_input,
    change,
    receipt,
    receipt_input,
    receipts_handler,
    status_handler,
    status_input,
    unique,
    unique_phone,
)

ORDERED = (Status.QUEUED, Status.SENT, Status.DELIVERED, Status.OPENED)


async def changes_in_any_order_end_at_the_highest_rank(world: World) -> None:
    """One batch holding every order of four changes (one notification per order)."""
    orders = {unique("n"): order for order in permutations(ORDERED)}
    batch = [change(nid, status, at=1_000 + i) for nid, order in orders.items() for i, status in enumerate(order)]
    assert await status_handler(world).handle(status_input(world, batch)) == []
    for nid, order in orders.items():
        assert await world.statuses.status_of(nid) == Status.OPENED, order
        assert await world.statuses.history_of(nid) == list(order)


async def changes_in_any_order_across_batches_end_at_the_highest_rank(world: World) -> None:
    """Every change in a batch of its own: only the store's guard can keep the highest."""
    handler = status_handler(world)
    orders = {unique("n"): order for order in permutations(ORDERED)}
    for i in range(len(ORDERED)):
        await handler.handle(status_input(world, [change(nid, order[i]) for nid, order in orders.items()]))
    for nid, order in orders.items():
        assert await world.statuses.status_of(nid) == Status.OPENED, order
        assert await world.statuses.history_of(nid) == list(order)


async def a_lower_status_in_a_later_batch_does_not_move_it_backwards(world: World) -> None:
    handler = status_handler(world)
    nid, tie = unique("n"), unique("n")
    await handler.handle(status_input(world, [change(nid, Status.DELIVERED, 2_000), change(tie, Status.SCHEDULED)]))
    # the later batch's own winner (sent) ranks below the stored "delivered"; deferred ties with scheduled
    await handler.handle(status_input(world, [change(nid, Status.SENT, 3_000), change(nid, Status.QUEUED, 4_000),
                                              change(tie, Status.DEFERRED)]))
    assert await world.statuses.status_of(nid) == Status.DELIVERED
    assert await world.statuses.history_of(nid) == [Status.DELIVERED, Status.SENT, Status.QUEUED]
    assert await world.statuses.status_of(tie) == Status.SCHEDULED  # equal rank: the history only
    assert await world.statuses.history_of(tie) == [Status.SCHEDULED, Status.DEFERRED]
    # a higher one still moves it on
    await handler.handle(status_input(world, [change(nid, Status.CLICKED, 5_000)]))
    assert await world.statuses.status_of(nid) == Status.CLICKED


async def a_delivery_said_sent_again_adds_no_second_history_row(world: World) -> None:
    """A replayed dead letter of a delivery already sent, or a batch read again after an outage, says 'sent' again:
    the notification keeps its status and its history keeps one 'sent' per delivery."""
    handler = status_handler(world)
    nid = unique("n")
    sent = replace(change(nid, Status.SENT, 2_000), delivery_id=unique("d"))
    await handler.handle(status_input(world, [change(nid, Status.QUEUED), sent]))
    await handler.handle(status_input(world, [sent]))
    await handler.handle(status_input(world, [sent, sent]))
    assert await world.statuses.history_of(nid) == [Status.QUEUED, Status.SENT]
    # another delivery of the notification (a second address or device) has a 'sent' of its own
    await handler.handle(status_input(world, [replace(sent, delivery_id=unique("d"))]))
    assert await world.statuses.history_of(nid) == [Status.QUEUED, Status.SENT, Status.SENT]
    assert await world.statuses.status_of(nid) == Status.SENT


async def a_notification_keeps_the_first_trace_id_its_changes_name(world: World) -> None:
    """The trace id is stored with the notification: the first non-null one, in the batch and across batches
    (a receipt's later change, made under the webhook request's trace, does not replace it)."""
    handler = status_handler(world)
    nid, late = unique("n"), unique("n")
    await handler.handle(status_input(world, [
        change(nid, Status.QUEUED),                                    # an older writer: no trace id
        replace(change(nid, Status.SENT, 2_000), trace_id="trace-first"),
        replace(change(nid, Status.SENT, 2_001), trace_id="trace-second"),
        change(late, Status.QUEUED),
    ]))
    assert await world.statuses.trace_of(nid) == "trace-first"
    assert await world.statuses.trace_of(late) is None
    # later batches: a higher status moves the notification on and keeps its trace id, or brings the first one
    await handler.handle(status_input(world, [replace(change(nid, Status.DELIVERED, 3_000), trace_id="trace-webhook"),
                                              replace(change(late, Status.SENT, 3_000), trace_id="trace-late")]))
    assert await world.statuses.status_of(nid) == Status.DELIVERED
    assert await world.statuses.trace_of(nid) == "trace-first"
    assert await world.statuses.trace_of(late) == "trace-late"


async def a_status_record_without_a_trace_id_takes_its_headers(world: World) -> None:
    """``encode_status`` puts the record's trace id (the Kafka header) in the StatusChange, where it is stored."""
    nid = unique("n")
    record = encode_status(world.codec, world.settings.topic("status"), change(nid, Status.QUEUED), "trace-header")
    assert StatusChange.from_avro(world.codec.decode(record.value).record).trace_id == "trace-header"
    await status_handler(world).handle(as_input([record]))
    assert await world.statuses.trace_of(nid) == "trace-header"


def _decoded_status_changes(world: World, records: list) -> list[StatusChange]:
    status_topic = world.settings.topic("status")
    return [StatusChange.from_avro(world.codec.decode(r.value).record) for r in records if r.topic == status_topic]


async def a_receipt_for_a_known_delivery_updates_its_status(world: World) -> None:
    sent = Sent(unique("n"), unique("u"), "one@example.com", unique("SG"))
    await world.seed(sent)
    out = await receipts_handler(world).handle(receipt_input(world, [receipt(sent, ReceiptStatus.DELIVERED)]))
    assert [r.topic for r in out] == [world.settings.topic("status")]
    [status] = _decoded_status_changes(world, out)
    assert (status.notification_id, status.status, status.delivery_id, status.provider_message_id, status.channel) == (
        sent.notification_id, Status.DELIVERED, sent.delivery_id, sent.provider_message_id, Channel.EMAIL)
    assert out[0].key == sent.notification_id.encode()
    await status_handler(world).handle(as_input(out))
    assert await world.statuses.status_of(sent.notification_id) == Status.DELIVERED
    assert await world.statuses.history_of(sent.notification_id) == [Status.SENT, Status.DELIVERED]


async def a_hard_bounce_marks_the_address_and_drops_the_cached_recipient(world: World) -> None:
    hard = Sent(unique("n"), unique("u"), f"{unique('Two')}@Example.com", unique("SG"))
    soft = Sent(unique("n"), unique("u"), f"{unique('three')}@example.com", unique("SG"))
    sms = Sent(unique("n"), unique("u"), unique_phone(), unique("SM"), Channel.SMS)
    for sent in (hard, soft, sms):
        await world.seed(sent)
        await world.cache_recipient(sent.user_id)
    bounce = receipt(hard, ReceiptStatus.BOUNCED, hard=True, reason="550 5.1.1")
    bounce.address = hard.address.lower()  # SendGrid reports the address as it lower-cased it
    out = await receipts_handler(world).handle(receipt_input(world, [
        bounce,
        receipt(soft, ReceiptStatus.BOUNCED, hard=False, reason="mailbox full"),
        receipt(sms, ReceiptStatus.BOUNCED, hard=True, reason="undelivered: error 30005"),
    ]))
    assert [c.reason for c in _decoded_status_changes(world, out)] == [
        "hard bounce: 550 5.1.1", "soft bounce: mailbox full", "hard bounce: undelivered: error 30005"]
    assert await world.undeliverable(hard.user_id, Channel.EMAIL)
    assert not await world.recipient_cached(hard.user_id)
    assert await world.undeliverable(sms.user_id, Channel.SMS)
    assert not await world.recipient_cached(sms.user_id)
    assert not await world.undeliverable(soft.user_id, Channel.EMAIL)
    assert await world.recipient_cached(soft.user_id)
    await status_handler(world).handle(as_input(out))
    assert await world.statuses.status_of(hard.notification_id) == Status.BOUNCED


async def a_receipt_for_an_unknown_message_id_climbs_the_ladder_then_is_dead_lettered(world: World) -> None:
    """A receipt can arrive before its delivery's ledger mark or status row (common under campaign load): it goes to
    the first retry tier, back to the receipts topic when due, and is dead-lettered only after the last tier; no status
    change meanwhile, and the rest of the batch carries on."""
    known = Sent(unique("n"), unique("u"), "known@example.com", unique("SG"))
    await world.seed(known)
    stray = receipt(known, ReceiptStatus.DELIVERED, provider_message_id=unique("SGUNKNOWN"))
    batch = receipt_input(world, [stray, receipt(known, ReceiptStatus.OPENED)])
    out = await receipts_handler(world).handle(batch)
    assert [c.notification_id for c in _decoded_status_changes(world, out)] == [known.notification_id]
    [later] = [r for r in out if r.topic != world.settings.topic("status")]
    headers = dict(later.headers)
    assert later.topic == world.settings.retry_topics[0] and (later.key, later.value) == (batch[0].key, batch[0].value)
    assert headers[ORIGIN_HEADER] == world.settings.topic("receipts").encode() and headers[ATTEMPT] == b"1"
    assert int(headers[DUE_HEADER]) > 0
    # back from each tier in turn: the next tier, then the dead letter with its reason
    tiers = len(world.settings.retry_topics)
    for tries in range(1, tiers + 1):
        again = as_input([later])
        out = await receipts_handler(world).handle(again)
        [later] = out
        if tries < tiers:
            assert later.topic == world.settings.retry_topics[tries] and dict(later.headers)[ATTEMPT] == str(tries + 1).encode()
    dead = later
    headers = dict(dead.headers)
    assert dead.topic == world.settings.topic("dlq")
    assert (headers["herald-dlq-stage"], headers["herald-dlq-error-class"]) == (b"status", b"unknown_provider_message")
    assert (dead.key, dead.value) == (batch[0].key, batch[0].value)
    assert world.metrics.registry.get_sample_value(
        "herald_dead_letters_total", {"stage": "status", "reason": "unknown_provider_message"}) == 1
