"""DLQ selection filters, time parsing, counts, and what a replay sends (and refuses to send)."""
from __future__ import annotations

import pytest

from infra.kafka import dead_letters as h
from infra.kafka.dead_letters import DeadLetter, dead_letter
from infra.kafka.records import InRecord
from producers.dlq import REPLAY_OF, Entry, Selection, counts, parse_time, plan_replay, replay_record

DLQ = "herald.dlq"


def entry(offset: int = 0, stage: str = "deliver", reason: str = "Retryable", origin: str = "herald.deliver.email",
          failed_at: int = 1_000, replays: int | None = None, replay_of: str | None = None, partition: int = 0) -> Entry:
    headers = [("herald-trace-id", b"tr"), ("x-upstream", b"kept"),
               (h.ORIGIN_TOPIC, origin.encode()), (h.STAGE, stage.encode()), (h.ERROR_CLASS, reason.encode()),
               (h.ERROR_TEXT, b"boom"), (h.FAILED_AT, str(failed_at).encode())]
    if replays is not None:
        headers.append((h.REPLAYS, str(replays).encode()))
    if replay_of is not None:
        headers.append((REPLAY_OF, replay_of.encode()))
    return Entry(partition, offset, failed_at, b"user-1", b"\xc3\x01original", headers)


@pytest.mark.parametrize(
    "sel, expected",
    [
        (Selection(), [0, 1, 2, 3]),
        (Selection(stages=frozenset({"route"})), [1]),
        (Selection(error_classes=frozenset({"not_avro", "no_route"})), [1, 2]),
        (Selection(origin_topics=frozenset({"herald.events"})), [1, 2]),
        (Selection(since_ms=2_000), [1, 2, 3]),                 # since is inclusive
        (Selection(until_ms=3_000), [0, 1]),                    # until is exclusive
        (Selection(since_ms=2_000, until_ms=4_000, stages=frozenset({"decode"})), [2]),
        (Selection(limit=2), [0, 1]),
        (Selection(stages=frozenset({"deliver"}), limit=1), [0]),  # limit counts matches, not records read
        (Selection(stages=frozenset({"render"})), []),
    ],
)
def test_selection(sel, expected):
    entries = [
        entry(0, "deliver", "Retryable", "herald.deliver.email", 1_000),
        entry(1, "route", "no_route", "herald.events", 2_000),
        entry(2, "decode", "not_avro", "herald.events", 3_000),
        entry(3, "deliver", "Permanent", "herald.deliver.sms", 4_000),
    ]
    assert [e.offset for e in sel.apply(entries)] == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("90m", 10_000_000 - 90 * 60_000),
        ("2h", 10_000_000 - 7_200_000),
        ("1.5s", 10_000_000 - 1_500),
        ("1970-01-01T00:00:10", 10_000),          # naive = UTC
        ("1970-01-01T01:00:10+01:00", 10_000),
        ("1970-01-02", 86_400_000),
    ],
)
def test_parse_time(text, expected):
    assert parse_time(text, now=10_000_000) == expected


@pytest.mark.parametrize("text", ["yesterday", "5 parsecs", "", "-3h"])
def test_parse_time_rejects_nonsense_with_a_hint(text):
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time(text, now=0)


def test_counts_by_stage_and_reason():
    c = counts([entry(0, "decode", "not_avro"), entry(1, "decode", "not_avro"), entry(2, "route", "no_route")])
    assert c == {("decode", "not_avro"): 2, ("route", "no_route"): 1}


def test_missing_headers_read_as_defaults():
    e = Entry(2, 7, 5_000, None, None, [])
    assert (e.stage, e.error_class, e.origin_topic, e.attempts, e.replays, e.failed_at_ms, e.coord) == (
        "?", "?", None, 1, 0, 5_000, "2:7")


def test_replay_sends_the_original_home_with_the_why_removed_and_the_count_up():
    e = entry(offset=9, replays=1, partition=2)
    r = replay_record(e)
    assert (r.topic, r.key, r.value) == ("herald.deliver.email", b"user-1", b"\xc3\x01original")
    assert r.headers == [("herald-trace-id", b"tr"), ("x-upstream", b"kept"), (h.REPLAYS, b"2"), (REPLAY_OF, b"2:9")]


def test_a_replay_that_fails_again_is_dead_lettered_with_its_count_and_names_what_it_replayed():
    r = replay_record(entry(offset=4))
    again = dead_letter(InRecord(r.topic, 1, 77, r.key, r.value, r.headers), DeadLetter("deliver", "Permanent", "no"), DLQ)
    e = Entry(0, 5, 0, again.key, again.value, again.headers)
    assert (e.replays, e.replay_of, e.origin_topic, e.stage, e.value) == (1, "0:4", r.topic, "deliver", r.value)
    assert e.header("x-upstream") == "kept"


def test_plan_skips_superseded_over_the_limit_and_originless_dead_letters():
    entries = [
        entry(0),                              # replayed before and failed again (entry 3 names it)
        entry(1, replays=3),                   # at the limit
        Entry(0, 2, 0, b"k", b"v", [(h.STAGE, b"decode")]),   # no origin header
        entry(3, replays=1, replay_of="0:0"),  # the newer copy: replayable
        entry(4),
    ]
    superseded = {e.replay_of for e in entries if e.replay_of}
    plan = plan_replay(entries, superseded, max_replays=3)
    assert [e.offset for e, _ in plan.records] == [3, 4]
    assert sum(plan.skipped.values()) == 3
    assert {k.split(" ")[0] for k in plan.skipped} == {"superseded", "replay", "no"}
