"""One-click unsubscribe through the real stack: a campaign's email (worker, sandbox SMTP or SendGrid) carries
List-Unsubscribe; POSTing its link (or SendGrid reporting spam for it) turns marketing off for that user, and the
next campaign skips the user ('suppressed', reason 'preference') while the others get it."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from infra.unsubscribe import ONE_CLICK
from producers.api import create_api
from producers.api.config import ApiConfig
from tests.integration.test_campaign import template
from tests.support.api import SendGridSigner, make_api_key
from tests.support.sandbox import sandbox  # noqa: F401 - fixture
from tests.support.worker import wait_for

pytestmark = pytest.mark.e2e

N = 3


def _campaign(client: TestClient, auth: dict[str, str], template_code: str, users: list[str]) -> dict:
    started = client.post("/v1/campaigns", headers=auth, json={"template": template_code, "recipients": users})
    assert started.status_code == 202, started.text
    cid = started.json()["id"]

    def settled() -> dict | None:
        v = client.get(f"/v1/campaigns/{cid}", headers=auth).json()
        return v if v["progress"] == 1.0 else None

    return wait_for(settled, 90, interval=0.3, message=f"campaign {cid} at an end")


def _setup(db, tag: str) -> list[str]:
    users = [f"{tag}-{i}" for i in range(N)]
    db.execute("INSERT INTO users (id, email) SELECT u, u || '@example.org' FROM unnest(%s::text[]) AS u", (users,))
    template(db, f"{tag}_news", "Hello {{ user.id }}")
    return users


@pytest.mark.parametrize("provider", ["smtp", "sendgrid"])
def test_the_link_in_the_email_opts_the_user_out_and_the_next_campaign_skips_them(sandbox, worker_factory, db, tmp_path,
                                                                                 provider):
    settings = sandbox.settings.model_copy(update={"email_provider": provider, "home": tmp_path})
    ctl, tag = sandbox.control, f"{settings.app_id}-{provider}"
    users = _setup(db, tag)
    worker_factory(settings, agents=["route-bulk", "deliver-email-bulk", "status"]).wait_ready()
    auth = {"Authorization": f"Bearer {make_api_key(settings)}"}
    with TestClient(create_api(settings, ApiConfig(rate_limit=1000, key_cache_seconds=0))) as client:
        first = _campaign(client, auth, f"{tag}_news", users)
        assert first["sent"] == N
        [mail] = wait_for(lambda: ctl.inbox("email", to=f"{users[0]}@example.org") or None, 30, message="the email")
        assert mail["headers"]["List-Unsubscribe-Post"] == ONE_CLICK
        link = mail["headers"]["List-Unsubscribe"].split(",")[0].strip().strip("<>")
        assert "mailto:" in mail["headers"]["List-Unsubscribe"]
        base = f"http://{settings.api_host}:{settings.api_port}"
        assert link.startswith(f"{base}/v1/unsubscribe/")
        # the provider's one-click POST: no API key, the token in the link is the credential
        done = client.post(link.removeprefix(base), content=ONE_CLICK,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert done.status_code == 200 and done.json() == {"user_id": users[0], "category": "marketing", "unsubscribed": True}

        ctl.clear()
        second = _campaign(client, auth, f"{tag}_news", users)
    assert second["sent"] == N - 1 and second["suppressed"] == {"suppressed: preference": 1}
    assert ctl.inbox("email", to=f"{users[0]}@example.org", envelope=True) == []
    assert db.execute("SELECT status, reason FROM notifications WHERE id = %s",
                      (f"{second['id']}:{users[0]}",)).fetchone() == ("suppressed", "preference")


def test_a_sendgrid_spam_report_opts_the_user_out_and_the_next_campaign_skips_them(sandbox, worker_factory, db, tmp_path):
    signer = SendGridSigner()
    settings = sandbox.settings.model_copy(update={"email_provider": "sendgrid", "home": tmp_path,
                                                   "sendgrid_webhook_public_key": signer.public_b64})
    ctl, tag = sandbox.control, f"{settings.app_id}-spam"
    users = _setup(db, tag)
    worker_factory(settings, agents=["route-bulk", "deliver-email-bulk", "status"]).wait_ready()
    auth = {"Authorization": f"Bearer {make_api_key(settings)}"}
    with TestClient(create_api(settings, ApiConfig(rate_limit=1000, key_cache_seconds=0))) as client:
        assert _campaign(client, auth, f"{tag}_news", users)["sent"] == N
        [mail] = ctl.inbox("email", to=f"{users[1]}@example.org")
        # what SendGrid posts when the recipient presses "report spam": the custom args Herald set on the message
        event = {"event": "spamreport", "email": mail["to"], "timestamp": 1, "sg_message_id": f"{mail['message_id']}.f1",
                 **mail["custom_args"]}
        payload = json.dumps([event]).encode()
        hook = client.post("/v1/webhooks/sendgrid", content=payload, headers=signer.headers(payload))
        assert hook.status_code == 200 and hook.json()["unsubscribed"] == 1, hook.text
        ctl.clear()
        second = _campaign(client, auth, f"{tag}_news", users)
    assert second["sent"] == N - 1 and second["suppressed"] == {"suppressed: preference": 1}
    assert [m["to"] for m in ctl.inbox("email", envelope=True) if m["to"] == mail["to"]] == []
