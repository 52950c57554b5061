"""Backward compatibility: can a reader with the new schema read data written with an old one?

Avro's resolution rules, checked structurally on parsed schemas:
fields new to the reader need defaults; matching fields must resolve
(with Avro's promotions); writer enum symbols must be known to the reader
(or the reader enum has a default); every writer union branch must resolve.
"""
from __future__ import annotations

from typing import Any

from schemas.catalog import Catalog

_PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "double": {"double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def _kind(s: Any) -> str:
    if isinstance(s, list):
        return "union"
    if isinstance(s, str):
        return s
    t = s["type"]
    return t if isinstance(t, str) else _kind(t)


def _named(s: Any, names: dict[str, Any]) -> Any:
    if isinstance(s, str) and s not in _PRIMITIVES:
        return names.get(s, s)
    if isinstance(s, dict) and s.get("type") in _PRIMITIVES and "logicalType" in s:
        return s["type"]
    return s


def _collect(s: Any, names: dict[str, Any]) -> None:
    if isinstance(s, list):
        for b in s:
            _collect(b, names)
    elif isinstance(s, dict):
        t = s.get("type")
        if t in ("record", "enum", "fixed") and "name" in s:
            names[s["name"]] = s
        for f in s.get("fields", []):
            _collect(f["type"], names)
        for k in ("items", "values"):
            if k in s:
                _collect(s[k], names)
        if isinstance(t, (dict, list)):
            _collect(t, names)


def problems(reader: Any, writer: Any, path: str = "", rn: dict | None = None, wn: dict | None = None) -> list[str]:
    """Why ``reader`` cannot read data written with ``writer``; empty when compatible."""
    if rn is None:
        rn, wn = {}, {}
        _collect(reader, rn)
        _collect(writer, wn)
    assert wn is not None
    r, w = _named(reader, rn), _named(writer, wn)
    rk, wk = _kind(r), _kind(w)
    here = path or "<root>"
    if wk == "union":
        out: list[str] = []
        for branch in w:
            out += problems(r, branch, path, rn, wn)
        return out
    if rk == "union":
        for branch in r:
            if not problems(branch, w, path, rn, wn):
                return []
        return [f"{here}: the writer's {wk} matches no branch of the reader's union"]
    if wk in _PROMOTIONS:
        return [] if rk in _PROMOTIONS[wk] else [f"{here}: {wk} cannot be read as {rk}"]
    if wk != rk:
        return [f"{here}: {wk} cannot be read as {rk}"]
    if wk == "null" or wk == "boolean":
        return []
    if wk == "array":
        return problems(r["items"], w["items"], f"{path}[]", rn, wn)
    if wk == "map":
        return problems(r["values"], w["values"], f"{path}{{}}", rn, wn)
    if wk == "fixed":
        return [] if r.get("size") == w.get("size") else [f"{here}: fixed size changed"]
    if wk == "enum":
        missing = set(w["symbols"]) - set(r["symbols"])
        if missing and "default" not in r:
            return [f"{here}: enum symbols {sorted(missing)} unknown to the reader and no default"]
        return []
    if wk == "record":
        out = []
        wfields = {f["name"]: f for f in w["fields"]}
        for f in r["fields"]:
            name = f"{path}.{f['name']}" if path else f["name"]
            if f["name"] in wfields:
                out += problems(f["type"], wfields[f["name"]]["type"], name, rn, wn)
            elif "default" not in f:
                out.append(f"{name}: new field without a default")
        return out
    return [f"{here}: unsupported schema kind {wk}"]


def check_catalog(catalog: Catalog) -> dict[str, list[str]]:
    """For every schema with several versions: problems of the latest reading each older one."""
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
