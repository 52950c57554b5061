"""Helpers for the API tests: API keys, a SendGrid webhook signer, Twilio signatures, reading a topic."""
from __future__ import annotations

import base64
import time
import uuid

import psycopg
from confluent_kafka import Consumer
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from infra.settings import Settings
from producers.api.keys import new_key


def make_api_key(settings: Settings, name: str = "test", scopes: list[str] | None = None, tenant: str | None = None,
                 rate_limit: int | None = None) -> str:
    """A new key; without ``scopes`` it gets the column's default (send, read, admin), as keys made before scopes have."""
    k = new_key()
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO api_keys (name, prefix, key_hash, tenant, rate_limit) VALUES (%s, %s, %s, %s, %s)",
                     (name, k.prefix, k.key_hash, tenant, rate_limit))
        if scopes is not None:
            conn.execute("UPDATE api_keys SET scopes = %s WHERE key_hash = %s", (scopes, k.key_hash))
    return k.key


class SendGridSigner:
    """What SendGrid does: an ECDSA P-256 key pair; the public half (base64 DER) is what Herald is configured with."""

    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        der = self.private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.public_b64 = base64.b64encode(der).decode()

    def headers(self, payload: bytes, timestamp: str | None = None) -> dict[str, str]:
        ts = timestamp or str(int(time.time()))
        sig = self.private.sign(ts.encode() + payload, ec.ECDSA(hashes.SHA256()))
        return {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(sig).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": ts,
            "Content-Type": "application/json",
        }


def read_topic(settings: Settings, topic: str, n: int, timeout: float = 30) -> list:
    """The first ``n`` records of ``topic`` (from the beginning), or fail after ``timeout``."""
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"{settings.app_id}-read-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    got: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < n and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(m)
    finally:
        c.close()
    assert len(got) >= n, f"{len(got)} of {n} records on {topic} within {timeout}s"
    return got
