"""Herald's topics (DESIGN.md §3): partitions, replication and retention from the settings, their creation,
and what the cluster holds of them (partitions, replication factor, min.insync.replicas, consumer lag).

Durability comes from ``settings.topics``; unset, it follows the cluster: a replication factor of
min(3, brokers) and min.insync.replicas 2 once there are 3 replicas (1 below), so a single node works and a
3-broker cluster survives a broker with every acknowledged write (the producers use acks=all).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, OffsetSpec

from infra.kafka.config import admin_config
from infra.settings import CHANNELS, Settings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    what: str
    retention_ms: int | None = None


@dataclass(frozen=True)
class Durability:
    replication_factor: int
    min_insync_replicas: int


@dataclass
class TopicState:
    """One Herald topic as the cluster holds it (``exists`` False: not created yet)."""

    name: str
    wanted_partitions: int
    wanted_rf: int
    exists: bool = False
    partitions: int = 0
    replication_factor: int = 0
    min_insync_replicas: int | None = None
    lag: dict[str, int] = field(default_factory=dict)   # consumer group → records not yet committed

    def mismatch(self) -> str | None:
        """One line when the topic exists with other partitions or another replication factor than the settings say."""
        if not self.exists:
            return None
        wrong = []
        if self.partitions != self.wanted_partitions:
            wrong.append(f"{self.partitions} partitions, the settings say {self.wanted_partitions}")
        if self.replication_factor != self.wanted_rf:
            wrong.append(f"replication factor {self.replication_factor}, the settings say {self.wanted_rf}")
        return f"{self.name}: {'; '.join(wrong)}" if wrong else None

    def as_dict(self) -> dict[str, Any]:
        return {"topic": self.name, "exists": self.exists, "partitions": self.partitions,
                "replication_factor": self.replication_factor, "min_insync_replicas": self.min_insync_replicas,
                "wanted_partitions": self.wanted_partitions, "wanted_replication_factor": self.wanted_rf,
                "lag": self.lag}


@dataclass
class EnsureReport:
    created: list[str]
    mismatched: list[str]   # one line each: the topic and what differs from the settings


def events_topic(settings: Settings, critical: bool = False) -> str:
    """Where events go: ``events``, or ``events.critical`` for those of a critical category (a password reset), which
    an agent of its own routes, never behind a backlog of orders."""
    return settings.topic("events.critical" if critical else "events")


def deliver_topic(settings: Settings, channel: str, lane: str = "interactive", critical: bool = False) -> str:
    """A channel's deliver topic: ``deliver.email``, ``deliver.email.bulk``, or for the interactive lane's critical
    categories (a password reset) ``deliver.email.critical``, read by an agent of its own."""
    if lane == "bulk":
        return settings.topic(f"deliver.{channel}.bulk")
    return settings.topic(f"deliver.{channel}.critical" if critical else f"deliver.{channel}")


def topic_specs(settings: Settings) -> list[TopicSpec]:
    big, small = settings.partitions, settings.small_partitions
    keep = settings.topics.retention_ms
    specs = [
        TopicSpec(events_topic(settings), big, "domain events and NotificationRequested", keep),
        TopicSpec(events_topic(settings, critical=True), small,
                  "events of a critical category (security): routed by an agent of its own", keep),
        TopicSpec(settings.topic("bulk"), big, "CampaignMessage (bulk lane)", keep),
    ]
    for channel in CHANNELS:
        specs.append(TopicSpec(deliver_topic(settings, channel), big, f"rendered {channel} deliveries", keep))
        specs.append(TopicSpec(deliver_topic(settings, channel, "bulk"), big, f"rendered bulk {channel} deliveries", keep))
        specs.append(TopicSpec(deliver_topic(settings, channel, critical=True), small,
                               f"rendered critical {channel} deliveries (security): a lane of their own", keep))
    for topic in settings.retry_topics:
        specs.append(TopicSpec(topic, small, "failed deliveries waiting for their next attempt", keep))
    specs += [
        TopicSpec(settings.topic("dlq"), small, "dead letters, reason in headers", settings.topics.dlq_retention_ms),
        TopicSpec(settings.topic("status"), big, "status changes", keep),
        TopicSpec(settings.topic("receipts"), small, "provider receipts", keep),
    ]
    return specs


def durability(settings: Settings, brokers: int) -> Durability:
    """The replication factor and min.insync.replicas for a cluster of ``brokers`` (the settings win when set)."""
    rf = settings.topics.replication_factor or max(1, min(3, brokers))
    isr = settings.topics.min_insync_replicas or (2 if rf >= 3 else 1)
    return Durability(rf, min(isr, rf))


def admin_client(settings: Settings, **overrides: Any) -> AdminClient:
    return AdminClient(admin_config(settings, **overrides))


def _new_topic(spec: TopicSpec, d: Durability) -> NewTopic:
    config = {"min.insync.replicas": str(d.min_insync_replicas)}
    if spec.retention_ms is not None:
        config["retention.ms"] = str(spec.retention_ms)
    return NewTopic(spec.name, num_partitions=spec.partitions, replication_factor=d.replication_factor, config=config)


def ensure(settings: Settings, timeout: float = 30.0, admin: AdminClient | None = None) -> EnsureReport:
    """Create the missing topics; report (never change) the ones whose partitions or replication factor differ."""
    admin = admin or admin_client(settings)
    md = admin.list_topics(timeout=timeout)
    d = durability(settings, len(md.brokers))
    specs = topic_specs(settings)
    mismatched = []
    for spec in specs:
        t = md.topics.get(spec.name)
        if t is None or t.error is not None:
            continue
        state = TopicState(spec.name, spec.partitions, d.replication_factor, True, len(t.partitions),
                           _rf(t))
        if line := state.mismatch():
            mismatched.append(line)
    wanted = [s for s in specs if s.name not in md.topics]
    created: list[str] = []
    if wanted:
        futures = admin.create_topics([_new_topic(s, d) for s in wanted], operation_timeout=timeout)
        for name, fut in futures.items():
            try:
                fut.result(timeout)
                created.append(name)
            except KafkaException as exc:  # TOPIC_ALREADY_EXISTS from a racing creator is fine
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
    return EnsureReport(created, mismatched)


def resolved(settings: Settings, timeout: float = 30.0) -> Settings:
    """``settings`` with the topics' replication factor and min ISR filled in from the cluster where unset."""
    if settings.topics.replication_factor is not None and settings.topics.min_insync_replicas is not None:
        return settings
    brokers = len(admin_client(settings).list_topics(timeout=timeout).brokers)
    d = durability(settings, brokers)
    topics = settings.topics.model_copy(update={"replication_factor": d.replication_factor,
                                                "min_insync_replicas": d.min_insync_replicas})
    return settings.model_copy(update={"topics": topics})


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create the missing topics; returns the names created. Harmless when they exist."""
    return ensure(settings, timeout).created


def _rf(t) -> int:
    return min((len(p.replicas) for p in t.partitions.values()), default=0)


def herald_groups(settings: Settings, admin: AdminClient, timeout: float = 10.0) -> list[str]:
    """The workers' consumer groups: ``{app_id}`` (the Faust agents) and ``{app_id}-<agent>`` (the batch engine)."""
    result = admin.list_consumer_groups(request_timeout=timeout).result(timeout)
    names = [g.group_id for g in result.valid]
    return sorted(n for n in names if n == settings.app_id or n.startswith(settings.app_id + "-"))


def describe(settings: Settings, timeout: float = 10.0, admin: AdminClient | None = None,
             with_lag: bool = True) -> list[TopicState]:
    """Every Herald topic as the cluster holds it, with min.insync.replicas and lag per consumer group."""
    admin = admin or admin_client(settings)
    md = admin.list_topics(timeout=timeout)
    d = durability(settings, len(md.brokers))
    states: list[TopicState] = []
    for spec in topic_specs(settings):
        s = TopicState(spec.name, spec.partitions, d.replication_factor)
        t = md.topics.get(spec.name)
        if t is not None and t.error is None:
            s.exists, s.partitions, s.replication_factor = True, len(t.partitions), _rf(t)
        states.append(s)
    present = {s.name: s for s in states if s.exists}
    if not present:
        return states
    resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in present]
    for res, fut in admin.describe_configs(resources, request_timeout=timeout).items():
        entry = fut.result(timeout).get("min.insync.replicas")
        if entry is not None and entry.value is not None:
            present[res.name].min_insync_replicas = int(entry.value)
    if with_lag:
        _add_lag(settings, admin, md, present, timeout)
    return states


def _add_lag(settings: Settings, admin: AdminClient, md, present: dict[str, TopicState], timeout: float) -> None:
    parts = [TopicPartition(n, p) for n in present for p in md.topics[n].partitions]
    ends = {}
    for tp, fut in admin.list_offsets({tp: OffsetSpec.latest() for tp in parts}, request_timeout=timeout).items():
        ends[(tp.topic, tp.partition)] = fut.result(timeout).offset
    groups = herald_groups(settings, admin, timeout)
    if not groups:
        return
    for group in groups:   # the admin API takes one group a request
        fut = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=timeout)[group]
        for tp in fut.result(timeout).topic_partitions:
            state = present.get(tp.topic)
            if state is None or tp.offset < 0:
                continue
            end = ends.get((tp.topic, tp.partition), tp.offset)
            state.lag[group] = state.lag.get(group, 0) + max(0, end - tp.offset)
