"""The schema catalog: every version of every ``.avsc`` under ``schemas/avro``.

Each version is identified by the CRC-64-AVRO fingerprint of its parsing
canonical form, which is what single-object encoding puts on the wire.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, cast

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas.canonical import canonical_form

_FILE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>\d+)\.avsc$")


@dataclass(frozen=True)
class SchemaVersion:
    name: str           # short name, e.g. "OrderPlaced"
    fullname: str       # e.g. "shop.events.OrderPlaced"
    version: int
    path: str
    raw: dict[str, Any] = field(repr=False, hash=False, compare=False)
    parsed: dict[str, Any] = field(repr=False, hash=False, compare=False)
    fingerprint: bytes = b""  # 8 bytes, little-endian as on the wire
    # fingerprints other libraries compute for the same schema (accepted when reading)
    aliases: tuple[bytes, ...] = ()

    @property
    def fingerprint_hex(self) -> str:
        return self.fingerprint.hex()


class CatalogError(ValueError):
    pass


class Catalog:
    def __init__(self, versions: list[SchemaVersion]) -> None:
        self.by_fingerprint: dict[bytes, SchemaVersion] = {}
        self.versions: dict[str, list[SchemaVersion]] = {}
        for v in sorted(versions, key=lambda v: (v.name, v.version)):
            if v.fingerprint in self.by_fingerprint:
                other = self.by_fingerprint[v.fingerprint]
                raise CatalogError(f"{v.path} and {other.path} are the same schema (fingerprint {v.fingerprint_hex})")
            self.by_fingerprint[v.fingerprint] = v
            for alias in v.aliases:
                self.by_fingerprint.setdefault(alias, v)
            self.versions.setdefault(v.name, []).append(v)
        for name, vs in self.versions.items():
            numbers = [v.version for v in vs]
            if numbers != list(range(1, len(vs) + 1)):
                raise CatalogError(f"{name}: versions must be 1..n without gaps, found {numbers}")

    def latest(self, name: str) -> SchemaVersion:
        try:
            return self.versions[name][-1]
        except KeyError:
            raise CatalogError(f"no schema named {name!r} in the catalog (known: {', '.join(sorted(self.versions))})") from None

    def names(self) -> list[str]:
        return sorted(self.versions)


def load_version(path: str, text: str) -> SchemaVersion:
    m = _FILE.match(Path(path).name)
    if not m:
        raise CatalogError(f"{path}: schema files are named <Name>.v<N>.avsc")
    raw = json.loads(text)
    # the write hint makes fastavro skip re-parsing on every encode/decode (about 10 µs a record)
    # parse_schema is typed for any schema (a name, a union, a record); a catalog file's is a record object, checked next
    parsed = cast(dict[str, Any], fastavro.parse_schema(raw))
    if parsed.get("type") != "record" or parsed["name"].rsplit(".", 1)[-1] != m["name"]:
        raise CatalogError(f"{path}: must hold the record {m['name']}")
    canonical = to_parsing_canonical_form(parsed)
    fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    if canonical != canonical_form(raw):
        raise CatalogError(f"{path}: canonical forms disagree (fastavro vs schemas.canonical); report this schema")
    uncollapsed = canonical_form(raw, collapse_logical=False)
    aliases = () if uncollapsed == canonical else (bytes.fromhex(fingerprint(uncollapsed, "CRC-64-AVRO")),)
    return SchemaVersion(m["name"], parsed["name"], int(m["version"]), path, raw, parsed, fp, aliases)


def load_catalog(root: Path | None = None, extra: Path | None = None) -> Catalog:
    """Load every schema; ``root`` defaults to the packaged ``schemas/avro``; ``extra`` adds a folder's files
    (``HERALD_SCHEMAS_DIR``: upstream teams' new event types and versions beside the packaged ones)."""
    versions: list[SchemaVersion] = []
    if root is not None:
        versions += _folder(root)
    else:
        base = resources.files("schemas") / "avro"
        for sub in base.iterdir():
            if not sub.is_dir():
                continue
            for f in sub.iterdir():
                if f.name.endswith(".avsc"):
                    versions.append(load_version(f"{sub.name}/{f.name}", f.read_text()))
    if extra is not None:
        if not extra.is_dir():
            raise CatalogError(f"{extra}: no such folder (HERALD_SCHEMAS_DIR names a folder of <Name>.v<N>.avsc files)")
        versions += _folder(extra)
    return Catalog(versions)


def _folder(root: Path) -> list[SchemaVersion]:
    return [load_version(str(p), p.read_text()) for p in sorted(root.rglob("*.avsc"))]
