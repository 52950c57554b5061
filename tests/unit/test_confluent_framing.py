"""Confluent's wire format (``00`` + 4-byte schema id + body) beside single-object encoding, over a registry twin.

Each outcome the issue names: a known id decodes (and is asked for once), an unknown id is a dead letter
(``unknown_schema_id``), an unreachable registry is an infrastructure error (retried, never a dead letter),
a writer Herald's reader cannot read is ``incompatible_schema``. The real registry client against the
registry sandbox is in tests/integration/test_schema_registry.py.
"""
from __future__ import annotations

import asyncio
import copy
import io
import json
import time
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from infra.kafka.dead_letters import ERROR_CLASS
from infra.kafka.records import InRecord
from infra.settings import Settings
from schemas import codec as codec_module
from schemas.catalog import load_catalog
from schemas.codec import Codec, DecodeError, framing
from schemas.registry import ConfluentSchemaSource, NotAvroSchema, RegistryUnavailable
from streams.metrics import Metrics
from streams.runtime.context import Context
from streams.runtime.runner import is_infra_error
from streams.stages.route.recipient import Recipient
from tests.unit.test_route_handler import MemoryRouteEnv, deliveries, header, order_placed

CATALOG = load_catalog()
ORDER = CATALOG.latest("OrderPlaced").raw


class RegistryTwin:
    """``SchemaSource`` over a dict; ``down`` makes it unreachable; ``asked`` counts requests."""

    def __init__(self, schemas: dict[int, Any] | None = None) -> None:
        self.schemas = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in (schemas or {}).items()}
        self.down = False
        self.asked: list[int] = []
        self.types: dict[int, str] = {}

    def reachable(self) -> bool:
        return not self.down

    def avro_schema(self, schema_id: int) -> str | None:
        self.asked.append(schema_id)
        if self.down:
            raise RegistryUnavailable("the schema registry at http://twin does not answer")
        if schema_id in self.types:
            raise NotAvroSchema(self.types[schema_id])
        return self.schemas.get(schema_id)


def framed(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    buf.write(b"\x00" + schema_id.to_bytes(4, "big"))
    schemaless_writer(buf, parse_schema(copy.deepcopy(schema)), record)
    return buf.getvalue()


def order(uid: str = "u1", **kw: Any) -> dict[str, Any]:
    return {**order_placed(uid), **kw}


def order_v2() -> dict[str, Any]:
    """OrderPlaced as an upstream team registers its next version: one new optional field."""
    v2 = copy.deepcopy(ORDER)
    v2["fields"].append({"name": "gift_note", "type": ["null", "string"], "default": None})
    return v2


def test_framing_is_told_by_the_first_bytes():
    assert framing(Codec().encode("OrderPlaced", order())) == "single_object"
    assert framing(framed(7, ORDER, order())) == "confluent"
    assert framing(b"{}") is None and framing(b"") is None and framing(b"\x00\x00") is None


def test_a_known_schema_id_decodes_and_the_registry_is_asked_once():
    twin = RegistryTwin({42: ORDER})
    codec = Codec(CATALOG, twin)
    ev = order()
    for _ in range(3):
        d = codec.decode(framed(42, ORDER, ev))
        assert (d.name, d.version, d.schema_id) == ("OrderPlaced", 1, 42)
        assert d.record == codec.decode(codec.encode("OrderPlaced", ev)).record
    assert twin.asked == [42]


def test_single_object_values_never_reach_the_registry():
    twin = RegistryTwin()
    codec = Codec(CATALOG, twin)
    values = [codec.encode("OrderPlaced", order()) for _ in range(3)]
    assert codec.missing_ids(values) == set()
    assert [codec.decode(v).name for v in values] == ["OrderPlaced"] * 3
    assert twin.asked == []


def test_missing_ids_are_the_new_ones_only():
    codec = Codec(CATALOG, RegistryTwin({1: ORDER, 2: ORDER}))
    values = [framed(1, ORDER, order()), framed(2, ORDER, order()), framed(2, ORDER, order()), b"junk"]
    assert codec.missing_ids(values) == {1, 2}
    codec.resolve_ids({1})
    assert codec.missing_ids(values) == {2}
    assert Codec(CATALOG).missing_ids(values) == set()  # no registry: nothing to ask


def test_an_unknown_schema_id_is_a_decode_error_asked_again_after_a_while(monkeypatch):
    twin = RegistryTwin()
    codec = Codec(CATALOG, twin)
    value = framed(9, ORDER, order())
    for _ in range(2):
        with pytest.raises(DecodeError) as err:
            codec.decode(value)
        assert err.value.reason == "unknown_schema_id" and "schema id 9" in str(err.value)
    assert twin.asked == [9]  # believed for a while
    later = time.monotonic() + codec_module.UNKNOWN_ID_SECONDS + 1
    monkeypatch.setattr(codec_module.time, "monotonic", lambda: later)
    twin.schemas[9] = json.dumps(ORDER)  # registered since
    assert codec.missing_ids([value]) == {9}
    assert codec.decode(value).name == "OrderPlaced"


def test_an_unreachable_registry_is_an_infrastructure_error_and_nothing_is_cached():
    twin = RegistryTwin({5: ORDER})
    twin.down = True
    codec = Codec(CATALOG, twin)
    value = framed(5, ORDER, order())
    with pytest.raises(RegistryUnavailable) as err:
        codec.decode(value)
    assert isinstance(err.value, ConnectionError) and is_infra_error(err.value)
    assert not isinstance(err.value, DecodeError)
    twin.down = False
    assert codec.decode(value).name == "OrderPlaced"


def test_a_writer_herald_cannot_read_is_incompatible_schema():
    bad = copy.deepcopy(ORDER)
    next(f for f in bad["fields"] if f["name"] == "total_cents")["type"] = "string"
    codec = Codec(CATALOG, RegistryTwin({3: bad}))
    with pytest.raises(DecodeError) as err:
        codec.decode(framed(3, bad, {**order(), "total_cents": "a lot"}))
    assert err.value.reason == "incompatible_schema" and "total_cents" in str(err.value)


def test_a_writer_record_the_catalog_does_not_hold_is_unknown_schema():
    other = {"type": "record", "name": "InvoicePaid", "namespace": "shop.events", "fields": [{"name": "user_id", "type": "string"}]}
    codec = Codec(CATALOG, RegistryTwin({4: other}))
    with pytest.raises(DecodeError) as err:
        codec.decode(framed(4, other, {"user_id": "u"}))
    assert err.value.reason == "unknown_schema" and "HERALD_SCHEMAS_DIR" in str(err.value)


def test_a_protobuf_schema_id_is_not_avro():
    twin = RegistryTwin()
    twin.types[8] = "PROTOBUF"
    with pytest.raises(DecodeError) as err:
        Codec(CATALOG, twin).decode(b"\x00\x00\x00\x00\x08\x02\x00")
    assert err.value.reason == "not_avro" and "PROTOBUF" in str(err.value)


def test_without_a_registry_confluent_framing_names_the_setting():
    with pytest.raises(DecodeError) as err:
        Codec(CATALOG).decode(framed(1, ORDER, order()))
    assert err.value.reason == "no_registry" and "HERALD_SCHEMA_REGISTRY__URL" in str(err.value)


def test_a_newer_registered_version_keeps_its_new_field():
    """A v2 only the registry knows: Herald's v1 reader resolves it and the new field stays for the templates."""
    codec = Codec(CATALOG, RegistryTwin({11: order_v2()}))
    d = codec.decode(framed(11, order_v2(), {**order(), "gift_note": "Happy birthday!"}))
    assert (d.name, d.version, d.schema_id) == ("OrderPlaced", 0, 11)
    assert d.record["gift_note"] == "Happy birthday!" and d.record["order_id"] == "A-1"


def test_an_older_writer_gets_the_readers_defaults():
    """A writer without the reader's optional field: the catalog's default fills it (Avro's resolution)."""
    older = copy.deepcopy(ORDER)
    older["fields"] = [f for f in older["fields"] if f["name"] != "shipping_address"]
    codec = Codec(CATALOG, RegistryTwin({12: older}))
    ev = {k: v for k, v in order().items() if k != "shipping_address"}
    assert codec.decode(framed(12, older, ev)).record["shipping_address"] is None


def test_a_truncated_confluent_body_is_corrupt():
    codec = Codec(CATALOG, RegistryTwin({42: ORDER}))
    with pytest.raises(DecodeError) as err:
        codec.decode(framed(42, ORDER, order())[:12])
    assert err.value.reason == "corrupt"


def test_the_real_client_against_nothing_is_registry_unavailable():
    source = ConfluentSchemaSource("http://127.0.0.1:1", timeout=2)
    t0 = time.monotonic()
    with pytest.raises(RegistryUnavailable) as err:
        source.avro_schema(1)
    assert is_infra_error(err.value) and time.monotonic() - t0 < 10
    assert source.reachable() is False
    source.close()


def test_a_lone_record_is_never_dead_lettered_while_the_registry_is_away():
    """The runner dead-letters a lone record that keeps failing "while every service answers": the registry is one of them."""
    from streams.runtime.runner import BatchRunner
    from tests.unit.test_runner import MemoryOutput, Services

    twin = RegistryTwin({42: ORDER})
    twin.down = True
    codec = Codec(CATALOG, twin)

    class Decoding:
        name, stage = "test", "route"

        async def handle(self, batch: list[InRecord]) -> list:
            codec.resolve_ids(codec.missing_ids(r.value for r in batch))
            return []

    out, services = MemoryOutput(), Services()
    ctx = Context(settings=Settings(batch_infra_retries=1, topic_prefix="t"), codec=codec, output=out,  # type: ignore[arg-type]
                  redis=services, db=services, metrics=Metrics())  # type: ignore[arg-type]
    runner = BatchRunner(Decoding(), ctx, max_backoff=0.001)

    async def scenario() -> None:
        task = asyncio.create_task(runner.run([InRecord("t.events", 0, 0, b"k", framed(42, ORDER, order()))]))
        await asyncio.sleep(0.5)  # far more failures than the retries allow; Redis, PostgreSQL and Kafka answer
        assert not task.done() and not out.sent
        twin.down = False
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert not out.sent and twin.asked[-1] == 42


def test_codec_for_settings_reads_schemas_dir_and_registry(tmp_path):
    from infra.schema_registry import codec_for

    thing = {"type": "record", "name": "InvoicePaid", "fields": [{"name": "user_id", "type": "string"}]}
    (tmp_path / "InvoicePaid.v1.avsc").write_text(json.dumps(thing))
    codec = codec_for(Settings(schemas_dir=tmp_path, schema_registry={"url": "http://127.0.0.1:1"}))
    assert "InvoicePaid" in codec.catalog.names() and "OrderPlaced" in codec.catalog.names()
    assert isinstance(codec.registry, ConfluentSchemaSource)
    assert codec_for(Settings()).registry is None


# --- the route handler ---------------------------------------------------------------------

def _env(twin: RegistryTwin) -> MemoryRouteEnv:
    env = MemoryRouteEnv()
    env.codec = Codec(CATALOG, twin)
    return env


def _rec(env: MemoryRouteEnv, value: bytes, offset: int) -> InRecord:
    return InRecord(env.settings.topic("events"), 0, offset, b"u", value)


def test_the_route_handler_delivers_a_confluent_framed_event_and_dead_letters_the_bad_ids():
    twin = RegistryTwin({42: ORDER, 11: order_v2()})
    bad = copy.deepcopy(ORDER)
    next(f for f in bad["fields"] if f["name"] == "total_cents")["type"] = "string"
    twin.schemas[3] = json.dumps(bad)
    env = _env(twin)

    async def go() -> None:
        uid = env.uid()
        await env.add_user(Recipient(uid, email=f"{uid}@example.test"))
        good, newer = order(uid), order(uid)
        out = await env.handler().handle([
            _rec(env, framed(42, ORDER, good), 1),
            _rec(env, framed(11, order_v2(), {**newer, "gift_note": "hi"}), 2),
            _rec(env, framed(9, ORDER, order(uid)), 3),
            _rec(env, framed(3, bad, {**order(uid), "total_cents": "x"}), 4),
        ])
        assert [d["address"] for d in deliveries(env, out, good["event_id"]) if d["channel"] == "email"] == [f"{uid}@example.test"]
        assert deliveries(env, out, newer["event_id"])
        dead = sorted(header(o, ERROR_CLASS) for o in out if o.topic == env.settings.topic("dlq"))
        assert dead == [b"incompatible_schema", b"unknown_schema_id"]

    asyncio.run(go())
    assert sorted(twin.asked) == [3, 9, 11, 42]


def test_the_route_handler_raises_an_infrastructure_error_while_the_registry_is_down():
    twin = RegistryTwin({42: ORDER})
    twin.down = True
    env = _env(twin)

    async def go() -> None:
        with pytest.raises(RegistryUnavailable) as err:
            await env.handler().handle([_rec(env, framed(42, ORDER, order()), 1)])
        assert is_infra_error(err.value)  # the runner retries the batch: no dead letter for a fine record

    asyncio.run(go())


REASONS = {"not_avro", "unknown_schema", "corrupt", "unknown_schema_id", "incompatible_schema"}


def test_any_bytes_behind_a_schema_id_decode_or_say_why():
    """Fuzz: arbitrary bodies after a known, an unknown and an unreadable id are a record or a DecodeError with a reason."""
    from hypothesis import given, settings as hsettings, strategies as st

    bad = copy.deepcopy(ORDER)
    next(f for f in bad["fields"] if f["name"] == "total_cents")["type"] = "string"
    codec = Codec(CATALOG, RegistryTwin({1: ORDER, 2: order_v2(), 3: bad}))

    @hsettings(max_examples=300, deadline=None)
    @given(st.sampled_from([1, 2, 3, 4, 2**32 - 1]), st.binary(max_size=120))
    def check(sid: int, body: bytes) -> None:
        try:
            d = codec.decode(b"\x00" + sid.to_bytes(4, "big") + body)
        except DecodeError as exc:
            assert exc.reason in REASONS and str(exc)
        else:
            assert d.name == "OrderPlaced" and d.schema_id == sid

    check()
