"""Herald's topics (DESIGN.md §3) and their creation with configured partition counts."""
from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka.admin import AdminClient, NewTopic

from infra.settings import CHANNELS, Settings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    what: str


def deliver_topic(settings: Settings, channel: str, lane: str = "interactive") -> str:
    suffix = ".bulk" if lane == "bulk" else ""
    return settings.topic(f"deliver.{channel}{suffix}")


def topic_specs(settings: Settings) -> list[TopicSpec]:
    big, small = settings.partitions, settings.small_partitions
    specs = [
        TopicSpec(settings.topic("events"), big, "domain events and NotificationRequested"),
        TopicSpec(settings.topic("bulk"), big, "CampaignMessage (bulk lane)"),
    ]
    for channel in CHANNELS:
        specs.append(TopicSpec(deliver_topic(settings, channel), big, f"rendered {channel} deliveries"))
        specs.append(TopicSpec(deliver_topic(settings, channel, "bulk"), big, f"rendered bulk {channel} deliveries"))
    for topic in settings.retry_topics:
        specs.append(TopicSpec(topic, small, "failed deliveries waiting for their next attempt"))
    specs += [
        TopicSpec(settings.topic("dlq"), small, "dead letters, reason in headers"),
        TopicSpec(settings.topic("status"), big, "status changes"),
        TopicSpec(settings.topic("receipts"), small, "provider receipts"),
    ]
    return specs


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create the missing topics; returns the names created. Harmless when they exist."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [s for s in topic_specs(settings) if s.name not in existing]
    if not wanted:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, num_partitions=s.partitions, replication_factor=1) for s in wanted],
        operation_timeout=timeout,
    )
    created = []
    for name, fut in futures.items():
        try:
            fut.result(timeout)
            created.append(name)
        except Exception as exc:  # noqa: BLE001 - TOPIC_ALREADY_EXISTS from a racing creator is fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    return created
