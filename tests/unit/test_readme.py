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


ROOT = README.parent
_FILE = re.compile(r"(?<![\w~./:-])((?:[\w-]+/)*[\w-]+\.(?:md|py|ya?ml|json|toml|avsc|sql|txt|cfg|ini))\b")
_PATH = re.compile(r"`((?:[\w.-]+/)+[\w.-]*)`")


def _named_paths(text: str) -> set[str]:
    return set(_FILE.findall(text)) | set(_PATH.findall(text))


def test_the_file_check_sees_what_a_reader_would_look_for():
    assert _named_paths("see DESIGN.md §4, `bench/`, `schemas/avro/events/` and streams/handlers/deliver.py") == {
        "DESIGN.md", "bench/", "schemas/avro/events/", "streams/handlers/deliver.py"}
    assert _named_paths("`~/.cache/herald/jars`, https://herald.example.com, a new `.avsc`") == set()


def test_the_readme_names_only_files_that_exist():
    # the layout table names sub-folders relative to their folder (`stages/` of `streams/`)
    bases = [ROOT, *(d for d in ROOT.iterdir() if d.is_dir() and not d.name.startswith("."))]
    missing = sorted(p for p in _named_paths(README.read_text()) if not any((b / p).exists() for b in bases))
    assert not missing, f"the README names files that are not in the repository: {missing}"
