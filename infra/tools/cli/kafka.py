"""The CLI's own Kafka clients: a bounded broker check and no librdkafka log spam on the terminal."""
from __future__ import annotations

import logging
from typing import Any

from infra.settings import Settings
from infra.tools.cli.errors import CliError

BROKER_CHECK_SECONDS = 5.0


def quiet_logger() -> logging.Logger:
    """A logger for librdkafka's own lines ("Connect to ... failed", repeated every second), which the CLI
    replaces by one error of its own; passed as the ``logger`` config of the clients it builds."""
    log = logging.getLogger("herald.cli.librdkafka")
    log.propagate = False
    log.addHandler(logging.NullHandler())
    log.setLevel(logging.CRITICAL + 1)
    return log


def client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """An admin client's configuration (address, security, credentials) with librdkafka's lines silenced."""
    from infra.kafka.config import KafkaConfigError, admin_config

    try:
        return admin_config(settings, logger=quiet_logger(), **extra)
    except KafkaConfigError as exc:
        raise CliError(str(exc)) from exc


def require_broker(settings: Settings, timeout: float = BROKER_CHECK_SECONDS) -> None:
    """Fail in ``timeout`` seconds with one line when no broker answers at HERALD_KAFKA_BOOTSTRAP."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(client_config(settings, **{"socket.connection.setup.timeout.ms": int(timeout * 1000)}))
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise CliError(
            f"no Kafka broker answers at {settings.kafka_bootstrap} within {timeout:g} s; "
            "start the stack (`herald stack up`) or check HERALD_KAFKA_BOOTSTRAP"
        ) from exc
