"""Committed offsets handed from one consumer group to another: an agent that moves from Faust (group ``{app_id}``) to
the batch engine (group ``{app_id}-<agent>``) starts where Faust left its topics, not at their earliest offset.

Without it a moved agent would read every retained record again (``auto.offset.reset=earliest``): nothing would be
sent twice (the de-duplication claims and the ledger hold), but hours of work would be done again.
"""
from __future__ import annotations

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient


def committed(admin: AdminClient, group: str, topics: set[str], timeout: float = 10.0) -> list[TopicPartition]:
    """The offsets ``group`` committed on ``topics`` (none for a group that never committed)."""
    fut = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=timeout)[group]
    return [TopicPartition(tp.topic, tp.partition, tp.offset) for tp in fut.result(timeout).topic_partitions or []
            if tp.topic in topics and tp.offset >= 0]


def adopt_offsets(admin: AdminClient, group: str, previous: str, topics: set[str],
                  timeout: float = 10.0) -> list[TopicPartition]:
    """When ``group`` has committed nothing on ``topics`` and ``previous`` has, commit ``previous``'s offsets for
    ``group``; returns what was adopted. Call it before ``group``'s consumer joins (the broker only alters the offsets
    of a group without members)."""
    if committed(admin, group, topics, timeout):
        return []
    offsets = committed(admin, previous, topics, timeout)
    if offsets:
        admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, offsets)],
                                           request_timeout=timeout)[group].result(timeout)
    return offsets
