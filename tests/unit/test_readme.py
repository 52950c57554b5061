"""The README's configuration table stays true to the settings object."""
from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from infra.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_in_the_readme_table_and_nothing_else():
    documented = set(re.findall(r"^\| `HERALD_([A-Z0-9_]+)` \|", README.read_text(), flags=re.M))
    actual = set()
    for name, field in Settings.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            actual |= {f"{name}__{s}".upper() for s in sub.model_fields}
        else:
            actual.add(name.upper())
    assert documented == actual, f"missing: {sorted(actual - documented)}; stale: {sorted(documented - actual)}"


def test_readme_shows_the_two_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
