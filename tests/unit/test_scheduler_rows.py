"""A stored scheduled row is republished exactly as stored; a row that can never be published says why; refusals back off."""
from __future__ import annotations

import re

import pytest

from scheduler.rows import BadRow, DueRow, headers_from_json, retry_delay, to_record


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (None, []),
        ({}, []),
        ({"herald-trace-id": "abc"}, [("herald-trace-id", b"abc")]),
        ({"a": "1", "b": "é"}, [("a", b"1"), ("b", "é".encode())]),
        ([["x", "1"], ["x", "2"]], [("x", b"1"), ("x", b"2")]),  # a repeated name keeps both, in order
        ({"herald-attempt": 3}, [("herald-attempt", b"3")]),     # numbers become their text
        ({"empty": None}, [("empty", None)]),
    ],
)
def test_headers_from_json(stored, expected):
    assert headers_from_json(stored) == expected


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        ("a string", "JSON object or a list of pairs"),
        ([["only-name"]], "not a [name, value] pair"),
        ([["", "v"]], "non-empty string"),
        ({"": "v"}, "non-empty string"),
    ],
)
def test_bad_headers_are_named(stored, message):
    with pytest.raises(BadRow, match=re.escape(message)):
        headers_from_json(stored)


def test_record_is_the_stored_bytes_unchanged():
    value = b"\xc3\x01" + bytes(range(40))
    rec = to_record(DueRow(7, "herald.deliver.sms", memoryview(b"user-1"), memoryview(value), {"herald-trace-id": "t"}))
    assert (rec.topic, rec.key, rec.value, rec.headers) == ("herald.deliver.sms", b"user-1", value, [("herald-trace-id", b"t")])


def test_a_row_without_a_key_keeps_none():
    assert to_record(DueRow(1, "t", None, b"v", {})).key is None


@pytest.mark.parametrize(("row", "message"), [(DueRow(1, "", b"k", b"v", {}), "no topic"), (DueRow(1, "t", b"k", None, {}), "no value")])
def test_unpublishable_rows(row, message):
    with pytest.raises(BadRow, match=message):
        to_record(row)


@pytest.mark.parametrize(("attempts", "delay"), [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (9, 256.0), (10, 300.0), (50, 300.0)])
def test_retry_delay_doubles_and_is_capped(attempts, delay):
    assert retry_delay(attempts) == delay
