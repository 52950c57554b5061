"""Through the real deliver agent: one delivery with a CR/LF subject in a chunk of nine (issue 11).

Before, the sink raised out of send_batch, so all nine climbed the retry ladder and ended ``failed`` although
some had reached their recipients. Now the eight are sent once and recorded ``sent``, and the bad one goes
straight to the DLQ as ``permanent`` with a reason naming the subject.
"""
from __future__ import annotations

import pytest

from infra.kafka.producer import Producer
from infra.topics import deliver_topic
from schemas.codec import Codec
from tests.integration.test_route_agent import TopicReader
from tests.support.sandbox import delivery, delivery_record, sandbox  # noqa: F401 - fixture
from tests.support.worker import wait_for

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("provider", ["smtp", "sendgrid"])
def test_one_crlf_subject_dead_letters_alone_and_the_rest_of_its_chunk_is_sent_once(provider, sandbox, db, worker_factory):
    settings = sandbox.settings.model_copy(update={"email_provider": provider})
    ds = [delivery("email", user_id="u-hostile") for _ in range(9)]   # one key: one partition, one batch
    bad = ds[4] = delivery("email", user_id="u-hostile", subject="Hello\r\nBcc: everyone@example.org")
    topic = deliver_topic(settings, "email")
    Producer(settings).send_all_blocking([delivery_record(Codec(), topic, d) for d in ds])
    # a 2 s batch window: the nine reach the agent as one batch, so they share one chunk and one sink call
    worker_factory(settings, agents=["deliver-email", "status"], extra_env={"HERALD_BATCH_WITHIN": "2", "HERALD_INTERACTIVE_WITHIN": "2"})

    def ledger():
        return {r[0]: r[1:] for r in db.execute(
            "SELECT delivery_id, status, attempts, provider_message_id, error FROM delivery_state WHERE delivery_id = ANY(%s)",
            ([d["delivery_id"] for d in ds],)).fetchall()}

    rows = wait_for(lambda: (lambda r: len(r) == 9 and all(s != "claimed" for s, *_ in r.values()) and r)(ledger()),
                    90, message="nine ledger outcomes")
    good = [d for d in ds if d is not bad]
    assert all(rows[d["delivery_id"]][0] == "sent" and rows[d["delivery_id"]][2] for d in good), rows
    status, attempts, _, error = rows[bad["delivery_id"]]
    assert (status, attempts) == ("failed", 1) and "subject" in error and "line break" in error

    reader = TopicReader(settings, [settings.topic("dlq"), *settings.retry_topics])
    try:
        recs = reader.wait(lambda rs: [r for r in rs if r["topic"] == settings.topic("dlq")], 60, message="the dead letter")
        reader.poll(1.0)   # anything else that would have gone to the ladder
    finally:
        reader.close()
    assert [r["topic"] for r in reader.records] == [settings.topic("dlq")]   # nothing climbed the ladder
    headers = recs[0]["headers"]
    assert headers["herald-dlq-error-class"] == b"permanent" and b"subject" in headers["herald-dlq-error"]
    assert recs[0]["value"]["delivery_id"] == bad["delivery_id"]

    wait_for(lambda: db.execute("SELECT status, reason FROM notifications WHERE id=%s",
                                (bad["notification_id"],)).fetchone() is not None, 60, message="failed status")
    st, reason = db.execute("SELECT status, reason FROM notifications WHERE id=%s", (bad["notification_id"],)).fetchone()
    assert st == "failed" and reason.startswith("permanent: subject")
    counts: dict[str, int] = {}
    for m in sandbox.control.inbox("email"):
        counts[m["to"]] = counts.get(m["to"], 0) + 1
    assert counts == {d["address"]: 1 for d in good}
