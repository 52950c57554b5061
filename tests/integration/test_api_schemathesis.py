"""Schemathesis against the served OpenAPI spec: whatever it sends, the API never answers 5xx.

The API runs under uvicorn on loopback with the real PostgreSQL, Redis and Kafka.
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings as hsettings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from infra.settings import Settings
from infra.tools.sandbox.server import free_port
from infra.topics import ensure_topics
from producers.api import create_api
from producers.api.config import ApiConfig
from tests.support.api import SendGridSigner, make_api_key

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(test_database: str) -> Iterator[tuple[str, str]]:
    """(base URL, API key) of an API served by uvicorn in a thread for this module."""
    import redis
    from confluent_kafka.admin import AdminClient

    os.environ["NO_PROXY"] = ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1,localhost"]))
    tag = f"t{uuid.uuid4().hex[:10]}"
    s = Settings(database_url=test_database, topic_prefix=tag, redis_prefix=tag, app_id=tag, partitions=1,
                 small_partitions=1, sendgrid_webhook_public_key=SendGridSigner().public_b64)
    ensure_topics(s)
    with __import__("psycopg").connect(s.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO templates (code, channel, version, body_text, active) VALUES ('welcome', 'email', 1, 'Hi', true)"
                     " ON CONFLICT DO NOTHING")
        conn.execute("INSERT INTO users (id, email) VALUES ('u1', 'u1@example.com') ON CONFLICT DO NOTHING")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_api(s, ApiConfig(rate_limit=100_000)), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield base, make_api_key(s, "schemathesis")
    finally:
        server.should_exit = True
        thread.join(15)
        admin = AdminClient({"bootstrap.servers": s.kafka_bootstrap})
        mine = [t for t in admin.list_topics(timeout=10).topics if t.startswith(tag + ".")]
        if mine:
            for f in admin.delete_topics(mine, operation_timeout=10).values():
                f.result(15)
        r = redis.Redis.from_url(s.redis_dsn)
        if keys := list(r.scan_iter(match=f"{tag}:*")):
            r.delete(*keys)


def test_no_server_errors(served):
    """Every operation of the served spec, fuzzed (valid and invalid inputs): no answer is a 5xx."""
    base, key = served
    # schemathesis' pytest plugin (from_fixture/parametrize) does not run under pytest 9 yet: drive hypothesis directly
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 12
    failures: list[str] = []
    calls = {"n": 0}
    statuses: Counter[int] = Counter()
    for op, mode in [(op, mode) for op in operations for mode in GenerationMode]:
        @given(case=op.as_strategy(generation_mode=mode))
        @hsettings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case) -> None:
            calls["n"] += 1
            response = case.call(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30)
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} → {response.status_code}: {response.text[:300]}")

        try:
            run()
        except Unsatisfiable:
            # an operation without inputs (e.g. /healthz) has no invalid variant; its valid run covers it
            assert mode is GenerationMode.NEGATIVE, f"{op.label}: no valid input could be generated"
    print(dict(statuses))
    # the key was accepted: requests got past authentication to validation and to the handlers
    assert statuses[422] and sum(n for code, n in statuses.items() if 200 <= code < 300)
    assert calls["n"] >= 12 * 30, f"only {calls['n']} calls made"
    assert not failures, "\n".join(failures[:10])
