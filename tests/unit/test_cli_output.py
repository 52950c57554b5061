"""What every `herald ... list` prints: with --json one JSON object per line (scripts read them), else a table."""
from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console
from rich.table import Table

from infra.tools.cli.errors import CliError, json_object
from infra.tools.cli.output import print_rows

ROWS = [("welcome", 2, None), ("reset", 1, "security")]


def show(as_json: bool, **kw) -> str:
    out = io.StringIO()
    print_rows(ROWS, as_json, record=lambda r: {"code": r[0], "versions": r[1], "category": r[2]},
               table=Table("code", "versions", "category"), cells=lambda r: (r[0], str(r[1]), r[2] or "-"),
               console=Console(file=out, width=80), **kw)
    return out.getvalue()


def test_json_is_one_object_per_row_in_order_with_the_records_keys(capsys):
    show(True)
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == [{"code": "welcome", "versions": 2, "category": None},
                                                    {"code": "reset", "versions": 1, "category": "security"}]
    assert lines[0] == '{"code": "welcome", "versions": 2, "category": null}'   # the record's key order


def test_json_keys_sorted_when_asked(capsys):
    show(True, sort_keys=True)
    assert capsys.readouterr().out.splitlines()[0] == '{"category": null, "code": "welcome", "versions": 2}'


def test_without_json_a_table_with_the_columns_and_a_line_per_row():
    lines = [re.split("[│┃]", line) for line in show(False).splitlines() if re.search("[│┃]", line)]
    assert [[cell.strip() for cell in line[1:-1]] for line in lines] == [
        ["code", "versions", "category"], ["welcome", "2", "-"], ["reset", "1", "security"]]


def test_a_row_style_is_applied_to_that_row_only():
    out = io.StringIO()
    colours = Console(file=out, width=40, force_terminal=True, color_system="standard")
    print_rows(ROWS, False, record=lambda r: {}, table=Table("code"), cells=lambda r: (r[0],),
               style=lambda r: "red" if r[2] else None, console=colours)
    styled = [line for line in out.getvalue().splitlines() if "welcome" in line or "reset" in line]
    assert "\x1b[31m" not in styled[0] and "\x1b[31m" in styled[1]


def test_a_json_object_option_names_itself_when_it_is_not_one() -> None:
    assert json_object('{"a": 1}', "--vars") == {"a": 1}
    with pytest.raises(CliError, match=r"^--vars is not JSON: "):
        json_object("{x", "--vars")
    with pytest.raises(CliError, match=r"^--variables must be a JSON object$"):
        json_object("[1]", "--variables")
