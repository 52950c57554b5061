"""Backward compatibility: can a reader with the new schema read data written with an old one?

The verdict is Apache Avro's own: ``avro.compatibility.ReaderWriterCompatibilityChecker``,
the Python port of Java's ``SchemaCompatibility`` that Confluent Schema Registry runs.
It checks names (a renamed record, enum or fixed needs an alias naming the old full
name), fixed sizes, enum symbols (or a reader default), new fields' defaults, union
branches and the promotions (int → long → float → double, string ↔ bytes).

One thing is done before the check: aliases written without a namespace are qualified
with the namespace of their type, as the Avro specification says and Java's parser
does (Python's ``avro`` keeps them as written, so ``"aliases": ["Old"]`` in namespace
``shop`` would not match the writer's ``shop.Old``).
"""
from __future__ import annotations

import json
from typing import Any

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from schemas.catalog import Catalog

_NAMED = ("record", "error", "enum", "fixed")
LEVELS = ("NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE")


def _qualify_aliases(s: Any, ns: str | None = None) -> Any:
    """A copy of ``s`` whose named types' aliases are full names."""
    if isinstance(s, list):
        return [_qualify_aliases(b, ns) for b in s]
    if not isinstance(s, dict):
        return s
    out = dict(s)
    t = s.get("type")
    if t in _NAMED and "name" in s:
        name = s["name"]
        ns = name.rsplit(".", 1)[0] if "." in name else s.get("namespace", ns)
        if isinstance(s.get("aliases"), list):
            out["aliases"] = [a if "." in a or not ns else f"{ns}.{a}" for a in s["aliases"]]
        if "fields" in s:
            out["fields"] = [{**f, "type": _qualify_aliases(f["type"], ns)} for f in s["fields"]]
    elif isinstance(t, (dict, list)):
        out["type"] = _qualify_aliases(t, ns)
    for k in ("items", "values"):
        if k in s:
            out[k] = _qualify_aliases(s[k], ns)
    return out


def parse(schema: Any) -> avro.schema.Schema:
    """Apache Avro's parsed form of a schema (a dict, a list or JSON text)."""
    raw = json.loads(schema) if isinstance(schema, str) else schema
    return avro.schema.parse(json.dumps(_qualify_aliases(raw)))


def problems(reader: Any, writer: Any) -> list[str]:
    """Why ``reader`` cannot read data written with ``writer`` (Apache Avro's verdict); empty when compatible."""
    result = ReaderWriterCompatibilityChecker().get_compatibility(parse(reader), parse(writer))
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    kinds = ", ".join(sorted({i.value for i in result.incompatibilities}))
    raw = json.loads(reader) if isinstance(reader, str) else reader
    where = sorted({_readable(loc, raw) for loc in result.locations if loc != "/"}) or ["<root>"]
    return [f"{kinds} at {', '.join(where)}: {'; '.join(sorted(result.messages))}"]


def _readable(location: str, schema: Any) -> str:
    """Avro's JSON-pointer location (``/fields/5/type/items``) with field names: ``total_cents``, ``items[]``."""
    out: list[str] = []
    node = schema
    tokens = [t for t in location.split("/") if t]
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "fields" and i + 1 < len(tokens) and isinstance(node, dict) and tokens[i + 1].isdigit():
            fields = node.get("fields", [])
            k = int(tokens[i + 1])
            field: dict[str, Any] = fields[k] if k < len(fields) else {"name": tokens[i + 1], "type": None}
            out.append(("." if out else "") + str(field["name"]))
            node = field["type"]
            i += 2
            continue
        if tok == "type":
            node = node.get("type") if isinstance(node, dict) and isinstance(node.get("type"), (dict, list)) else node
        elif tok in ("items", "values"):
            out.append("[]" if tok == "items" else "{}")
            node = node.get(tok) if isinstance(node, dict) else None
        elif tok.isdigit() and isinstance(node, list):
            out.append(f"<branch {tok}>")
            node = node[int(tok)] if int(tok) < len(node) else None
        else:
            out.append(f" ({tok})" if out else f"({tok})")
        i += 1
    return "".join(out) or "<root>"


def compatible(reader: Any, writer: Any) -> bool:
    return not problems(reader, writer)


def level_problems(level: str, new: Any, existing: list[Any]) -> list[str]:
    """Problems of registering ``new`` after ``existing`` (oldest first) under a Schema Registry compatibility level."""
    level = level.upper()
    if level not in LEVELS:
        raise ValueError(f"unknown compatibility level {level!r}; known: {', '.join(LEVELS)}")
    if level == "NONE" or not existing:
        return []
    against = existing if level.endswith("_TRANSITIVE") else existing[-1:]
    found: list[str] = []
    for i, old in enumerate(against):
        n = len(existing) - len(against) + i + 1
        if level.startswith(("BACKWARD", "FULL")):
            found += [f"the new schema cannot read version {n}: {p}" for p in problems(new, old)]
        if level.startswith(("FORWARD", "FULL")):
            found += [f"version {n} cannot read the new schema: {p}" for p in problems(old, new)]
    return found


def check_catalog(catalog: Catalog) -> dict[str, list[str]]:
    """For every schema with several versions: problems of each newer version reading every older one."""
    report: dict[str, list[str]] = {}
    for name, versions in catalog.versions.items():
        found: list[str] = []
        for newer_idx in range(1, len(versions)):
            reader = versions[newer_idx]
            for writer in versions[:newer_idx]:
                for p in problems(reader.raw, writer.raw):
                    found.append(f"v{reader.version} cannot read v{writer.version}: {p}")
        report[name] = found
    return report
