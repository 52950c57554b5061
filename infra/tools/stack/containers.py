"""HERALD_STACK=containers: the same three services through testcontainers.

Needs a Docker engine, which the build machines do not have, so this path is
deliberately small and is not exercised by the test suite.
"""
from __future__ import annotations

from infra.settings import Settings


def up_containers(settings: Settings) -> dict[str, str]:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer
    from testcontainers.redis import RedisContainer

    kafka = KafkaContainer("apache/kafka:4.1.1").with_kraft()
    pg = PostgresContainer("postgres:16", username="herald", password="herald", dbname="herald")
    redis = RedisContainer("redis:7")
    for c in (kafka, pg, redis):
        c.start()
    return {
        "HERALD_KAFKA_BOOTSTRAP": kafka.get_bootstrap_server(),
        "HERALD_DATABASE_URL": pg.get_connection_url(driver=None),
        "HERALD_REDIS_URL": f"redis://{redis.get_container_host_ip()}:{redis.get_exposed_port(6379)}/0",
    }
