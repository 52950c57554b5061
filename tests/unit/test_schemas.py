"""Every schema round-trips; unknown bytes are a clear decode error; the catalog is backward compatible."""
from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastavro import schemaless_writer

from schemas.catalog import CatalogError, load_catalog
from schemas.codec import MAGIC, Codec, DecodeError
from schemas.compat import check_catalog, problems
from schemas.records import chunk_deliveries

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)

SAMPLES: dict[str, dict] = {
    "OrderPlaced": {
        "event_id": "e1", "occurred_at": NOW, "user_id": "u1", "order_id": "o-1", "currency": "EUR", "total_cents": 4990,
        "items": [{"sku": "A", "name": "Mug", "quantity": 2, "unit_price_cents": 1495}],
        "shipping_address": {"line1": "Ring 1", "city": "Wien", "postal_code": "1010", "country": "AT"},
    },
    "UserFollowed": {"event_id": "e2", "occurred_at": NOW, "user_id": "u1", "follower_id": "u2", "follower_name": "Ada",
                     "follower_avatar_url": "https://x/a.png"},
    "PasswordResetRequested": {"event_id": "e3", "occurred_at": NOW, "user_id": "u1", "reset_url": "https://r", "expires_in_minutes": 15},
    "BirthdayReached": {"event_id": "e4", "occurred_at": NOW, "user_id": "u1", "age": 40, "send_at": NOW,
                        "cancellation_key": "birthday:u1"},
    "NotificationRequested": {"event_id": "e5", "occurred_at": NOW, "user_id": "u1", "template": "t", "channels": ["email", "push"],
                              "category": "transactional", "variables_json": '{"a": [1, 2]}', "send_at": None, "ttl_seconds": 60,
                              "recipient": {"email": "guest@example.com", "phone": None, "push_tokens": ["tok"], "locale": "de",
                                            "time_zone": None, "first_name": None},
                              "cancellation_key": "cart:42"},
    "CampaignMessage": {"event_id": "c:u1", "occurred_at": NOW, "campaign_id": "c", "user_id": "u1", "template": "weekly_digest",
                        "channels": ["email"], "category": "marketing", "variables_json": "{}"},
    "CampaignChunk": {"chunk_id": "c:0", "occurred_at": NOW, "campaign_id": "c", "template": "weekly_digest",
                      "channels": ["email"], "category": "marketing", "variables_json": "{}", "user_ids": ["u1", "u2"],
                      "user_variables_json": [None, '{"a": 1}'], "send_window": "09:00-18:00"},
    "DeliveryChunk": {"chunk_id": "c:0", "event_type": "CampaignMessage", "channel": "email", "category": "marketing",
                      "template": "weekly_digest", "campaign_id": "c", "occurred_at": NOW, "expires_at": NOW,
                      "items": [],
                      "columns": {"delivery_id": ["d1"], "notification_id": ["c:u1"], "event_id": ["c:u1"],
                                  "user_id": ["u1"], "address": ["a@example.com"], "template_version": [1],
                                  "locale": ["en"], "subject": ["Hi"], "text": [""], "html": [None], "push_title": [None],
                                  "push_data": [{}], "sms_segments": [0]},
                      "shared": {"subject": None, "text": ["Hi ", "!"], "html": None}, "slots": [["Ada"]]},
    "Delivery": {
        "delivery_id": "d", "notification_id": "e1", "event_id": "e1", "event_type": "OrderPlaced", "user_id": "u1",
        "channel": "email", "lane": "interactive", "category": "transactional", "address": "a@example.com",
        "template": "order_confirmation", "template_version": 1, "locale": "de", "subject": "Danke", "text": "t",
        "html": "<p>t</p>", "push_title": None, "push_data": {"k": "v"}, "sms_segments": 0, "campaign_id": None,
        "occurred_at": NOW, "expires_at": None, "attempt": 2, "first_failure_at": NOW, "last_error": "503",
        "cancellation_key": "cart:42",
    },
    "StatusChange": {"notification_id": "e1", "event_id": "e1", "event_type": "OrderPlaced", "user_id": "u1", "status": "sent",
                     "channel": "email", "reason": None, "delivery_id": "d", "provider_message_id": "m", "template": "t",
                     "category": "transactional", "campaign_id": None, "at": NOW, "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"},
    "Receipt": {"provider": "sendgrid", "provider_message_id": "m", "status": "bounced", "hard_bounce": True, "reason": "550", "at": NOW,
                "address": "a@example.com", "delivery_id": "d"},
}


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec()


def test_every_catalogued_schema_has_a_sample():
    assert set(SAMPLES) == set(load_catalog().names())


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_schema_round_trips(codec: Codec, name: str):
    data = codec.encode(name, SAMPLES[name])
    assert data[:2] == MAGIC
    assert data[2:10] == codec.catalog.latest(name).fingerprint
    decoded = codec.decode(data)
    assert decoded.name == name
    assert decoded.record == SAMPLES[name]


def test_old_writer_version_is_read_with_the_new_reader_schema(codec: Codec):
    v1 = {k: v for k, v in SAMPLES["UserFollowed"].items() if k != "follower_avatar_url"}
    decoded = codec.decode(codec.encode("UserFollowed", v1, version=1))
    assert decoded.version == 1
    assert decoded.record == {**v1, "follower_avatar_url": None}


@pytest.mark.parametrize(("name", "version"), [("Delivery", 1), ("NotificationRequested", 2), ("BirthdayReached", 1)])
def test_a_record_written_before_cancellation_keys_reads_with_none(codec: Codec, name: str, version: int):
    old = {k: v for k, v in SAMPLES[name].items() if k != "cancellation_key"}
    decoded = codec.decode(codec.encode(name, old, version=version))
    assert decoded.version == version and codec.catalog.latest(name).version == version + 1
    assert decoded.record == {**old, "cancellation_key": None}


def test_a_status_change_of_v2_reads_with_no_trace_id(codec: Codec):
    v2 = {k: v for k, v in SAMPLES["StatusChange"].items() if k != "trace_id"}
    decoded = codec.decode(codec.encode("StatusChange", v2, version=2))
    assert decoded.version == 2 and codec.catalog.latest("StatusChange").version == 3
    assert decoded.record == {**v2, "trace_id": None}


V2_ITEMS = [{"delivery_id": "d1", "notification_id": "c:u1", "event_id": "c:u1", "user_id": "u1", "address": "a@example.com",
             "template_version": 1, "locale": "en", "subject": "Hi", "text": "", "html": None, "push_title": None,
             "push_data": {}, "sms_segments": 0}]


def test_a_delivery_chunk_of_v1_reads_without_shared_content(codec: Codec):
    v1 = {**{k: v for k, v in SAMPLES["DeliveryChunk"].items() if k not in ("shared", "slots", "columns")},
          "items": V2_ITEMS}
    decoded = codec.decode(codec.encode("DeliveryChunk", v1, version=1))
    assert decoded.version == 1 and codec.catalog.latest("DeliveryChunk").version == 3
    assert decoded.record == {**v1, "shared": None, "slots": [], "columns": None}


def test_a_delivery_chunk_of_v2_gives_the_same_deliveries_as_its_v3_columns(codec: Codec):
    """A chunk a worker of the version before wrote (items, no columns) is still read whole after an upgrade."""
    v3 = SAMPLES["DeliveryChunk"]
    v2 = {**{k: v for k, v in v3.items() if k != "columns"}, "items": V2_ITEMS}
    old, new = (codec.decode(codec.encode("DeliveryChunk", r, version=n)) for r, n in ((v2, 2), (v3, 3)))
    assert old.version == 2 and old.record["columns"] is None
    assert chunk_deliveries(old.record) == chunk_deliveries(new.record)
    assert [d.text for d in chunk_deliveries(new.record)] == ["Hi Ada!"]


@pytest.mark.parametrize(("change", "error"), [
    ({"items": V2_ITEMS}, "1 items beside columns"),
    ({"columns": {**SAMPLES["DeliveryChunk"]["columns"], "address": []}}, "columns of unequal lengths [0, 1]"),
])
def test_a_chunk_whose_columns_do_not_line_up_is_refused_by_name(codec: Codec, change: dict, error: str):
    record = codec.decode(codec.encode("DeliveryChunk", {**SAMPLES["DeliveryChunk"], **change})).record
    with pytest.raises(ValueError, match=re.escape(error)):
        chunk_deliveries(record)


def test_unknown_fingerprint_is_a_decode_error_that_names_it(codec: Codec):
    body = io.BytesIO()
    schemaless_writer(body, {"type": "record", "name": "X", "fields": [{"name": "a", "type": "int"}]}, {"a": 1})
    data = MAGIC + bytes.fromhex("0123456789abcdef") + body.getvalue()
    with pytest.raises(DecodeError) as err:
        codec.decode(data)
    assert err.value.reason == "unknown_schema"
    assert "0123456789abcdef" in str(err.value)


@pytest.mark.parametrize("data,reason", [(b"", "not_avro"), (None, "not_avro"), (b'{"json": true}', "not_avro")])
def test_non_avro_bytes_are_a_decode_error(codec: Codec, data, reason):
    with pytest.raises(DecodeError) as err:
        codec.decode(data)
    assert err.value.reason == reason


def test_truncated_body_is_a_corrupt_decode_error(codec: Codec):
    data = codec.encode("OrderPlaced", SAMPLES["OrderPlaced"])
    with pytest.raises(DecodeError) as err:
        codec.decode(data[:14])
    assert err.value.reason == "corrupt"


def test_encoding_a_record_that_does_not_match_says_which_schema(codec: Codec):
    with pytest.raises(ValueError, match="OrderPlaced v1"):
        codec.encode("OrderPlaced", {"event_id": "e"})


def test_the_shipped_catalog_is_backward_compatible():
    assert check_catalog(load_catalog()) == {name: [] for name in load_catalog().names()}


REC = {"type": "record", "name": "R"}
ADDRESS = {"type": "record", "name": "Address", "fields": [{"name": "city", "type": "string"}]}
STATE = {"type": "enum", "name": "State", "symbols": ["NEW", "PAID", "SHIPPED"]}


def _r(*fields: dict, ns: str | None = "shop") -> dict:
    return {**REC, **({"namespace": ns} if ns else {}), "fields": list(fields)}


# (case, reader = the new version, writer = the old version, compatible?) as Apache Avro (Java's
# SchemaCompatibility, which Confluent Schema Registry runs) decides them
AVRO_CASES = [
    ("renamed nested record, no alias",
     _r({"name": "a", "type": {**ADDRESS, "name": "PostalAddress"}}), _r({"name": "a", "type": ADDRESS}), False),
    ("renamed nested record with an alias",
     _r({"name": "a", "type": {**ADDRESS, "name": "PostalAddress", "aliases": ["Address"]}}), _r({"name": "a", "type": ADDRESS}), True),
    ("renamed nested record with a full-name alias",
     _r({"name": "a", "type": {**ADDRESS, "name": "PostalAddress", "aliases": ["shop.Address"]}}), _r({"name": "a", "type": ADDRESS}),
     True),
    ("fixed size change",
     _r({"name": "h", "type": {"type": "fixed", "name": "Hash", "size": 32}}),
     _r({"name": "h", "type": {"type": "fixed", "name": "Hash", "size": 16}}), False),
    ("fixed, same size", _r({"name": "h", "type": {"type": "fixed", "name": "Hash", "size": 16}}),
     _r({"name": "h", "type": {"type": "fixed", "name": "Hash", "size": 16}}), True),
    ("enum symbol removed, no default",
     _r({"name": "s", "type": {**STATE, "symbols": ["NEW", "PAID"]}}), _r({"name": "s", "type": STATE}), False),
    ("enum symbol removed, reader enum has a default",
     _r({"name": "s", "type": {**STATE, "symbols": ["NEW", "PAID"], "default": "NEW"}}), _r({"name": "s", "type": STATE}), True),
    ("enum symbol added", _r({"name": "s", "type": {**STATE, "symbols": [*STATE["symbols"], "LOST"]}}), _r({"name": "s", "type": STATE}),
     True),
    ("union widened", _r({"name": "u", "type": ["null", "string", "long"]}), _r({"name": "u", "type": ["null", "string"]}), True),
    ("union narrowed", _r({"name": "u", "type": ["null", "string"]}), _r({"name": "u", "type": ["null", "string", "long"]}), False),
    ("plain type widened to a union", _r({"name": "u", "type": ["null", "string"]}), _r({"name": "u", "type": "string"}), True),
    ("union narrowed to a plain type", _r({"name": "u", "type": "string"}), _r({"name": "u", "type": ["null", "string"]}), False),
    ("int → long promotion", _r({"name": "n", "type": "long"}), _r({"name": "n", "type": "int"}), True),
    ("long → int", _r({"name": "n", "type": "int"}), _r({"name": "n", "type": "long"}), False),
    ("string ↔ bytes", _r({"name": "b", "type": "bytes"}), _r({"name": "b", "type": "string"}), True),
    ("new field with a default", _r({"name": "a", "type": "int"}, {"name": "b", "type": ["null", "int"], "default": None}),
     _r({"name": "a", "type": "int"}), True),
    ("new field without a default", _r({"name": "a", "type": "int"}, {"name": "b", "type": "int"}), _r({"name": "a", "type": "int"}),
     False),
    ("field removed", _r(), _r({"name": "gone", "type": "string"}), True),
    ("renamed field with an alias", _r({"name": "new", "type": "int", "aliases": ["old"]}), _r({"name": "old", "type": "int"}), True),
    ("renamed top-level record, no alias", {**_r(), "name": "S"}, _r(), False),
]


@pytest.mark.parametrize("case,reader,writer,ok", AVRO_CASES, ids=[c[0] for c in AVRO_CASES])
def test_compatibility_is_apache_avros_verdict(case, reader, writer, ok):
    assert (problems(reader, writer) == []) is ok, problems(reader, writer)


@pytest.mark.parametrize("case,reader,writer,ok", AVRO_CASES, ids=[c[0] for c in AVRO_CASES])
def test_a_compatible_pair_really_resolves_with_fastavro(case, reader, writer, ok):
    """The verdict holds at decode time: fastavro's schema resolution reads (or refuses) a record of the writer."""
    from fastavro import parse_schema, schemaless_reader

    samples = {"a": {"city": "Wien"} if "Address" in json.dumps(writer) else 1, "h": b"x" * 16, "s": "SHIPPED", "u": "text",
               "n": 7, "b": "bytes", "gone": "g", "old": 3}
    record = {f["name"]: samples[f["name"]] for f in writer["fields"]}
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(writer), record)
    if ok:
        buf.seek(0)
        schemaless_reader(buf, parse_schema(writer), parse_schema(reader))


def test_problems_name_the_incompatibility():
    [line] = problems(*AVRO_CASES[0][1:3])
    assert "name_mismatch" in line and "shop.Address" in line
    [line] = problems(*AVRO_CASES[-4][1:3])
    assert "reader_field_missing_default_value" in line and ": b" in line


def test_a_new_version_without_a_default_is_reported(tmp_path: Path):
    base = {**REC, "name": "Thing", "fields": [{"name": "a", "type": "string"}]}
    (tmp_path / "Thing.v1.avsc").write_text(json.dumps(base))
    (tmp_path / "Thing.v2.avsc").write_text(json.dumps({**base, "fields": base["fields"] + [{"name": "b", "type": "int"}]}))
    [line] = check_catalog(load_catalog(tmp_path))["Thing"]
    assert line.startswith("v2 cannot read v1: reader_field_missing_default_value") and line.endswith(": b")


@pytest.mark.parametrize(
    "files,message",
    [
        ({"thing.avsc": REC}, "named <Name>.v<N>.avsc"),
        ({"R.v1.avsc": {**REC, "fields": []}, "R.v3.avsc": {**REC, "fields": [{"name": "a", "type": "int", "default": 1}]}}, "without gaps"),
        ({"R.v1.avsc": {**REC, "fields": []}, "R.v2.avsc": {**REC, "fields": []}}, "are the same schema"),
    ],
)
def test_catalog_mistakes_are_clear_errors(tmp_path: Path, files, message):
    for name, schema in files.items():
        (tmp_path / name).write_text(json.dumps(schema))
    with pytest.raises(CatalogError, match=message):
        load_catalog(tmp_path)


def test_every_version_is_found_by_the_fingerprint_apache_avro_computes(codec: Codec):
    """Apache's Python avro does not collapse logical-type primitives in the canonical form; we accept its fingerprint too."""
    import avro.schema

    for versions in codec.catalog.versions.values():
        for v in versions:
            apache = avro.schema.parse(json.dumps(v.raw)).fingerprint("CRC-64-AVRO")
            assert codec.catalog.by_fingerprint[apache] is v, v.path


def test_bytes_written_by_apache_avro_decode():
    import avro.io
    import avro.schema

    codec = Codec()
    raw = codec.catalog.latest("PasswordResetRequested").raw
    schema = avro.schema.parse(json.dumps(raw))
    body = io.BytesIO()
    record = SAMPLES["PasswordResetRequested"]
    avro.io.DatumWriter(schema).write(record, avro.io.BinaryEncoder(body))
    decoded = codec.decode(MAGIC + schema.fingerprint("CRC-64-AVRO") + body.getvalue())
    assert decoded.name == "PasswordResetRequested" and decoded.record == record


@pytest.mark.parametrize("user_id,variables", [
    ("u1", "{}"), ("", ""), ("ü-ß-名前", '{"a": "ö"}'), ("x" * 200, "{" + '"k": 1,' * 100 + '"z": 0}'), ("u" * 63, "v" * 64),
])
def test_a_prepared_encoder_writes_exactly_what_encode_writes(codec: Codec, user_id: str, variables: str):
    fixed = {"occurred_at": NOW, "campaign_id": "c-42", "template": "weekly_digest", "channels": ["email", "push"],
             "category": "marketing"}
    encode = codec.prepared("CampaignMessage", fixed)
    varying = {"event_id": f"c-42:{user_id}", "user_id": user_id, "variables_json": variables}
    data = encode(varying)
    assert data == codec.encode("CampaignMessage", {**fixed, **varying})
    assert codec.decode(data).record == {**fixed, **varying}


def test_only_string_fields_can_vary(codec: Codec):
    with pytest.raises(ValueError, match=r"CampaignMessage\.channels"):
        codec.prepared("CampaignMessage", {"occurred_at": NOW, "campaign_id": "c", "template": "t", "category": "m"})


def test_epoch_ms_of_datetimes_in_any_order_and_of_ints() -> None:
    from datetime import UTC, datetime, timedelta

    from schemas.records import epoch_ms
    first = datetime(2026, 12, 8, 1, 2, 3, 456_000, tzinfo=UTC)
    second = first + timedelta(milliseconds=1)
    expected = {id(first): 1796691723456, id(second): 1796691723457}
    for value in (first, first, second, first, second, second):   # the remembered last one never answers for another
        assert epoch_ms(value) == expected[id(value)]
    assert epoch_ms(42) == 42
