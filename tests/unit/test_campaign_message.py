"""CampaignMessage building: the event id makes a resumed campaign idempotent downstream; variables merge as documented."""
from __future__ import annotations

import json
from datetime import UTC

import pytest

from producers.campaign import CampaignSpec, event_id, message, new_campaign_id
from producers.campaign_source import Recipient
from schemas.codec import Codec


def spec(**kw) -> CampaignSpec:
    base = {"id": "c1", "template": "spring_sale", "source": {"file": "/x"}, "channels": ("email",), "category": "marketing",
                "variables": {"discount": "20%", "season": "spring"}}
    return CampaignSpec(**{**base, **kw})


def test_event_id_is_campaign_and_user():
    assert event_id("c20260101-ab", "u42") == "c20260101-ab:u42"


@pytest.mark.parametrize(
    ("recipient_vars", "expected"),
    [
        (None, {"discount": "20%", "season": "spring"}),
        ({"first_name": "Ada"}, {"discount": "20%", "season": "spring", "first_name": "Ada"}),
        ({"discount": "30%"}, {"discount": "30%", "season": "spring"}),  # the recipient's own value wins
    ],
)
def test_variables_merge_campaign_then_recipient(recipient_vars, expected):
    m = message(spec(), Recipient("u1", recipient_vars), 1_700_000_000_000)
    assert json.loads(m["variables_json"]) == expected


def test_message_is_a_valid_campaign_message_and_round_trips():
    m = message(spec(channels=("email", "push")), Recipient("u7"), 1_700_000_000_123)
    codec = Codec()
    back = codec.decode(codec.encode("CampaignMessage", m))
    assert back.name == "CampaignMessage"
    assert back.record["event_id"] == "c1:u7"
    assert back.record["user_id"] == "u7"
    assert back.record["campaign_id"] == "c1"
    assert back.record["channels"] == ["email", "push"]
    assert back.record["category"] == "marketing"


def test_the_same_recipient_gives_the_same_message_apart_from_time():
    a = message(spec(), Recipient("u1"), 1)
    b = message(spec(), Recipient("u1"), 2)
    assert {**a, "occurred_at": 0} == {**b, "occurred_at": 0}


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"template": ""}, "template"),
        ({"channels": ()}, "channels"),
        ({"channels": ("email", "fax")}, "fax"),
    ],
)
def test_bad_specs_are_refused(kw, error):
    with pytest.raises(ValueError, match=error):
        spec(**kw)


def test_generated_ids_are_unique_and_dated():
    from datetime import datetime

    now = datetime(2026, 3, 1, tzinfo=UTC)
    ids = {new_campaign_id(now) for _ in range(200)}
    assert len(ids) == 200
    assert all(i.startswith("c20260301-") for i in ids)
