"""Herald's codec as the settings configure it: the catalog (packaged + ``HERALD_SCHEMAS_DIR``) and, when
``HERALD_SCHEMA_REGISTRY__URL`` is set, a Confluent-compatible Schema Registry for Confluent's wire format."""
from __future__ import annotations

from typing import Any

from infra.settings import Settings
from schemas.catalog import Catalog, load_catalog
from schemas.codec import Codec
from schemas.registry import ConfluentSchemaSource, client_conf


def catalog_for(settings: Settings) -> Catalog:
    return load_catalog(extra=settings.schemas_dir)


def codec_for(settings: Settings, catalog: Catalog | None = None) -> Codec:
    r = settings.schema_registry
    source = None
    if r.url:
        source = ConfluentSchemaSource(r.url, r.username, r.password.get_secret_value() if r.password else None,
                                       str(r.ca_file) if r.ca_file else None, r.timeout)
    return Codec(catalog or catalog_for(settings), source)


def registry_client(settings: Settings) -> Any:
    """confluent-kafka's ``SchemaRegistryClient`` for the configured registry (``herald schemas register``)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    r = settings.schema_registry
    if not r.url:
        raise ValueError("no schema registry is configured: set HERALD_SCHEMA_REGISTRY__URL")
    return SchemaRegistryClient(client_conf(r.url, r.username, r.password.get_secret_value() if r.password else None,
                                            str(r.ca_file) if r.ca_file else None, r.timeout))
