"""A dead letter always fits the broker's limit and still says why, what it was and how to recognise it."""
from __future__ import annotations

import hashlib

from infra.kafka.dead_letters import (
    ERROR_CLASS,
    HEADERS_DROPPED,
    ORIGIN_TOPIC,
    STAGE,
    TRUNCATED,
    VALUE_BYTES,
    VALUE_SHA256,
    DeadLetter,
    dead_letter,
)
from infra.kafka.records import TRACE, InRecord, record_size
from producers.dlq import Entry, plan_replay

LIMIT = 1_000_000


def test_a_record_just_under_the_broker_limit_becomes_a_dead_letter_that_fits():
    junk = bytes(range(256)) * (999_952 // 256) + b"x" * (999_952 % 256)
    rec = InRecord("herald.events", 4, 17, b"user-1", junk, [(TRACE, b"t-1")])
    out = dead_letter(rec, DeadLetter("decode", "not_avro", "bad magic"), "herald.dlq", LIMIT)
    h = dict(out.headers)
    assert record_size(out.key, out.value, out.headers) <= LIMIT
    assert h[STAGE] == b"decode" and h[ERROR_CLASS] == b"not_avro" and h[ORIGIN_TOPIC] == b"herald.events" and h[TRACE] == b"t-1"
    assert h[TRUNCATED] == b"1" and int(h[VALUE_BYTES]) == len(junk)
    assert h[VALUE_SHA256] == hashlib.sha256(junk).hexdigest().encode()
    assert junk.startswith(out.value) and len(out.value) > 900_000 and out.key == b"user-1"


def test_a_small_dead_letter_keeps_everything_untouched():
    rec = InRecord("herald.events", 0, 1, b"k", b"value", [("x-upstream", b"1")])
    out = dead_letter(rec, DeadLetter("decode", "not_avro", "x"), "herald.dlq", LIMIT)
    assert out.value == b"value" and ("x-upstream", b"1") in out.headers and TRUNCATED not in dict(out.headers)


def test_huge_upstream_headers_are_dropped_before_the_why():
    rec = InRecord("herald.events", 0, 1, b"k", b"v" * 10, [("big", b"h" * 999_000), ("small", b"s")])
    out = dead_letter(rec, DeadLetter("route", "no_route", "x" * 5000), "herald.dlq", LIMIT)
    h = dict(out.headers)
    assert record_size(out.key, out.value, out.headers) <= LIMIT
    assert "big" not in h and h["small"] == b"s" and h[HEADERS_DROPPED] == b"1" and h[ERROR_CLASS] == b"no_route"


def test_a_cut_dead_letter_is_not_replayed():
    rec = InRecord("herald.events", 0, 1, b"k", b"z" * 1_200_000)
    out = dead_letter(rec, DeadLetter("decode", "too_large", "x"), "herald.dlq", LIMIT)
    entry = Entry(partition=0, offset=5, timestamp_ms=0, key=out.key, value=out.value, headers=out.headers)
    plan = plan_replay([entry], set(), 3)
    assert not plan.records and sum(plan.skipped.values()) == 1
    assert "cut" in next(iter(plan.skipped))
