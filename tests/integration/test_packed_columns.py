"""Packed columns (``infra.db.pack``): what PostgreSQL splits is exactly what was packed, whatever the values hold."""
from __future__ import annotations

import psycopg
import pytest

from infra.db import NULL, SEP, pack, pack_ints, packed, packed_ints

HOSTILE = [
    [],
    [""],
    ["", ""],
    [None],
    ["a", None, "", "b"],
    [f"user{SEP}id", "plain"],            # a value holding the delimiter
    [f"x{NULL}", None, NULL],             # a value holding, or equal to, the null marker
    [SEP, NULL, SEP + NULL, "\t\n\r"],
    ["Zoë ünïcödé 🎉", "{\"a\",NULL}", "\\", "'; DROP TABLE x; --", "NULL"],
]


@pytest.mark.parametrize("values", HOSTILE)
def test_a_packed_text_column_reads_back_as_it_was_packed(db: psycopg.Connection, values: list[str | None]) -> None:
    got = db.execute(f"SELECT {packed('c')}", pack("c", values)).fetchone()
    assert got is not None and got[0] == values


def test_a_column_holding_both_markers_switches_to_random_ones(db: psycopg.Connection) -> None:
    values = [f"{SEP}{NULL}", None, "x"]
    params = pack("c", values)
    assert params["c_sep"] != SEP and params["c_null"] != NULL
    got = db.execute(f"SELECT {packed('c')}", params).fetchone()
    assert got is not None and got[0] == values


@pytest.mark.parametrize("values", [[], [0], [-5, 2**62, 50]])
def test_a_packed_integer_column_reads_back(db: psycopg.Connection, values: list[int]) -> None:
    got = db.execute(f"SELECT {packed_ints('n')}", {"n": pack_ints(values)}).fetchone()
    assert got is not None and got[0] == values
