"""A paced campaign against the real Kafka and PostgreSQL: production keeps its rate, and a cancel stops it within
one acknowledged chunk (about ten seconds of the rate), leaving the row 'canceled' with what was produced."""
from __future__ import annotations

import threading
import time

import pytest

from producers import campaign as cp, campaign_run as run
from tests.integration.test_campaign import read_recipients

pytestmark = pytest.mark.integration


def test_a_paced_campaign_keeps_its_rate_and_a_cancel_stops_it_within_a_chunk(topics, db, tmp_path):
    from infra.topics import ensure_topics

    ensure_topics(topics)
    users = tmp_path / "users.txt"
    users.write_text("".join(f"p{i}\n" for i in range(200)))
    spec = cp.CampaignSpec(f"cpace-{topics.app_id}", "promo", {"file": str(users)}, rate_per_minute=120)   # 2 a second
    with run.connect(topics) as conn:
        cp.create(conn, spec, 200)
        started = time.monotonic()
        result: list[cp.ProduceReport] = []
        worker = threading.Thread(target=lambda: result.append(run.run(topics, conn, spec, 200)))
        worker.start()
        time.sleep(6)
        with run.connect(topics) as other:
            run.cancel(other, spec.id)
        worker.join(30)
        stopped = time.monotonic() - started
    assert not worker.is_alive()
    [report] = result
    # 120 a minute: records of 4, acknowledged chunks of 20 (10 s); the cancel at 6 s ends it after the first chunk
    assert report.produced == 20 and stopped < 6 + 10 + 3, (report.produced, stopped)
    assert db.execute("SELECT status, produced FROM campaigns WHERE id = %s", (spec.id,)).fetchone() == ("canceled", 20)
    recs = read_recipients(topics, topics.topic("bulk"), 20)
    assert sorted(r["user_id"] for r in recs) == sorted(f"p{i}" for i in range(20))   # nothing after the cancel
    assert stopped >= (20 - 4) / 2, "faster than its rate"
