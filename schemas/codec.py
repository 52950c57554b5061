"""Avro single-object encoding: ``C3 01`` + 8-byte CRC-64-AVRO fingerprint + body.

The fingerprint names the writer schema in the catalog; the reader resolves it
against its own (latest) version, so old and new producers interoperate
without a schema-registry server. This is the only module that reads or
writes Avro bytes.
"""
from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

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
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"{name} v{sv.version}: record does not match the schema: {exc}") from exc
        return buf.getvalue()

    def decode(self, data: bytes | None) -> Decoded:
        if not data or len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise DecodeError("not_avro", "not Avro single-object encoding (expected the C3 01 marker)")
        fp = data[2:HEADER_LEN]
        entry = self._readers.get(fp)
        if entry is None:
            raise DecodeError("unknown_schema", f"unknown writer schema fingerprint {fp.hex()}: not in the catalog")
        writer, reader = entry
        try:
            record = schemaless_reader(BytesIO(data[HEADER_LEN:]), writer.parsed, reader)
        except Exception as exc:  # noqa: BLE001 - fastavro raises many types on corrupt bodies
            raise DecodeError("corrupt", f"{writer.name} v{writer.version}: body does not decode: {exc!r}") from exc
        return Decoded(writer.name, writer.version, record)  # type: ignore[arg-type]

    def fingerprint_of(self, data: bytes) -> str | None:
        return data[2:HEADER_LEN].hex() if len(data) >= HEADER_LEN and data[:2] == MAGIC else None
