"""Avro in two framings: single-object encoding (Herald's own) and Confluent's wire format.

* Single-object encoding: ``C3 01`` + 8-byte CRC-64-AVRO fingerprint + body. The fingerprint
  names the writer schema in the catalog; the reader resolves it against its own (latest)
  version, so old and new producers interoperate without a schema-registry server. Herald
  writes only this.
* Confluent's wire format: ``00`` + 4-byte big-endian schema id + body, what Confluent's
  serializers write. The id is resolved through a Schema Registry (``schemas.registry``) once
  and cached; the writer schema is then resolved against the catalog's reader schema of the
  same (unqualified) record name, as Avro's schema resolution says. Fields the writer has and
  the reader does not are kept (a newer version registered upstream is usable without a
  Herald release); a writer the reader cannot read is ``incompatible_schema``.

The framing is told by the first bytes. This is the only module that reads or writes Avro bytes.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas.catalog import Catalog, SchemaVersion, load_catalog
from schemas.registry import NotAvroSchema, SchemaSource

MAGIC = b"\xc3\x01"
HEADER_LEN = 10
CONFLUENT_MAGIC = 0
CONFLUENT_HEADER_LEN = 5
UNKNOWN_ID_SECONDS = 30.0  # how long "the registry does not know id N" is believed before asking again


class DecodeError(ValueError):
    """Bytes that are not a catalogued single-object Avro record: bad input, never a crash."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        # "not_avro" | "unknown_schema" | "corrupt", and for Confluent's framing
        # "unknown_schema_id" | "incompatible_schema" | "no_registry"
        self.reason = reason


@dataclass(frozen=True)
class Decoded:
    name: str        # short record name, e.g. "OrderPlaced"
    version: int     # writer version in the catalog; 0: a writer version only the registry knows
    record: dict[str, Any]
    schema_id: int | None = None  # Confluent's framing: the writer's registry id


@dataclass(frozen=True)
class _ById:
    """What a registry schema id resolves to: the writer, the reader to resolve it with, the catalog version."""

    name: str
    version: int
    writer: dict[str, Any]
    reader: dict[str, Any] | None


def framing(data: bytes | None) -> str | None:
    """``"single_object"``, ``"confluent"`` or None, from the first bytes."""
    if not data:
        return None
    if len(data) >= HEADER_LEN and data[:2] == MAGIC:
        return "single_object"
    if len(data) >= CONFLUENT_HEADER_LEN and data[0] == CONFLUENT_MAGIC:
        return "confluent"
    return None


def schema_id_of(data: bytes) -> int:
    return int.from_bytes(data[1:CONFLUENT_HEADER_LEN], "big")


class Codec:
    def __init__(self, catalog: Catalog | None = None, registry: SchemaSource | None = None) -> None:
        self.catalog = catalog or load_catalog()
        self.registry = registry
        # writer fingerprint -> (writer schema, reader schema or None when identical, reader version)
        self._readers: dict[bytes, tuple[SchemaVersion, dict | None]] = {}
        for fp, v in self.catalog.by_fingerprint.items():
            latest = self.catalog.latest(v.name)
            self._readers[fp] = (v, None if latest is v else latest.parsed)
        # registry schema id -> its resolution, or (the DecodeError, until when it is believed)
        self._by_id: dict[int, _ById | tuple[DecodeError, float]] = {}
        self._lock = threading.Lock()  # one registry request per id, whichever thread asks

    def encode(self, name: str, record: dict[str, Any], version: int | None = None) -> bytes:
        """Encode ``record`` with the latest (or a given) version of schema ``name``."""
        sv = self.catalog.latest(name) if version is None else self.catalog.versions[name][version - 1]
        buf = BytesIO()
        buf.write(MAGIC)
        buf.write(sv.fingerprint)
        try:
            schemaless_writer(buf, sv.parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:  # OverflowError: a long beyond 64 bits
            raise ValueError(f"{name} v{sv.version}: record does not match the schema: {exc}") from exc
        return buf.getvalue()

    def prepared(self, name: str, fixed: dict[str, Any]) -> Callable[[dict[str, str]], bytes]:
        """A fast encoder for many records of ``name`` that differ only in some ``string`` fields.

        The fields in ``fixed`` are encoded once (an Avro record is the concatenation
        of its fields, so a record of just those fields gives their exact bytes); every
        other field must be a plain ``string`` and is written per call. The result is
        byte for byte what ``encode`` writes. A campaign's messages use it.
        """
        sv = self.catalog.latest(name)
        raw = sv.raw
        parts: list[bytes | str] = [MAGIC + sv.fingerprint]
        run: list[dict[str, Any]] = []

        def flush_run() -> None:
            if run:
                segment = {"type": "record", "name": f"{raw['name']}Segment", "namespace": raw.get("namespace", ""),
                           "fields": list(run)}
                buf = BytesIO()
                schemaless_writer(buf, parse_schema(segment), {f["name"]: fixed[f["name"]] for f in run})
                parts.append(buf.getvalue())
                run.clear()

        for f in raw["fields"]:
            if f["name"] in fixed:
                run.append(f)
                continue
            if f["type"] != "string":
                raise ValueError(f"{name}.{f['name']} is {f['type']!r}: only string fields can vary in a prepared encoder")
            flush_run()
            parts.append(f["name"])
        flush_run()
        layout = tuple(parts)

        def encode(varying: dict[str, str]) -> bytes:
            out = bytearray()
            for p in layout:
                if isinstance(p, bytes):
                    out += p
                else:
                    data = varying[p].encode()
                    n = len(data) << 1  # zigzag of a non-negative long
                    while n > 0x7F:
                        out.append((n & 0x7F) | 0x80)
                        n >>= 7
                    out.append(n)
                    out += data
            return bytes(out)

        return encode

    def decode(self, data: bytes | None) -> Decoded:
        """Decode either framing. A Confluent-framed value whose id is not cached asks the registry (blocking)."""
        if not data or len(data) < HEADER_LEN or data[:2] != MAGIC:
            if data and len(data) >= CONFLUENT_HEADER_LEN and data[0] == CONFLUENT_MAGIC:
                return self._decode_confluent(data)
            raise DecodeError("not_avro", "not Avro: neither single-object encoding (C3 01 marker) nor Confluent's wire "
                                          "format (00 + schema id)")
        fp = data[2:HEADER_LEN]
        entry = self._readers.get(fp)
        if entry is None:
            raise DecodeError("unknown_schema", f"unknown writer schema fingerprint {fp.hex()}: not in the catalog")
        writer, reader = entry
        body = BytesIO(data[HEADER_LEN:])
        try:
            record = schemaless_reader(body, writer.parsed, reader)
        except Exception as exc:
            raise DecodeError("corrupt", f"{writer.name} v{writer.version}: body does not decode: {exc!r}") from exc
        left = len(data) - HEADER_LEN - body.tell()
        if left:  # a body that parses but does not end where the record does was not written with this schema
            raise DecodeError("corrupt", f"{writer.name} v{writer.version}: {left} bytes after the end of the record")
        return Decoded(writer.name, writer.version, record)  # type: ignore[arg-type]

    # --- Confluent's wire format ----------------------------------------------------------

    def missing_ids(self, values: Iterable[bytes | None]) -> set[int]:
        """Schema ids of Confluent-framed ``values`` not resolved yet (empty without a registry): cheap, no I/O."""
        if self.registry is None:
            return set()
        now = time.monotonic()
        out: set[int] = set()
        for v in values:
            if v and len(v) >= CONFLUENT_HEADER_LEN and v[0] == CONFLUENT_MAGIC:
                sid = int.from_bytes(v[1:CONFLUENT_HEADER_LEN], "big")
                known = self._by_id.get(sid)
                if known is None or (isinstance(known, tuple) and known[1] < now):
                    out.add(sid)
        return out

    def resolve_ids(self, ids: Iterable[int]) -> None:
        """Ask the registry for each id (blocking HTTP: run it off the event loop). Raises ``RegistryUnavailable``."""
        for sid in ids:
            self._resolve(sid)

    def _resolve(self, sid: int) -> _ById | tuple[DecodeError, float]:
        with self._lock:
            known = self._by_id.get(sid)
            if known is not None and not (isinstance(known, tuple) and known[1] < time.monotonic()):
                return known
            assert self.registry is not None
            try:
                text = self.registry.avro_schema(sid)  # RegistryUnavailable propagates: the record is fine, retry
            except NotAvroSchema as exc:
                resolved: _ById | tuple[DecodeError, float] = (DecodeError(
                    "not_avro", f"schema id {sid} is a {exc.schema_type} schema, not Avro"), float("inf"))
            else:
                if text is None:
                    resolved = (DecodeError("unknown_schema_id", f"schema id {sid} is unknown to the schema registry"),
                                time.monotonic() + UNKNOWN_ID_SECONDS)
                else:
                    try:
                        resolved = self._by_writer(sid, text)
                    except DecodeError as exc:
                        resolved = (exc, float("inf"))  # an id's schema never changes
            self._by_id[sid] = resolved
            return resolved

    def _by_writer(self, sid: int, text: str) -> _ById:
        from schemas.compat import problems

        try:
            raw = json.loads(text)
            writer = parse_schema(raw)
        except Exception as exc:
            raise DecodeError("incompatible_schema", f"schema id {sid}: not a valid Avro schema: {exc}") from exc
        if not isinstance(writer, dict) or writer.get("type") != "record":
            raise DecodeError("incompatible_schema", f"schema id {sid} is not an Avro record")
        name = writer["name"].rsplit(".", 1)[-1]
        if name not in self.catalog.versions:
            raise DecodeError("unknown_schema", f"schema id {sid} is the record {writer['name']}, which the catalog does not "
                                                "hold (a new event type needs its .avsc in HERALD_SCHEMAS_DIR)")
        latest = self.catalog.latest(name)
        found = problems(latest.raw, raw)
        if found:
            raise DecodeError("incompatible_schema", f"schema id {sid} ({writer['name']}): Herald's {name} "
                                                     f"v{latest.version} cannot read it: {'; '.join(found)}")
        fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(writer), "CRC-64-AVRO"))
        same = self.catalog.by_fingerprint.get(fp)
        if same is not None and same.name == name:
            return _ById(name, same.version, same.parsed, None if same is latest else latest.parsed)
        return _ById(name, 0, writer, _extended_reader(latest.raw, raw) or latest.parsed)

    def _decode_confluent(self, data: bytes) -> Decoded:
        sid = int.from_bytes(data[1:CONFLUENT_HEADER_LEN], "big")
        if self.registry is None:
            raise DecodeError("no_registry", f"Confluent wire format (schema id {sid}) but no schema registry is configured "
                                             "(HERALD_SCHEMA_REGISTRY__URL)")
        known = self._by_id.get(sid)
        if known is None or (isinstance(known, tuple) and known[1] < time.monotonic()):
            known = self._resolve(sid)
        if isinstance(known, tuple):
            raise known[0]
        body = BytesIO(data[CONFLUENT_HEADER_LEN:])
        try:
            record = schemaless_reader(body, known.writer, known.reader)
        except Exception as exc:
            raise DecodeError("corrupt", f"{known.name} (schema id {sid}): body does not decode: {exc!r}") from exc
        left = len(data) - CONFLUENT_HEADER_LEN - body.tell()
        if left:
            raise DecodeError("corrupt", f"{known.name} (schema id {sid}): {left} bytes after the end of the record")
        return Decoded(known.name, known.version, record, sid)  # type: ignore[arg-type]

    def fingerprint_of(self, data: bytes) -> str | None:
        return data[2:HEADER_LEN].hex() if len(data) >= HEADER_LEN and data[:2] == MAGIC else None


def _extended_reader(reader: dict[str, Any], writer: dict[str, Any]) -> dict[str, Any] | None:
    """The reader schema plus the writer's top-level fields it lacks (their types as written), or None when there are
    none or the result does not parse (a named type defined twice): then the plain reader is used."""
    known = {f["name"] for f in reader["fields"]} | {a for f in reader["fields"] for a in f.get("aliases", [])}
    extra = [f for f in writer["fields"] if f["name"] not in known]
    if not extra:
        return None
    try:
        return parse_schema({**reader, "fields": [*reader["fields"], *extra]})  # type: ignore[return-value]
    except Exception:  # noqa: BLE001 - only an optimisation of what the reader sees; the plain reader still works
        return None
