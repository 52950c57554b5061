"""Writer schemas by id from a Confluent-compatible Schema Registry, for Confluent's wire format.

``KafkaAvroSerializer`` (Java), confluent-kafka's ``AvroSerializer`` (Python, Go, .NET) and
their kin write ``0x00`` + a 4-byte big-endian schema id + the Avro body. The id names a
schema in the registry; this module asks for it with confluent-kafka's own
``SchemaRegistryClient`` (which caches by id) and says what the answer means:

* the schema's text: the writer schema;
* ``None``: the registry does not know the id (404, error code 40403): the record is bad input;
* ``RegistryUnavailable`` (a ``ConnectionError``): the registry did not answer, or answered
  anything else (5xx, 401/403, a 404 that is not "schema not found"): the record is fine, so
  the runner retries the batch instead of dead-lettering it.

The client is blocking HTTP; the codec calls it only on a cache miss, and the route handler
does that off the event loop.
"""
from __future__ import annotations

from typing import Protocol

SCHEMA_NOT_FOUND = 40403


class RegistryUnavailable(ConnectionError):
    """The Schema Registry did not answer usefully: an infrastructure error (retried, never a dead letter)."""


class NotAvroSchema(ValueError):
    """The id names a schema of another type (PROTOBUF, JSON)."""

    def __init__(self, schema_type: str) -> None:
        super().__init__(schema_type)
        self.schema_type = schema_type


class SchemaSource(Protocol):
    def avro_schema(self, schema_id: int) -> str | None:
        """The Avro schema text of ``schema_id``; None when the registry does not know it.

        Raises ``RegistryUnavailable`` when the registry cannot say, ``NotAvroSchema`` for another schema type.
        """
        ...

    def reachable(self) -> bool:
        """Whether the registry answers a trivial request now (the runner's "every service answers")."""
        ...


class ConfluentSchemaSource:
    """``SchemaSource`` over ``confluent_kafka.schema_registry.SchemaRegistryClient``."""

    def __init__(self, url: str, username: str | None = None, password: str | None = None,
                 ca_file: str | None = None, timeout: float = 5.0) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self.url = url
        self.client = SchemaRegistryClient(client_conf(url, username, password, ca_file, timeout))

    def avro_schema(self, schema_id: int) -> str | None:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            schema = self.client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404 and exc.error_code == SCHEMA_NOT_FOUND:
                return None
            raise RegistryUnavailable(f"the schema registry at {self.url} answered {exc.http_status_code} "
                                      f"({exc.error_code}: {exc.error_message}) for schema id {schema_id}") from exc
        except Exception as exc:  # httpx transport errors, timeouts, TLS, a body that is not JSON: no useful answer
            raise RegistryUnavailable(f"the schema registry at {self.url} does not answer: {exc!r}") from exc
        schema_type = schema.schema_type or "AVRO"
        if schema_type != "AVRO":
            raise NotAvroSchema(schema_type)
        return schema.schema_str

    def reachable(self) -> bool:
        try:
            self.client.get_compatibility()  # GET /config: the cheapest request every registry serves
        except Exception:  # noqa: BLE001 - any failure means "not answering usefully"
            return False
        return True

    def close(self) -> None:
        self.client.close()


def client_conf(url: str, username: str | None = None, password: str | None = None, ca_file: str | None = None,
                timeout: float = 5.0) -> dict[str, object]:
    """``SchemaRegistryClient`` configuration. No retries inside the client: Herald's runner retries the batch."""
    conf: dict[str, object] = {"url": url, "timeout": timeout, "max.retries": 0}
    if username:
        conf["basic.auth.user.info"] = f"{username}:{password or ''}"
    if ca_file:
        conf["ssl.ca.location"] = ca_file
    return conf
