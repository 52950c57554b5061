"""Reading recipients' files line by line: what both campaigns and the users import share."""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Rejected:
    line: int
    reason: str


def json_objects(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]] | Rejected]:
    """(line number, object) per non-blank JSON-lines line; ``Rejected`` for one that is not a JSON object."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield Rejected(n, f"not JSON: {exc.msg}")
            continue
        if not isinstance(obj, dict):
            yield Rejected(n, "not a JSON object")
            continue
        yield n, obj
