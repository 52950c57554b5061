"""POST /v1/campaigns (a list, an upload streamed to disk), GET its numbers, pre-flight as 422, scopes."""
from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from producers.api import create_api
from producers.api.config import ApiConfig
from tests.integration.test_campaign import read_recipients, template
from tests.support.api import make_api_key
from tests.support.worker import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def api(topics, db, tmp_path) -> Iterator[tuple[TestClient, dict[str, str], object]]:
    settings = topics.model_copy(update={"home": tmp_path})
    db.execute("INSERT INTO users (id, email, locale, first_name) SELECT %s || '-' || i, i || '@example.com', 'en', 'N' || i "
               "FROM generate_series(1, 50) AS i", (settings.app_id,))
    template(db, f"{settings.app_id}_promo", "Hi {{ user.first_name }}, {{ discount }} off")
    config = ApiConfig(rate_limit=1000, key_cache_seconds=0)
    with TestClient(create_api(settings, config)) as client:
        yield client, {"Authorization": f"Bearer {make_api_key(settings)}"}, settings


def produced(db, cid: str) -> tuple[str, int] | None:
    row = db.execute("SELECT status, produced FROM campaigns WHERE id = %s", (cid,)).fetchone()
    return tuple(row) if row else None


def test_a_list_is_checked_then_produced_in_the_background_and_followed(api, db):
    client, auth, settings = api
    users = [f"{settings.app_id}-{i}" for i in range(1, 51)]
    body = {"template": f"{settings.app_id}_promo", "recipients": users, "variables": {"discount": "20%"}}
    typo = client.post("/v1/campaigns", json={**body, "template": f"{settings.app_id}_prommo"}, headers=auth)
    assert typo.status_code == 422 and typo.json()["code"] == "no_template", typo.text
    assert f"did you mean {settings.app_id}_promo" in typo.json()["detail"]
    missing = client.post("/v1/campaigns", json={**body, "variables": {}}, headers=auth)
    assert missing.status_code == 422 and missing.json()["code"] == "missing_variable"
    assert "'discount'" in missing.json()["detail"]
    assert db.execute("SELECT count(*) FROM campaigns WHERE template LIKE %s", (f"{settings.app_id}%",)).fetchone()[0] == 0

    r = client.post("/v1/campaigns", json=body, headers=auth)
    assert r.status_code == 202, r.text
    got = r.json()
    cid = got["id"]
    assert got["recipients"] == 50 and got["locales"] == {"en": 50} and got["estimate_seconds"] > 0
    wait_for(lambda: produced(db, cid) == ("produced", 50), 60, message="the campaign produced in the background")
    recs = read_recipients(settings, settings.topic("bulk"), 50)
    assert {r["user_id"] for r in recs} == set(users) and all(r["variables"] == {"discount": "20%"} for r in recs)

    view = client.get(f"/v1/campaigns/{cid}", headers=auth)
    assert view.status_code == 200, view.text
    v = view.json()
    assert (v["status"], v["total"], v["produced"], v["in_flight"], v["sent"], v["canceled"]) == ("produced", 50, 50, 50, 0, 0)
    assert v["progress"] == 0 and v["canceled_at"] is None
    assert client.get("/v1/campaigns/nope", headers=auth).status_code == 404
    again = client.post("/v1/campaigns", json={**body, "id": cid}, headers=auth)
    assert again.status_code == 409


def test_scopes_send_to_start_read_to_follow(api):
    client, _, settings = api
    read_only = {"Authorization": f"Bearer {make_api_key(settings, 'r', scopes=['read'])}"}
    send_only = {"Authorization": f"Bearer {make_api_key(settings, 's', scopes=['send'])}"}
    body = {"template": f"{settings.app_id}_promo", "recipients": ["x"], "variables": {"discount": "1"}}
    assert client.post("/v1/campaigns", json=body, headers=read_only).status_code == 403
    assert client.get("/v1/campaigns/whatever", headers=send_only).status_code == 403
    assert client.delete("/v1/campaigns/whatever", headers=read_only).status_code == 403
    assert client.get("/v1/campaigns/whatever", headers=read_only).status_code == 404


def test_an_upload_is_streamed_to_disk_with_per_recipient_variables(api, db):
    client, auth, settings = api
    n = 20_000

    def rows() -> Iterator[bytes]:   # a chunked body: never one string in the test either
        yield b"user_id,discount\n"
        for start in range(0, n, 1000):
            yield "".join(f"{settings.app_id}-{i % 50 + 1}-{i},{i}%\n" for i in range(start, start + 1000)).encode()

    r = client.post("/v1/campaigns/upload", params={"template": f"{settings.app_id}_promo", "id": f"{settings.app_id}-up"},
                    content=rows(), headers={**auth, "Content-Type": "text/csv"})
    assert r.status_code == 202, r.text
    assert r.json()["recipients"] == n and r.json()["unknown_users"] == n   # ids unknown to users: skipped downstream
    wait_for(lambda: produced(db, f"{settings.app_id}-up") == ("produced", n), 90, message="the upload produced")
    assert (settings.home / "campaigns" / f"{settings.app_id}-up.csv").stat().st_size > n * 10
    recs = read_recipients(settings, settings.topic("bulk"), n)
    assert len({r["user_id"] for r in recs}) == n
    assert next(r for r in recs if r["user_id"] == f"{settings.app_id}-8-7")["variables"] == {"discount": "7%"}
    # no discount column, no campaign variable: pre-flight names it (as it did for the list)
    bad = client.post("/v1/campaigns/upload", params={"template": f"{settings.app_id}_promo"},
                      content=f"{settings.app_id}-1\n".encode(), headers={**auth, "Content-Type": "text/plain"})
    assert bad.status_code == 422 and "'discount'" in bad.json()["detail"]
    wrong = client.post("/v1/campaigns/upload", params={"template": f"{settings.app_id}_promo"}, content=b"{}",
                        headers={**auth, "Content-Type": "application/pdf"})
    assert wrong.status_code == 415
    bad_vars = client.post("/v1/campaigns/upload", params={"template": "x", "variables": "{"}, content=b"u\n",
                           headers={**auth, "Content-Type": "text/plain"})
    assert bad_vars.status_code == 422 and "variables" in json.dumps(bad_vars.json())


def test_rate_and_window_are_checked_kept_with_the_campaign_and_shown(api, db):
    client, auth, settings = api
    users = [f"{settings.app_id}-{i}" for i in range(1, 4)]
    body = {"template": f"{settings.app_id}_promo", "recipients": users, "variables": {"discount": "5%"}}
    bad = client.post("/v1/campaigns", json={**body, "send_window": "9 to 5"}, headers=auth)
    assert bad.status_code == 422 and "expected HH:MM-HH:MM" in bad.json()["errors"][0]["message"], bad.text
    assert client.post("/v1/campaigns", json={**body, "rate_per_minute": 0}, headers=auth).status_code == 422
    bad_upload = client.post(f"/v1/campaigns/upload?template={settings.app_id}_promo&send_window=25:00-26:00",
                             content="\n".join(users), headers={**auth, "Content-Type": "text/plain"})
    assert bad_upload.status_code == 422 and "send window" in bad_upload.text
    r = client.post("/v1/campaigns", json={**body, "rate_per_minute": 600, "send_window": "22:00-06:00"}, headers=auth)
    assert r.status_code == 202, r.text
    cid = r.json()["id"]
    assert r.json()["estimate_seconds"] >= 3 * 60 / 600
    wait_for(lambda: produced(db, cid) == ("produced", 3), 60, message="produced")
    v = client.get(f"/v1/campaigns/{cid}", headers=auth).json()
    assert (v["rate_per_minute"], v["send_window"]) == (600, "22:00-06:00")
    assert db.execute("SELECT rate_per_minute, send_window FROM campaigns WHERE id = %s", (cid,)).fetchone() == (
        600, "22:00-06:00")   # what --resume reads back


def test_a_campaign_names_a_saved_segment_and_no_sql_travels_over_http(api, db):
    from typer.testing import CliRunner

    from infra.tools.cli.main import app as cli
    from tests.support.env import settings_env

    client, auth, settings = api
    env = settings_env(settings)
    name = f"{settings.app_id}-first-ten"
    query = f"SELECT id FROM users WHERE id LIKE '{settings.app_id}-%' AND substr(id, length('{settings.app_id}-') + 1)::int <= 10"
    saved = CliRunner().invoke(cli, ["segments", "save", name, "--query", query, "--json"], env=env)
    assert saved.exit_code == 0, saved.output
    assert json.loads(saved.output) == {"name": name, "recipients": 10}
    broken = CliRunner().invoke(cli, ["segments", "save", f"{name}-x", "--query", "SELECT nope FROM users"], env=env)
    assert broken.exit_code != 0 and str(broken.exception) == 'the recipient query failed: column "nope" does not exist'
    listed = client.get("/v1/segments", headers=auth)
    assert listed.status_code == 200 and name in [s["name"] for s in listed.json()]
    assert "query" not in listed.json()[0]

    body = {"template": f"{settings.app_id}_promo", "variables": {"discount": "5%"}}
    unknown = client.post("/v1/campaigns", json={**body, "segment": "nobody-saved-this"}, headers=auth)
    assert unknown.status_code == 422 and unknown.json()["code"] == "unknown_segment"
    both = client.post("/v1/campaigns", json={**body, "segment": name, "recipients": ["x"]}, headers=auth)
    assert both.status_code == 422 and "exactly one of recipients" in both.text
    neither = client.post("/v1/campaigns", json=body, headers=auth)
    assert neither.status_code == 422

    r = client.post("/v1/campaigns", json={**body, "segment": name}, headers=auth)
    assert r.status_code == 202 and r.json()["recipients"] == 10, r.text
    cid = r.json()["id"]
    wait_for(lambda: produced(db, cid) == ("produced", 10), 60, message="the segment's campaign produced")
    recs = read_recipients(settings, settings.topic("bulk"), 10)
    assert {x["user_id"] for x in recs} == {f"{settings.app_id}-{i}" for i in range(1, 11)}
    gone = CliRunner().invoke(cli, ["segments", "delete", name], env=env)
    assert gone.exit_code == 0 and name not in [s["name"] for s in client.get("/v1/segments", headers=auth).json()]
