"""Fixtures shared by every test folder.

Integration and e2e tests run against the real Kafka, PostgreSQL and Redis
(`make test` starts them). They never skip: a missing service is a failure.
Each test gets its own topic prefix, Redis prefix and consumer group; each
pytest session gets its own freshly migrated database.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from infra.db import migrate
from infra.settings import Settings
from infra.tools.stack import stack_status
from infra.topics import ensure_topics
from tests.support.worker import WorkerProcess


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def services(base_settings: Settings) -> Settings:
    """The real stack must answer; integration tests fail (never skip) when it does not."""
    down = [f"{c.name} at {c.address}" for c in stack_status(base_settings) if not c.answers]
    if down:
        pytest.fail(f"not answering: {', '.join(down)}. Start the stack: `herald stack up` (make test does it).")
    return base_settings


@pytest.fixture(scope="session")
def test_database(services: Settings) -> Iterator[str]:
    """A fresh database for this session, migrated; dropped afterwards."""
    name = f"herald_test_{uuid.uuid4().hex[:10]}"
    dsn = services.dsn
    admin = dsn.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = dsn.rsplit("/", 1)[0] + f"/{name}"
    migrate(Settings(database_url=url))
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings(test_database: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings unique to this test: topics, Redis keys and consumer group (all removed afterwards)."""
    tag = f"t{uuid.uuid4().hex[:10]}"
    s = Settings(
        database_url=test_database,
        topic_prefix=tag,
        redis_prefix=tag,
        app_id=tag,
        partitions=3,
        small_partitions=1,
        metrics_port=0,
        retry_delays=[1.0, 2.0, 3.0],
        home=Settings().home,
    )
    yield s
    _remove_traces(s)


def _remove_traces(s: Settings) -> None:
    """Delete the test's topics and Redis keys so the shared broker stays small."""
    import redis
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient({"bootstrap.servers": s.kafka_bootstrap})
        mine = [t for t in admin.list_topics(timeout=10).topics if t.startswith((s.topic_prefix + ".", s.app_id + "-"))]
        if mine:
            for f in admin.delete_topics(mine, operation_timeout=10).values():
                f.result(15)
        r = redis.Redis.from_url(s.redis_dsn)
        keys = list(r.scan_iter(match=f"{s.redis_prefix}:*", count=1000))
        if keys:
            r.delete(*keys)
    except Exception as exc:  # noqa: BLE001 - clean-up must not turn a passing test red
        print(f"clean-up of {s.topic_prefix}: {exc!r}")


@pytest.fixture
def topics(settings: Settings) -> Settings:
    ensure_topics(settings)
    return settings


@pytest.fixture
def db(settings: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def worker_factory(tmp_path: Path):
    """Start ``herald worker`` subprocesses: ``worker_factory(settings, agents=[...])``; stopped at teardown."""
    started: list[WorkerProcess] = []

    def start(settings: Settings, agents: list[str] | None = None, extra_env: dict[str, str] | None = None) -> WorkerProcess:
        w = WorkerProcess(settings, agents, tmp_path / f"worker-{len(started)}.log", extra_env).start()
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()
    # every worker a test ran is a log-masking test too: no address, phone number or provider secret in any line
    from tests.support.logscan import credentials, scan_logs

    leaked = scan_logs([w.log_path for w in started if w.log_path.exists()],
                       sorted({c for w in started for c in credentials(w.settings)}), shortest=8)
    assert not leaked, f"worker logs leak personal data or secrets: {leaked}"
