"""CLI errors: a message and what to do, never a traceback."""
from __future__ import annotations

import json
from typing import Any


class CliError(Exception):
    """Raised by commands for expected failures; printed as one red line, exit status 1."""


def json_object(text: str, option: str) -> dict[str, Any]:
    """The JSON object an option holds (``--vars '{"a": 1}'``), or a CliError naming the option."""
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise CliError(f"{option} is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise CliError(f"{option} must be a JSON object")
    return parsed
