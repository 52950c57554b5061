"""Consumer lag measured from the broker: committed offsets of a group against the log ends, independent of the
agents' own commits (a stuck agent, or one no worker runs, shows its lag growing).

A partition the group never committed on counts from its earliest offset (``auto.offset.reset=earliest``: an
agent that starts now reads it all).
"""
from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec


@dataclass(frozen=True, slots=True)
class Watched:
    """An agent, the consumer group it commits in and the topics it reads."""

    agent: str
    group: str
    topics: tuple[str, ...]


def partition_lag(committed: int, low: int, high: int) -> int:
    """Records of a partition the group has yet to read; a negative ``committed`` (none) starts at ``low``."""
    start = committed if committed >= 0 else low
    return max(0, high - max(start, low))


def sample_lag(admin: AdminClient, watched: list[Watched], timeout: float = 10.0) -> dict[tuple[str, str], int]:
    """``{(agent, topic): records behind}`` for every watched agent and each of its topics that exists (blocking)."""
    names = sorted({t for w in watched for t in w.topics})
    meta = admin.list_topics(timeout=timeout)
    parts = [TopicPartition(t, p) for t in names if (tm := meta.topics.get(t)) is not None and tm.error is None
             for p in tm.partitions]
    if not parts:
        return {}
    marks: dict[tuple[str, int], list[int]] = {(tp.topic, tp.partition): [0, 0] for tp in parts}
    for i, spec in enumerate((OffsetSpec.earliest(), OffsetSpec.latest())):
        for tp, fut in admin.list_offsets(dict.fromkeys(parts, spec), request_timeout=timeout).items():
            marks[(tp.topic, tp.partition)][i] = fut.result(timeout).offset
    committed: dict[tuple[str, str, int], int] = {}
    for group in sorted({w.group for w in watched}):  # the admin API takes one group a request
        asked = ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for t, p in marks])
        res = admin.list_consumer_group_offsets([asked], request_timeout=timeout)[group].result(timeout)
        committed.update({(group, tp.topic, tp.partition): tp.offset for tp in res.topic_partitions if not tp.error})
    out: dict[tuple[str, str], int] = {}
    for w in watched:
        for topic in w.topics:
            mine = [(p, lo_hi) for (t, p), lo_hi in marks.items() if t == topic]
            if mine:
                out[(w.agent, topic)] = sum(partition_lag(committed.get((w.group, topic, p), -1), lo, hi)
                                            for p, (lo, hi) in mine)
    return out
