"""Herald's own records as types: ``Delivery``, ``StatusChange``, ``Receipt``.

Converted to and from their Avro form here and nowhere else (``to_avro`` / ``from_avro``); the
codec encodes and decodes the dicts. Times are epoch milliseconds or aware datetimes (fastavro
reads ``timestamp-millis`` as datetimes and writes either).
"""
from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from schemas.vocabulary import Channel, Lane, ReceiptStatus, Status

Time = int | datetime


# the last datetime converted and its milliseconds: a chunk's thousand deliveries share their datetimes (one
# object each, decoded once), and ``timestamp()`` per delivery was ~4 % of a bulk deliver agent's CPU. One tuple,
# swapped whole: a thread reading it meanwhile sees the old pair or the new one, never half of each.
_LAST_MS: tuple[datetime | None, int] = (None, 0)


def epoch_ms(value: Time) -> int:
    global _LAST_MS
    if isinstance(value, int):
        return value
    last = _LAST_MS
    if value is last[0]:   # datetimes are immutable: the same object, the same instant
        return last[1]
    ms = int(value.timestamp() * 1000)
    _LAST_MS = (value, ms)
    return ms


@dataclass(slots=True)
class Delivery:
    """One rendered message for one channel and one address, ready for a provider."""

    delivery_id: str
    notification_id: str
    event_id: str
    event_type: str
    user_id: str
    channel: Channel
    category: str
    address: str
    template: str
    text: str
    occurred_at: Time
    lane: Lane = Lane.INTERACTIVE
    template_version: int = 0
    locale: str = "default"
    subject: str | None = None
    html: str | None = None
    push_title: str | None = None
    push_data: dict[str, str] = field(default_factory=dict)
    sms_segments: int = 0
    campaign_id: str | None = None
    expires_at: Time | None = None
    attempt: int = 0
    first_failure_at: Time | None = None
    last_error: str | None = None
    cancellation_key: str | None = None   # v2: a cancel of this key ends it 'canceled' while it waits
    # not in the Delivery record (``LOCAL_FIELDS``): the campaign parts this delivery's subject/text/html were filled
    # from (one object for its chunk) and its own slot values, so a provider can send the chunk's parts once
    shared: SharedContent | None = field(default=None, compare=False, repr=False)
    slot_values: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def to_avro(self) -> dict[str, Any]:
        return dict(zip(_DELIVERY_FIELDS, _DELIVERY_VALUES(self), strict=True))

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> Delivery:
        d = cls(**{name: record[name] for name in _DELIVERY_FIELDS if name in record})
        d.channel, d.lane = Channel(d.channel), Lane(d.lane)
        return d


@dataclass(frozen=True, slots=True)
class SharedContent:
    """A campaign template's parts rendered once for a chunk (DeliveryChunk v2): per part, None (each delivery carries
    it whole) or the n+1 literal pieces around its n per-recipient slots. A delivery's part is its pieces joined with
    that delivery's slot values (``fill``), byte for byte what rendering it gave."""

    subject: tuple[str, ...] | None = None
    text: tuple[str, ...] | None = None
    html: tuple[str, ...] | None = None
    # worked out once (every recipient of the chunk asks): the pieces' UTF-8 bytes with a few per piece (an upper
    # bound of what they add to a chunk), and whether they are all ASCII
    nbytes: int = field(init=False, compare=False, repr=False)
    ascii: bool = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        pieces = [p for part in self.parts() if part for p in part]
        object.__setattr__(self, "nbytes", sum(len(p.encode()) + 4 for p in pieces))
        object.__setattr__(self, "ascii", all(p.isascii() for p in pieces))

    def parts(self) -> tuple[tuple[str, ...] | None, ...]:
        return self.subject, self.text, self.html

    def size(self) -> int:
        return self.nbytes

    def fill(self, values: tuple[str, ...] | list[str]) -> tuple[str | None, str | None, str | None]:
        """(subject, text, html) of one delivery from its slot values (those of subject, then text, then html);
        None for a part this content does not hold."""
        parts = self.parts()
        if len(values) != (n := sum(len(p) - 1 for p in parts if p is not None)):
            raise ValueError(f"{len(values)} slot values for {n} slots")
        out: list[str | None] = []
        at = 0
        for pieces in parts:
            if pieces is None:
                out.append(None)
                continue
            n = len(pieces) - 1
            if n == 0:
                out.append(pieces[0])
                continue
            joined = [""] * (2 * n + 1)
            joined[0::2] = pieces
            joined[1::2] = values[at:at + n]
            at += n
            out.append("".join(joined))
        return out[0], out[1], out[2]


def unshare(d: Delivery) -> None:
    """Fill ``d``'s subject/text/html from its shared content and drop the content: a Delivery that stands alone."""
    if d.shared is None:
        return
    subject, text, html = d.shared.fill(d.slot_values)
    if subject is not None:
        d.subject = subject
    if text is not None:
        d.text = text
    if html is not None:
        d.html = html
    d.shared, d.slot_values = None, ()


# a DeliveryChunk (the bulk lane): what its deliveries share once, the rest per item; the lane is always bulk and
# every item is on its first attempt
CHUNK_SHARED = ("event_type", "channel", "category", "template", "campaign_id", "occurred_at", "expires_at")
CHUNK_ITEM = ("delivery_id", "notification_id", "event_id", "user_id", "address", "template_version", "locale",
              "subject", "text", "html", "push_title", "push_data", "sms_segments")
_CHUNK_SHARED_VALUES = operator.attrgetter(*CHUNK_SHARED)
_CHUNK_ITEM_VALUES = operator.attrgetter(*CHUNK_ITEM)
_ITEM_OF = operator.itemgetter(*CHUNK_ITEM)


def chunk_key(d: Delivery) -> tuple:
    """Deliveries with equal keys can share one DeliveryChunk."""
    return _CHUNK_SHARED_VALUES(d)


def chunk_record(chunk_id: str, deliveries: list[Delivery]) -> dict[str, Any]:
    """The DeliveryChunk (v3) of deliveries that share ``chunk_key`` (first attempts of the bulk lane): the items as
    columns and, when the first has shared content, that content (every delivery's: the caller groups by it); then
    the items carry their slot values instead of the shared parts."""
    common = dict(zip(CHUNK_SHARED, _CHUNK_SHARED_VALUES(deliveries[0]), strict=True))
    columns = {name: list(values) for name, values in zip(
        CHUNK_ITEM, zip(*map(_CHUNK_ITEM_VALUES, deliveries), strict=True), strict=True)}
    content = deliveries[0].shared
    if content is None:
        return {"chunk_id": chunk_id, **common, "shared": None, "slots": [], "items": [], "columns": columns}
    for d in deliveries:
        if d.shared is not content:
            raise ValueError(f"delivery {d.delivery_id} does not share the chunk's content")
    for name, pieces in zip(("subject", "text", "html"), content.parts(), strict=True):
        if pieces is not None:   # the part travels as the content's pieces and each item's slot values
            columns[name] = [""] * len(deliveries) if name == "text" else [None] * len(deliveries)
    return {"chunk_id": chunk_id, **common, "items": [], "columns": columns,
            "shared": {"subject": _listed(content.subject), "text": _listed(content.text), "html": _listed(content.html)},
            "slots": [list(d.slot_values) for d in deliveries]}


def _listed(pieces: tuple[str, ...] | None) -> list[str] | None:
    return None if pieces is None else list(pieces)


def chunk_deliveries(record: dict[str, Any]) -> list[Delivery]:
    """The Deliveries of a decoded DeliveryChunk (v2's shared parts filled in: each is whole, as v1 carried it)."""
    event_type, channel, category, template, campaign_id, occurred_at, expires_at = (record[n] for n in CHUNK_SHARED)
    channel = Channel(channel)
    rows, n = _rows(record)
    found = record.get("shared")
    content = None if found is None else SharedContent(
        *(None if found[part] is None else tuple(found[part]) for part in ("subject", "text", "html")))
    slots: list[list[str]] = record["slots"] if content is not None else [[]] * n
    if len(slots) != n:
        raise ValueError(f"slot values for {len(slots)} of {n} items")
    # what ``content.fill`` does, with the layout worked out once for the chunk: (part, pieces, first, end) per part
    layout: list[tuple[int, tuple[str, ...], int, int]] = []
    at = 0
    for part, pieces in enumerate(content.parts() if content is not None else ()):
        if pieces is not None:
            layout.append((part, pieces, at, at + len(pieces) - 1))
            at += len(pieces) - 1
    out = []
    # positional and field by field (the order of CHUNK_ITEM, then Delivery's): a thousand recipients' keyword
    # calls, or a dict each, cost twice as much
    for (did, nid, eid, uid, address, version, locale, subject, text, html, push_title, push_data, segments), values \
            in zip(rows, slots, strict=True):
        if layout:
            if len(values) != at:
                raise ValueError(f"{len(values)} slot values for {at} slots")
            parts = [subject, text, html]
            for part, pieces, first, last in layout:
                if first == last:
                    parts[part] = pieces[0]
                    continue
                joined = [""] * (2 * (last - first) + 1)
                joined[0::2] = pieces
                joined[1::2] = values[first:last]
                parts[part] = "".join(joined)
            subject, text, html = parts
        # a chunk's deliveries are first attempts of the bulk lane, without a cancellation key
        out.append(Delivery(did, nid, eid, event_type, uid, channel, category, address, template, text, occurred_at,
                            Lane.BULK, version, locale, subject, html, push_title, push_data, segments, campaign_id,
                            expires_at, 0, None, None, None, content, tuple(values)))
    return out


def _rows(record: dict[str, Any]) -> tuple[Iterable[tuple[Any, ...]], int]:
    """A decoded chunk's items as tuples in CHUNK_ITEM's order, and how many: from its columns (v3), else its items
    (v1, v2)."""
    columns = record.get("columns")
    if columns is None:
        return map(_ITEM_OF, record["items"]), len(record["items"])
    if record["items"]:
        raise ValueError(f"{len(record['items'])} items beside columns: a chunk carries one or the other")
    if len(lengths := {len(columns[name]) for name in CHUNK_ITEM}) > 1:
        raise ValueError(f"columns of unequal lengths {sorted(lengths)}")
    return zip(*(columns[name] for name in CHUNK_ITEM), strict=True), len(columns["delivery_id"])


@dataclass(slots=True)
class StatusChange:
    """A notification moved to a status (written to PostgreSQL by the status agent)."""

    notification_id: str
    event_id: str
    user_id: str
    status: Status
    at: Time
    event_type: str = ""
    channel: Channel | None = None
    reason: str | None = None
    delivery_id: str | None = None
    provider_message_id: str | None = None
    template: str | None = None
    category: str | None = None
    campaign_id: str | None = None
    trace_id: str | None = None   # the trace id of the record the change was made for (v3; None from older writers)

    def to_avro(self) -> dict[str, Any]:
        return dict(zip(_STATUS_FIELDS, _STATUS_VALUES(self), strict=True))

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> StatusChange:
        s = cls(**{name: record[name] for name in _STATUS_FIELDS if name in record})
        s.status = Status(s.status)
        if s.channel is not None:
            s.channel = Channel(s.channel)
        return s


@dataclass(slots=True)
class Receipt:
    """A provider's report on a message it accepted (from its webhooks)."""

    provider: str
    provider_message_id: str
    status: ReceiptStatus
    at: Time
    hard_bounce: bool = False
    reason: str | None = None
    address: str | None = None
    delivery_id: str | None = None

    def to_avro(self) -> dict[str, Any]:
        return dict(zip(_RECEIPT_FIELDS, _RECEIPT_VALUES(self), strict=True))

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> Receipt:
        r = cls(**{name: record[name] for name in _RECEIPT_FIELDS if name in record})
        r.status = ReceiptStatus(r.status)
        return r


LOCAL_FIELDS = frozenset({"shared", "slot_values"})   # Delivery attributes no record carries
_DELIVERY_FIELDS = tuple(f.name for f in fields(Delivery) if f.name not in LOCAL_FIELDS)
_STATUS_FIELDS = tuple(f.name for f in fields(StatusChange))
_RECEIPT_FIELDS = tuple(f.name for f in fields(Receipt))
# one C-level call per record instead of a getattr per field (to_avro runs twice per routed notification)
_DELIVERY_VALUES = operator.attrgetter(*_DELIVERY_FIELDS)
_STATUS_VALUES = operator.attrgetter(*_STATUS_FIELDS)
_RECEIPT_VALUES = operator.attrgetter(*_RECEIPT_FIELDS)
