"""Avro single-object encoding: ``C3 01`` + 8-byte CRC-64-AVRO fingerprint + body.

The fingerprint names the writer schema in the catalog; the reader resolves it
against its own (latest) version, so old and new producers interoperate
without a schema-registry server. This is the only module that reads or
writes Avro bytes.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from schemas.catalog import Catalog, SchemaVersion, load_catalog

MAGIC = b"\xc3\x01"
HEADER_LEN = 10


class DecodeError(ValueError):
    """Bytes that are not a catalogued single-object Avro record: bad input, never a crash."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # "not_avro" | "unknown_schema" | "corrupt"


@dataclass(frozen=True)
class Decoded:
    name: str        # short record name, e.g. "OrderPlaced"
    version: int     # writer version
    record: dict[str, Any]


class Codec:
    def __init__(self, catalog: Catalog | None = None) -> None:
        self.catalog = catalog or load_catalog()
        # writer fingerprint -> (writer schema, reader schema or None when identical, reader version)
        self._readers: dict[bytes, tuple[SchemaVersion, dict | None]] = {}
        for fp, v in self.catalog.by_fingerprint.items():
            latest = self.catalog.latest(v.name)
            self._readers[fp] = (v, None if latest is v else latest.parsed)

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
        if not data or len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise DecodeError("not_avro", "not Avro single-object encoding (expected the C3 01 marker)")
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

    def fingerprint_of(self, data: bytes) -> str | None:
        return data[2:HEADER_LEN].hex() if len(data) >= HEADER_LEN and data[:2] == MAGIC else None
