"""The local stack: Kafka (KRaft, from Maven Central's jars), PostgreSQL and Redis on loopback."""
from __future__ import annotations

from dataclasses import dataclass

from infra.settings import Settings
from infra.tools.stack.kafka import KafkaStack
from infra.tools.stack.postgres import PostgresStack
from infra.tools.stack.redis import RedisStack


@dataclass
class ComponentStatus:
    name: str
    address: str
    answers: bool


def components(settings: Settings) -> list[tuple[str, KafkaStack | PostgresStack | RedisStack]]:
    return [("postgresql", PostgresStack(settings)), ("redis", RedisStack(settings)), ("kafka", KafkaStack(settings))]


def stack_status(settings: Settings) -> list[ComponentStatus]:
    return [ComponentStatus(name, c.address, c.answers()) for name, c in components(settings)]
