"""The console behind `herald api --workers N`: every process signs sessions with the same secret and shows the same
replay jobs, whichever one the browser's next request reaches."""
from __future__ import annotations

import pytest

from infra.tools.console.routes import Console
from infra.tools.console.session import new_session, sign, verify
from producers.dlq import Selection
from tests.support.worker import wait_for

pytestmark = pytest.mark.integration


def test_two_api_processes_share_the_session_secret_and_the_replay_jobs(topics, db):
    first, second = Console.of(topics), Console.of(topics)   # as two uvicorn processes build theirs
    assert first.secret == second.secret and len(first.secret) == 32
    cookie = sign(first.secret, new_session(7, 60))
    assert verify(second.secret, cookie).key_id == 7

    job = first.jobs.start(7, Selection(), max_replays=3, limit=None, rate=100.0)   # an empty DLQ: done at once
    seen = wait_for(lambda: (j := second.jobs.get(job.id)) and j.finished and j, 30, message="the job seen by the other")
    assert (seen.total, seen.sent, seen.error) == (0, 0, None)
    assert second.jobs.get("nosuchjob1") is None


def test_a_configured_secret_wins_over_the_shared_one(topics, db):
    from pydantic import SecretStr

    mine = topics.model_copy(update={"console": topics.console.model_copy(update={"secret": SecretStr("s3cret")})})
    assert Console.of(mine).secret == b"s3cret" != Console.of(topics).secret
