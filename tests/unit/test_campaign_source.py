"""Recipient files in three formats; a bad line is reported with its number and the others still count."""
from __future__ import annotations

from pathlib import Path

import pytest

from producers.campaign import _chunks
from producers.campaign_source import Recipient, Rejected, SourceError, ordered_query, read_file


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_plain_ids_skip_blank_lines_and_comments(tmp_path):
    p = write(tmp_path, "ids.txt", "u1\n\n# vip list\n  u2  \nu3\n")
    assert list(read_file(p)) == [Recipient("u1"), Recipient("u2"), Recipient("u3")]


def test_csv_takes_user_id_and_makes_other_columns_variables(tmp_path):
    p = write(tmp_path, "r.csv", "user_id,first_name,coupon\nu1,Ada,X1\nu2,,X2\n,Bob,X3\n")
    assert list(read_file(p)) == [
        Recipient("u1", {"first_name": "Ada", "coupon": "X1"}),
        Recipient("u2", {"coupon": "X2"}),
        Rejected(4, "no user id"),
    ]


def test_csv_without_an_id_column_is_refused_before_anything_is_sent(tmp_path):
    p = write(tmp_path, "r.csv", "name,coupon\nAda,X1\n")
    with pytest.raises(SourceError, match="user_id"):
        list(read_file(p))


def test_json_lines(tmp_path):
    p = write(tmp_path, "r.jsonl", '{"user_id": "u1"}\n{"id": 2, "variables": {"a": "b"}}\nnot json\n[1]\n{"variables": {}}\n'
                                   '{"user_id": "u3", "variables": "x"}\n')
    out = list(read_file(p))
    assert out[:2] == [Recipient("u1"), Recipient("2", {"a": "b"})]
    assert [(r.line, r.reason.split(":")[0]) for r in out[2:]] == [
        (3, "not JSON"), (4, "not a JSON object"), (5, "no user_id"), (6, "variables is not an object")]


def test_missing_file(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        list(read_file(tmp_path / "nope.txt"))


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT id FROM users", "SELECT * FROM (SELECT id FROM users) AS recipients ORDER BY 1"),
        ("select id from users where locale = 'de';  ", "SELECT * FROM (select id from users where locale = 'de') AS recipients ORDER BY 1"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) AS recipients ORDER BY 1"),
    ],
)
def test_queries_are_read_in_a_stable_order(sql, expected):
    assert ordered_query(sql) == expected


@pytest.mark.parametrize("sql", ["DELETE FROM users", "DROP TABLE users", ""])
def test_only_select_queries(sql):
    with pytest.raises(SourceError, match="SELECT"):
        ordered_query(sql)


def test_chunks_skip_the_produced_prefix_and_collect_rejections():
    items = [Recipient(f"u{i}") for i in range(1, 8)]
    items.insert(3, Rejected(4, "no user id"))
    rejected, counter = [], [0]
    chunks = list(_chunks(items, skip=2, size=2, rejected=rejected, counter=counter))
    assert [(i, [r.user_id for r in c]) for i, c, _ in chunks] == [(0, ["u3", "u4"]), (1, ["u5", "u6"]), (2, ["u7"])]
    # the ordinal of each chunk's first recipient names its records, the same on a resume
    assert [first for _, _, first in chunks] == [2, 4, 6]
    assert rejected == [Rejected(4, "no user id")] and counter == [1]
