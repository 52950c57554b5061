"""Pre-flight stops a campaign that would fail before anything is recorded or produced (CLI; the API shares it)."""
from __future__ import annotations

import json

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.integration.test_campaign import herald, template

pytestmark = pytest.mark.integration


def bulk_records(settings) -> int:
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"{settings.app_id}-count"})
    try:
        meta = c.list_topics(settings.topic("bulk"), timeout=10).topics[settings.topic("bulk")]
        return sum(c.get_watermark_offsets(TopicPartition(settings.topic("bulk"), p), timeout=10)[1] for p in meta.partitions)
    finally:
        c.close()


@pytest.fixture
def people(db, topics, tmp_path):
    """40 users: 20 in de-AT (served by the de template), 20 in en; and their id file."""
    tag = topics.app_id
    db.execute("INSERT INTO users (id, email, locale, first_name) SELECT %s || '-' || i, i || '@example.com', "
               "CASE WHEN i %% 2 = 0 THEN 'de-AT' ELSE 'en' END, 'N' || i FROM generate_series(1, 40) AS i", (tag,))
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(f"{tag}-{i}" for i in range(1, 41)) + "\nnobody-knows-me\n")
    return path


def one_line_error(out, *needles: str) -> str:
    said = " ".join(out.stderr.split())
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and all(n in said for n in needles), said
    return said


def test_a_template_typo_is_refused_before_anything_is_produced(topics, db, people):
    code = f"{topics.app_id}_sale"
    template(db, code, "Hi {{ user.first_name }}")
    out = herald(topics, "campaign", "send", "-t", f"{topics.app_id}_sael", "--users", str(people), "--id", f"{topics.app_id}-typo")
    said = one_line_error(out, f"no active template '{topics.app_id}_sael'", f"did you mean {code}")
    assert "pre-flight" in said
    assert db.execute("SELECT count(*) FROM campaigns WHERE id = %s", (f"{topics.app_id}-typo",)).fetchone()[0] == 0
    assert bulk_records(topics) == 0


def test_a_missing_variable_is_named_and_a_missing_locale_too(topics, db, people):
    code = f"{topics.app_id}_var"
    template(db, code, "Hi {{ user.first_name }}, {{ discount }} off", locale="en")
    out = herald(topics, "campaign", "send", "-t", code, "--users", str(people))
    # the en users render and miss the variable; de-AT has no version at all (de-AT → de → default)
    one_line_error(out, "locale de-AT (de-AT → de → default)", "20 recipients")
    template(db, code, "Hallo {{ user.first_name }}, {{ discount }} weniger", locale="de")
    out = herald(topics, "campaign", "send", "-t", code, "--users", str(people))
    one_line_error(out, "needs variable 'discount'")
    assert bulk_records(topics) == 0
    ok = herald(topics, "campaign", "send", "-t", code, "--users", str(people), "--var", "discount=20%", "--dry-run", "--json")
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["dry_run"] is True and report["recipients"] == 41 and report["unknown_users"] == 1
    assert report["locales"] == {"de-AT": 20, "en": 20}
    assert report["templates"] == {"email/de-AT": f"{code}/email/de v1", "email/en": f"{code}/email/en v1"}
    assert report["sampled"] >= 20 and report["estimate_seconds"] > 0
    assert "about" in " ".join(ok.stderr.split()) and "41 recipients" in " ".join(ok.stderr.split())
    assert db.execute("SELECT count(*) FROM campaigns WHERE template = %s", (code,)).fetchone()[0] == 0
    assert bulk_records(topics) == 0


def test_every_channel_needs_a_version(topics, db, people):
    code = f"{topics.app_id}_ch"
    template(db, code)
    out = herald(topics, "campaign", "send", "-t", code, "--users", str(people), "-c", "email", "-c", "sms")
    one_line_error(out, f"template '{code}' has no active sms version")
