"""The layer contract: schemas ← ground ← work (sinks, streams, producers, scheduler) ← tools.

Read from the source (no import runs): every ``import`` of a Herald module must point at the same
layer or a lower one. Inside the work layer, sinks import no other work package, and only streams
itself imports its runtime and handlers.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "infra", "sinks", "streams", "producers", "scheduler")
LAYERS = {"schemas": 0, "ground": 1, "work": 2, "tools": 3}


def layer(module: str) -> str:
    if module.startswith("infra.tools"):
        return "tools"
    top = module.split(".")[0]
    if top == "schemas":
        return "schemas"
    if top == "infra":
        return "ground"
    return "work"


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return [m for m in out if m.split(".")[0] in PACKAGES]


def modules() -> list[tuple[str, Path]]:
    found = []
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            found.append((".".join(p.relative_to(ROOT).with_suffix("").parts), p))
    return found


def test_nothing_imports_upward():
    wrong = []
    for name, path in modules():
        for target in imports(path):
            if LAYERS[layer(target)] > LAYERS[layer(name)]:
                wrong.append(f"{name} ({layer(name)}) imports {target} ({layer(target)})")
    assert not wrong, "\n".join(wrong)


def test_sinks_stand_alone_and_the_worker_runtime_stays_inside_streams():
    wrong = []
    for name, path in modules():
        top = name.split(".")[0]
        for target in imports(path):
            ttop = target.split(".")[0]
            if top == "sinks" and ttop in ("streams", "producers", "scheduler"):
                wrong.append(f"{name} imports {target}")
            if top in ("producers", "scheduler", "sinks") and target.startswith(("streams.runtime", "streams.handlers")):
                wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_the_tools_live_in_one_folder():
    infra_root = {p.name for p in (ROOT / "infra").iterdir()}
    assert not infra_root & {"cli", "sandbox", "stack", "seed.py", "children.py"}, "tools outside infra/tools"
