"""The bulk lane's chunk records: packing is bounded, and a chunk's items with its shared fields are whole Deliveries."""
from __future__ import annotations

from dataclasses import fields

import pytest

from schemas.codec import Codec
from schemas.records import (
    CHUNK_ITEM,
    CHUNK_SHARED,
    LOCAL_FIELDS,
    Delivery,
    chunk_deliveries,
    chunk_key,
    chunk_record,
)
from schemas.vocabulary import Lane
from streams.stages.route.chunks import Group, approx_size, pack_groups
from tests.support.sandbox import delivery


def test_groups_respect_the_count_and_the_bytes_and_keep_the_order() -> None:
    assert pack_groups([10] * 5, max_count=2, max_bytes=1000) == [Group(0, 2), Group(2, 4), Group(4, 5)]
    assert pack_groups([400, 400, 400, 50], max_count=10, max_bytes=900) == [Group(0, 2), Group(2, 4)]
    assert pack_groups([5000, 10], max_count=10, max_bytes=900) == [Group(0, 1), Group(1, 2)]  # too big alone: alone
    assert pack_groups([], max_count=10, max_bytes=900) == []


def test_a_chunk_carries_every_field_of_a_first_bulk_attempt() -> None:
    # a delivery with a cancellation_key is never packed: the route stage sends it as a Delivery of its own
    carried = set(CHUNK_SHARED) | set(CHUNK_ITEM) | {"lane", "attempt", "first_failure_at", "last_error", "cancellation_key"}
    assert carried == {f.name for f in fields(Delivery)} - LOCAL_FIELDS


@pytest.mark.parametrize("channel", ["email", "sms", "push"])
def test_deliveries_come_back_from_a_chunk_as_they_went_in(channel: str) -> None:
    codec = Codec()
    ds = [Delivery.from_avro(delivery(channel, lane="bulk", campaign_id="c1", occurred_at=1_700_000_000_000,
                                      text=f"Hi {name}", user_id=f"u{i}", template_version=i + 2, locale=f"l{i}",
                                      **({"push_title": f"T {name}", "push_data": {"k": name}} if channel == "push" else {}),
                                      **({"sms_segments": i + 1} if channel == "sms" else {})))
          for i, name in enumerate(["Ada", "Zoë 🚀", "<b>"])]
    assert len({chunk_key(d) for d in ds}) == 1
    back = chunk_deliveries(codec.decode(codec.encode("DeliveryChunk", chunk_record("c1/0", ds))).record)
    # byte for byte the Delivery each was (times come back as datetimes, which encode as the same millis)
    assert [codec.encode("Delivery", b.to_avro()) for b in back] == [
        codec.encode("Delivery", {**d.to_avro(), "lane": Lane.BULK}) for d in ds]


def test_the_size_estimate_is_never_below_the_encoded_size() -> None:
    codec = Codec()
    for text in ("plain", "Zoë " * 300, "🚀" * 500):
        d = Delivery.from_avro(delivery(lane="bulk", text=text, html=f"<p>{text}</p>"))
        assert approx_size(d) >= len(codec.encode("DeliveryChunk", chunk_record("x", [d]))) - len(
            codec.encode("DeliveryChunk", {**chunk_record("x", [d]), "columns": {name: [] for name in CHUNK_ITEM}}))
