"""Client configuration from ``Settings``: the same connection for librdkafka and for aiokafka (Faust).

``connection(settings)`` holds what every client needs to reach the cluster (bootstrap, security
protocol, SASL, TLS files, the pass-through extras); the role functions add what a producer, a
consumer or an admin client needs on top. Overrides use librdkafka's property names.
"""
from __future__ import annotations

import logging
import ssl
from typing import Any

from infra.settings import KafkaConfig, Settings

# librdkafka counts a little framing beside key, value and headers; Herald's own size check stays below its limit
PRODUCER_SIZE_MARGIN = 4096


class KafkaConfigError(ValueError):
    """The connection settings cannot work (a SASL protocol without a user, a missing TLS file)."""


def connection(settings: Settings) -> dict[str, Any]:
    k = settings.kafka
    out: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "security.protocol": k.security_protocol,
        # librdkafka's own lines go through Python logging: JSON, masked, at the process's level
        "logger": logging.getLogger("herald.librdkafka"),
    }
    if k.sasl:
        password = k.password()
        if not k.sasl_username or password is None:
            raise KafkaConfigError(
                f"HERALD_KAFKA__SECURITY_PROTOCOL={k.security_protocol} needs HERALD_KAFKA__SASL_USERNAME and "
                "HERALD_KAFKA__SASL_PASSWORD (or HERALD_KAFKA__SASL_PASSWORD_FILE)"
            )
        out.update({"sasl.mechanism": k.sasl_mechanism, "sasl.username": k.sasl_username, "sasl.password": password})
    if k.tls:
        _check_files(k)
        if k.ssl_ca_file:
            out["ssl.ca.location"] = str(k.ssl_ca_file)
        if k.ssl_cert_file:
            out["ssl.certificate.location"] = str(k.ssl_cert_file)
        if k.ssl_key_file:
            out["ssl.key.location"] = str(k.ssl_key_file)
        if k.ssl_key_password is not None:
            out["ssl.key.password"] = k.ssl_key_password.get_secret_value()
        out["ssl.endpoint.identification.algorithm"] = "https" if k.ssl_check_hostname else "none"
    out.update(k.extra)
    return out


def _check_files(k: KafkaConfig) -> None:
    for name in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file"):
        path = getattr(k, name)
        if path is not None and not path.is_file():
            raise KafkaConfigError(f"HERALD_KAFKA__{name.upper()}={path}: no such file")


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Idempotent, acks=all, Java's key hash, a short linger, lz4; ``message.max.bytes`` above Herald's size check."""
    return {
        **connection(settings),
        "enable.idempotence": True,
        "acks": "all",
        # Java's and aiokafka's key hash: an upstream team producing with another client puts a user's events
        # on the same partition as Herald's own writers do (librdkafka's default, consistent_random, does not)
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "message.timeout.ms": 60_000,
        "message.max.bytes": settings.max_record_bytes + PRODUCER_SIZE_MARGIN,
        **overrides,
    }


def consumer_config(settings: Settings, group: str, **overrides: Any) -> dict[str, Any]:
    """Manual commits, cooperative rebalancing, bounded prefetch."""
    return {
        **connection(settings),
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        # bounded prefetch: a worker's memory under a backlog is this, per busy consumer (32 MB and librdkafka's
        # 50 MB fetch.max.bytes held ~125 MB more per worker at 3M recipients than 8 MB did, at the same speed)
        "queued.max.messages.kbytes": settings.kafka.consumer_prefetch_kbytes,
        "fetch.max.bytes": settings.kafka.consumer_prefetch_kbytes * 1024,
        "fetch.wait.max.ms": 50,
        **overrides,
    }


def admin_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    return {**connection(settings), **overrides}


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context aiokafka needs for the same connection (None on a plaintext protocol)."""
    k = settings.kafka
    if not k.tls:
        return None
    _check_files(k)
    ctx = ssl.create_default_context(cafile=str(k.ssl_ca_file) if k.ssl_ca_file else None)
    ctx.check_hostname = k.ssl_check_hostname
    if k.ssl_cert_file:
        ctx.load_cert_chain(str(k.ssl_cert_file), str(k.ssl_key_file) if k.ssl_key_file else None,
                            k.ssl_key_password.get_secret_value() if k.ssl_key_password else None)
    return ctx


def faust_options(settings: Settings) -> dict[str, Any]:
    """``faust.App`` keyword arguments for the same cluster and credentials."""
    import faust

    k = settings.kafka
    options: dict[str, Any] = {"broker": [f"kafka://{b.strip()}" for b in settings.kafka_bootstrap.split(",")]}
    context = ssl_context(settings)
    if k.sasl:
        connection(settings)  # the same checks and the same error as librdkafka's clients
        options["broker_credentials"] = faust.SASLCredentials(
            username=k.sasl_username, password=k.password(), mechanism=k.sasl_mechanism, ssl_context=context
        )
    elif context is not None:
        options["broker_credentials"] = faust.SSLCredentials(context)
    return options
