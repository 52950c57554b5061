"""The Schema Registry stand-in, driven only through confluent-kafka's real client and serializer,
and ``herald schemas register`` against it (loopback HTTP, no Kafka)."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from infra.tools.sandbox.registry import RunningRegistry, running_registry
from infra.tools.sandbox.server import free_port
from schemas.catalog import load_catalog
from schemas.codec import Codec
from schemas.compat import level_problems
from schemas.registry import ConfluentSchemaSource, RegistryUnavailable

CATALOG = load_catalog()
ORDER = CATALOG.latest("OrderPlaced").raw
SUBJECT = "shop.events.OrderPlaced"
AUTH = ("herald", "s3cret-registry")


@pytest.fixture
def registry() -> Iterator[RunningRegistry]:
    with running_registry("127.0.0.1", free_port(), auth=AUTH) as reg:
        yield reg


def client(reg: RunningRegistry) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": reg.url, "basic.auth.user.info": ":".join(AUTH)})


def schema(raw: dict) -> Schema:
    return Schema(json.dumps(raw), "AVRO")


def with_field(raw: dict, f: dict) -> dict:
    out = copy.deepcopy(raw)
    out["fields"].append(f)
    return out


def order() -> dict:
    return {"event_id": "e1", "occurred_at": 1_700_000_000_000, "user_id": "u1", "order_id": "o-1", "currency": "EUR",
            "total_cents": 990, "items": [{"sku": "A", "name": "Mug", "quantity": 1, "unit_price_cents": 990}],
            "shipping_address": None}


def test_confluents_serializer_registers_and_herald_decodes_through_the_real_client(registry: RunningRegistry):
    ser = AvroSerializer(client(registry), json.dumps(ORDER), conf={"subject.name.strategy": record_subject_name_strategy})
    data = ser(order(), SerializationContext("herald.events", MessageField.VALUE))
    assert data[0] == 0 and int.from_bytes(data[1:5], "big") == 1
    assert registry.state.subjects == {SUBJECT: [1]}
    source = ConfluentSchemaSource(registry.url, *AUTH)
    d = Codec(CATALOG, source).decode(data)
    assert (d.name, d.version, d.schema_id, d.record["order_id"]) == ("OrderPlaced", 1, 1, "o-1")
    source.close()


def test_subjects_versions_lookup_and_ids(registry: RunningRegistry):
    c = client(registry)
    v2 = with_field(ORDER, {"name": "gift_note", "type": ["null", "string"], "default": None})
    assert c.register_schema(SUBJECT, schema(ORDER)) == 1
    assert c.register_schema(SUBJECT, schema(v2)) == 2
    assert client(registry).register_schema(SUBJECT, schema(ORDER)) == 1  # already registered: the same id
    assert c.register_schema("herald.events-" + SUBJECT, schema(ORDER)) == 1  # one id per schema, across subjects
    assert c.get_subjects() == ["herald.events-" + SUBJECT, SUBJECT]
    assert c.get_versions(SUBJECT) == [1, 2]
    latest = c.get_latest_version(SUBJECT)
    assert (latest.version, latest.schema_id, json.loads(latest.schema.schema_str)) == (2, 2, v2)
    assert c.get_version(SUBJECT, 1).schema_id == 1
    assert c.lookup_schema(SUBJECT, schema(v2)).version == 2
    assert json.loads(c.get_schema(2).schema_str) == v2
    assert [(v.subject, v.version) for v in c.get_schema_versions(1)] == [("herald.events-" + SUBJECT, 1), (SUBJECT, 1)]


@pytest.mark.parametrize("call,status,code", [
    (lambda c: c.get_schema(99), 404, 40403),
    (lambda c: c.get_versions("nobody"), 404, 40401),
    (lambda c: c.get_version(SUBJECT, 7), 404, 40402),
    (lambda c: c.lookup_schema(SUBJECT, schema({**ORDER, "name": "Other"})), 404, 40403),
    (lambda c: c.register_schema(SUBJECT, Schema("{not json", "AVRO")), 422, 42201),
    (lambda c: c.set_compatibility(SUBJECT, "SIDEWAYS"), 422, 42203),
    (lambda c: c.get_compatibility(SUBJECT), 404, 40408),
])
def test_errors_are_confluents(registry: RunningRegistry, call, status, code):
    c = client(registry)
    c.register_schema(SUBJECT, schema(ORDER))
    with pytest.raises(SchemaRegistryError) as err:
        call(c)
    assert (err.value.http_status_code, err.value.error_code) == (status, code)


def test_basic_auth_is_checked(registry: RunningRegistry):
    with pytest.raises(SchemaRegistryError) as err:
        SchemaRegistryClient({"url": registry.url}).get_subjects()
    assert err.value.http_status_code == 401
    with pytest.raises(RegistryUnavailable):  # wrong credentials: the registry's problem, not the record's
        ConfluentSchemaSource(registry.url, "herald", "wrong").avro_schema(1)


NEW_REQUIRED = {"name": "coupon", "type": "string"}               # backward incompatible (no default)
NEW_OPTIONAL = {"name": "coupon", "type": ["null", "string"], "default": None}


@pytest.mark.parametrize("level,new_field,ok", [
    ("BACKWARD", NEW_REQUIRED, False), ("BACKWARD", NEW_OPTIONAL, True),
    ("FORWARD", NEW_REQUIRED, True), ("FULL", NEW_REQUIRED, False), ("FULL", NEW_OPTIONAL, True), ("NONE", NEW_REQUIRED, True),
])
def test_compatibility_levels_decide_registration(registry: RunningRegistry, level: str, new_field: dict, ok: bool):
    c = client(registry)
    c.set_compatibility(SUBJECT, level)
    assert c.get_compatibility(SUBJECT) == level and c.get_compatibility() == "BACKWARD"
    c.register_schema(SUBJECT, schema(ORDER))
    new = schema(with_field(ORDER, new_field))
    assert c.test_compatibility(SUBJECT, new) is ok
    if ok:
        assert c.register_schema(SUBJECT, new) == 2
    else:
        with pytest.raises(SchemaRegistryError) as err:
            c.register_schema(SUBJECT, new)
        assert err.value.http_status_code == 409


def test_transitive_levels_check_every_version(registry: RunningRegistry):
    c = client(registry)
    base = {"type": "record", "name": "T", "fields": [{"name": "a", "type": "int"}]}
    v2 = {**base, "fields": [{"name": "a", "type": "int"}, {"name": "b", "type": "int", "default": 0}]}
    v3 = {**base, "fields": [{"name": "b", "type": "int"}]}  # reads v2, not v1 (v1 has no b)
    c.set_compatibility("T", "BACKWARD")
    c.register_schema("T", schema(base))
    c.register_schema("T", schema(v2))
    assert c.test_compatibility("T", schema(v3)) is True
    assert c.test_compatibility_all_versions("T", schema(v3)) is True
    c.set_compatibility("T", "BACKWARD_TRANSITIVE")
    assert c.test_compatibility_all_versions("T", schema(v3), verbose=True) is False
    with pytest.raises(SchemaRegistryError) as err:
        c.register_schema("T", schema(v3))
    assert err.value.http_status_code == 409 and "cannot read version 1" in err.value.error_message
    assert level_problems("BACKWARD_TRANSITIVE", v3, [base, v2]) == [
        "the new schema cannot read version 1: reader_field_missing_default_value at b: b"]


# --- herald schemas register ------------------------------------------------------------------

def herald(*args: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "COLUMNS": "200", **env}
    return subprocess.run([sys.executable, "-m", "infra.tools.cli.main", *args], capture_output=True, text=True, env=full,
                          timeout=90)


def _env(reg: RunningRegistry, **more: str) -> dict[str, str]:
    return {"HERALD_SCHEMA_REGISTRY__URL": reg.url, "HERALD_SCHEMA_REGISTRY__USERNAME": AUTH[0],
            "HERALD_SCHEMA_REGISTRY__PASSWORD": AUTH[1], **more}


def test_schemas_register_publishes_the_catalog_with_its_level(registry: RunningRegistry, tmp_path: Path):
    v2 = with_field(ORDER, {"name": "gift_note", "type": ["null", "string"], "default": None})
    (tmp_path / "OrderPlaced.v2.avsc").write_text(json.dumps(v2))
    done = herald("schemas", "register", "--json", **_env(registry, HERALD_SCHEMAS_DIR=str(tmp_path)))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    expected = {(v.fullname, v.version) for name in CATALOG.names() for v in CATALOG.versions[name]} | {(SUBJECT, 2)}
    assert {(r["subject"], r["version"]) for r in rows} == expected
    c = client(registry)
    assert c.get_versions(SUBJECT) == [1, 2] and json.loads(c.get_latest_version(SUBJECT).schema.schema_str) == v2
    assert {c.get_compatibility(s) for s in c.get_subjects()} == {"BACKWARD_TRANSITIVE"}
    again = herald("schemas", "register", "--json", **_env(registry, HERALD_SCHEMAS_DIR=str(tmp_path)))
    assert [json.loads(line)["id"] for line in again.stdout.splitlines()] == [r["id"] for r in rows]  # idempotent


def test_schemas_register_failures_are_one_line(registry: RunningRegistry, tmp_path: Path):
    done = herald("schemas", "register")
    assert done.returncode == 1 and done.stderr.strip() == "error: no schema registry is configured: set HERALD_SCHEMA_REGISTRY__URL"
    done = herald("schemas", "register", HERALD_SCHEMA_REGISTRY__URL="http://127.0.0.1:1")
    assert done.returncode == 1 and "does not answer" in done.stderr and "Traceback" not in done.stderr
    done = herald("schemas", "register", **_env(registry, HERALD_SCHEMA_REGISTRY__PASSWORD="wrong"))
    assert done.returncode == 1 and "answered 401" in done.stderr
    # a version the registry refuses: the registry's subject already holds an OrderPlaced this one cannot read
    c = client(registry)
    odd = copy.deepcopy(ORDER)
    next(f for f in odd["fields"] if f["name"] == "total_cents")["type"] = "string"
    c.register_schema(SUBJECT, schema(odd))
    done = herald("schemas", "register", **_env(registry))
    assert done.returncode == 1 and "incompatible" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_herald_sandbox_run_serves_the_registry_beside_the_providers():
    env = {**os.environ, "HERALD_SENDGRID_HOST": f"http://127.0.0.1:{free_port()}",
           "HERALD_TWILIO_BASE_URL": f"http://127.0.0.1:{free_port()}", "HERALD_FCM_URL": f"http://127.0.0.1:{free_port()}",
           "HERALD_SMTP_PORT": str(free_port())}
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "infra.tools.cli.main", "sandbox", "run", "--registry-port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        c = SchemaRegistryClient({"url": f"http://127.0.0.1:{port}"})
        deadline = time.monotonic() + 30
        while True:
            try:
                assert c.get_compatibility() == "BACKWARD"
                break
            except Exception:  # noqa: BLE001 - not listening yet
                assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.2)
        assert c.register_schema(SUBJECT, schema(ORDER)) == 1
    finally:
        proc.terminate()
        proc.wait(10)
