"""Packing the bulk lane's deliveries into DeliveryChunk records: pure, no I/O."""
from __future__ import annotations

from dataclasses import dataclass

from schemas.records import Delivery

CHUNK_FRAME_BYTES = 4096   # a chunk's framing, shared fields, name and headers, kept free under the record limit
ITEM_OVERHEAD = 64         # an item's length prefixes, union indexes and numbers


@dataclass(frozen=True, slots=True)
class Group:
    start: int   # the group is the input's [start, end)
    end: int


def approx_size(d: Delivery) -> int:
    """An upper bound of the bytes one delivery adds to a chunk: its strings' UTF-8 lengths (an ASCII string's is
    its length, no encoding needed) and a fixed allowance for the rest. A delivery with shared content adds its
    slot values instead of the parts the chunk carries once (``SharedContent.size``, counted once per chunk)."""
    content = d.shared
    size = ITEM_OVERHEAD + 4 * len(d.slot_values)
    for value in (d.delivery_id, d.notification_id, d.event_id, d.user_id, d.address, d.locale, d.push_title,
                  d.subject if content is None or content.subject is None else None,
                  d.text if content is None or content.text is None else None,
                  d.html if content is None or content.html is None else None, *d.slot_values):
        if value:
            n = len(value)
            size += n if value.isascii() else len(value.encode())
    for k, v in d.push_data.items():
        size += len(k.encode()) + len(v.encode()) + 10
    return size


def pack_groups(sizes: list[int], max_count: int, max_bytes: int) -> list[Group]:
    """Consecutive groups of at most ``max_count`` items whose sizes add up to at most ``max_bytes``; an item too
    large on its own still gets a group (the route refused larger ones before)."""
    groups: list[Group] = []
    start, total = 0, 0
    for i, weight in enumerate(sizes):
        if i > start and (i - start >= max_count or total + weight > max_bytes):
            groups.append(Group(start, i))
            start, total = i, 0
        total += weight
    if sizes:
        groups.append(Group(start, len(sizes)))
    return groups
