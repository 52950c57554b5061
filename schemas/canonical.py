"""Avro's Parsing Canonical Form, written out so that its one ambiguity is explicit.

The spec's [PRIMITIVES] rule turns ``{"type": "long", "logicalType": ...}`` into
``"long"`` (Java and fastavro do). Apache's Python ``avro`` keeps
``{"type":"long"}`` there, so its fingerprint of a schema with logical types
differs. Herald writes the standard fingerprint and also accepts the other
one when reading (see ``Catalog``), so events written with that library decode.
"""
from __future__ import annotations

import json
from typing import Any

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
_KEEP = ("name", "type", "fields", "symbols", "items", "values", "size")


def _full(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def canonical_form(schema: Any, collapse_logical: bool = True) -> str:
    seen: set[str] = set()

    def walk(s: Any, ns: str | None) -> Any:
        if isinstance(s, str):
            return s if s in _PRIMITIVES else _full(s, ns)
        if isinstance(s, list):
            return [walk(b, ns) for b in s]
        t = s["type"]
        if isinstance(t, (dict, list)) or (
                isinstance(t, str) and t not in _PRIMITIVES and t not in ("record", "enum", "fixed", "array", "map", "error")):
            return walk(t, ns)
        if t in _PRIMITIVES:
            return t if collapse_logical or "logicalType" not in s else {"type": t}
        if t in ("record", "error", "enum", "fixed"):
            ns = s.get("namespace", ns) if "." not in s["name"] else s["name"].rsplit(".", 1)[0]
            name = _full(s["name"], ns)
            if name in seen:
                return name
            seen.add(name)
            out: dict[str, Any] = {"name": name, "type": "record" if t == "error" else t}
            if t in ("record", "error"):
                out["fields"] = [{"name": f["name"], "type": walk(f["type"], ns)} for f in s["fields"]]
            elif t == "enum":
                out["symbols"] = s["symbols"]
            else:
                out["size"] = s["size"]
            return out
        if t == "array":
            return {"type": "array", "items": walk(s["items"], ns)}
        if t == "map":
            return {"type": "map", "values": walk(s["values"], ns)}
        raise ValueError(f"unknown schema type {t!r}")

    def order(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: order(x[k]) for k in _KEEP if k in x}
        if isinstance(x, list):
            return [order(v) for v in x]
        return x

    return json.dumps(order(walk(schema, None)), separators=(",", ":"))
