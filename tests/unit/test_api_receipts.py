"""The receipts stage (pure): matching receipts to deliveries, status changes, undeliverable addresses."""
from __future__ import annotations

import pytest

from schemas.records import Receipt
from schemas.vocabulary import Channel, ReceiptStatus
from streams.stages.receipts import DeliveryRow, plan


def row(did="d1", nid="n1", channel="email", address="A@Example.com", pmid="m1", user="u1"):
    return DeliveryRow(did, nid, Channel(channel), address, pmid, user, "e-" + nid if user else None,
                       "OrderPlaced" if user else None)


def receipt(status="delivered", pmid="m1", hard=False, address=None, delivery_id=None, reason=None):
    return Receipt(provider="sendgrid", provider_message_id=pmid, status=ReceiptStatus(status), hard_bounce=hard,
                   reason=reason, at=5_000, address=address, delivery_id=delivery_id)


@pytest.mark.parametrize(
    ("rc", "rows", "expect"),
    [
        # one delivery under the id: it
        (receipt(), [row()], "d1"),
        # several (one SendGrid request, many personalizations): the address picks, case-insensitively for email
        (receipt(address="b@example.com"), [row(), row("d2", "n2", address="B@example.com")], "d2"),
        # the echoed delivery id wins over everything
        (receipt(delivery_id="d2", address="a@example.com"), [row(), row("d2", "n2", address="b@example.com")], "d2"),
        # several and no address: ambiguous
        (receipt(), [row(), row("d2", "n2")], "ambiguous_provider_message"),
        # none: unknown
        (receipt(pmid="zz"), [], "unknown_provider_message"),
        # echoed delivery id not under that message id
        (receipt(delivery_id="d9"), [row()], "unknown_provider_message"),
        # the notification's status row is not written yet: cannot name the user
        (receipt(), [row(user=None)], "notification_not_found"),
    ],
)
def test_matching(rc, rows, expect):
    p = plan([rc], {"m1": rows} if rows else {})
    if expect.startswith("d"):
        [(i, change)] = p.changes
        assert (i, change.delivery_id) == (0, expect)
        assert not p.unmatched
    else:
        assert not p.changes
        assert [(u.index, u.error_class) for u in p.unmatched] == [(0, expect)]


def test_hard_bounce_marks_the_sent_address_and_soft_does_not():
    rows = {"m1": [row()], "m2": [row("d2", "n2", "sms", "+436601234567", "m2")], "m3": [row("d3", "n3", address="c@x.io", pmid="m3")]}
    p = plan([receipt("bounced", "m1", hard=True, reason="550"), receipt("bounced", "m2", hard=True),
              receipt("bounced", "m3", hard=False, reason="mailbox full")], rows)
    assert p.undeliverable == {"email": {"a@example.com"}, "sms": {"+436601234567"}}
    assert [c.status for _, c in p.changes] == ["bounced"] * 3
    assert [c.reason for _, c in p.changes] == ["hard bounce: 550", "hard bounce", "soft bounce: mailbox full"]


def test_change_carries_what_the_status_agent_needs():
    [(_, c)] = plan([receipt("opened")], {"m1": [row()]}).changes
    assert (c.notification_id, c.event_id, c.user_id, c.status, c.channel, c.provider_message_id, c.at_ms) == (
        "n1", "e-n1", "u1", "opened", "email", "m1", 5_000)


def test_push_hard_bounce_does_not_mark_an_address():
    p = plan([receipt("bounced", hard=True)], {"m1": [row(channel="push", address="tok")]})
    assert p.undeliverable == {"email": set(), "sms": set()}
