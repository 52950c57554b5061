"""One vocabulary: the Avro enums, the SQL checks and the typed records agree with schemas.vocabulary."""
from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from schemas.catalog import load_catalog
from schemas.codec import Codec
from schemas.records import LOCAL_FIELDS, Delivery, Receipt, StatusChange
from schemas.vocabulary import CHANNELS, RANK, Channel, Lane, LedgerStatus, ReceiptStatus, Status

ROOT = Path(__file__).resolve().parents[2]


def _enum(schema: dict, name: str) -> list[str]:
    for f in schema["fields"]:
        t = f["type"]
        if f["name"] == name:
            t = t["items"] if isinstance(t, dict) and t.get("type") == "array" else t
            return t["symbols"]
    raise KeyError(name)


def test_avro_enums_are_the_vocabulary():
    cat = load_catalog()
    assert set(_enum(cat.latest("Delivery").raw, "channel")) == set(Channel)
    assert set(_enum(cat.latest("Delivery").raw, "lane")) == set(Lane)
    assert set(_enum(cat.latest("NotificationRequested").raw, "channels")) == set(Channel)
    assert set(_enum(cat.latest("StatusChange").raw, "status")) == set(Status)
    assert set(_enum(cat.latest("Receipt").raw, "status")) == set(ReceiptStatus)


def test_every_status_has_a_rank_and_channels_are_declared_once():
    assert set(RANK) == set(Status)
    assert CHANNELS == (Channel.EMAIL, Channel.SMS, Channel.PUSH)


def test_the_ledger_check_is_the_vocabulary():
    sql = "\n".join(p.read_text() for p in sorted((ROOT / "infra" / "migrations").glob("*.sql")))
    check = re.search(r"status\s+text NOT NULL CHECK \(status IN \(([^)]*)\)\)", sql)
    assert check and {v.strip(" '") for v in check[1].split(",")} == set(LedgerStatus)


def test_typed_records_match_their_avro_fields_and_round_trip():
    cat = load_catalog()
    for cls, name in ((Delivery, "Delivery"), (StatusChange, "StatusChange"), (Receipt, "Receipt")):
        local = LOCAL_FIELDS if cls is Delivery else frozenset()   # kept beside the record, never encoded
        assert {f.name for f in fields(cls)} - local == {f["name"] for f in cat.latest(name).raw["fields"]}, name
    codec = Codec()
    d = Delivery("d1", "n1", "e1", "OrderPlaced", "u1", Channel.EMAIL, "transactional", "a@example.test", "t", "hi",
                 occurred_at=1_700_000_000_000, push_data={"k": "v"})
    back = Delivery.from_avro(codec.decode(codec.encode("Delivery", d.to_avro())).record)
    assert back.channel is Channel.EMAIL and back.lane is Lane.INTERACTIVE and back.push_data == {"k": "v"}
    assert back.to_avro() | {"occurred_at": 0} == d.to_avro() | {"occurred_at": 0}
    s = StatusChange("n1", "e1", "u1", Status.SENT, at=1_700_000_000_000, channel=Channel.SMS)
    assert StatusChange.from_avro(codec.decode(codec.encode("StatusChange", s.to_avro())).record).status is Status.SENT


def test_the_templates_channel_check_is_the_vocabulary():
    """A new Channel member fails here until the migrations' CHECK names it too (with the Avro enums above)."""
    sql = "\n".join(p.read_text() for p in sorted((ROOT / "infra" / "migrations").glob("*.sql")))
    checks = re.findall(r"channel\s+text NOT NULL CHECK \(channel IN \(([^)]*)\)\)", sql)
    assert checks and all({v.strip(" '") for v in c.split(",")} == set(Channel) for c in checks)
