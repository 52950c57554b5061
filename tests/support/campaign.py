"""A bulk campaign through the real stack, for the e2e tests: generated users, a template, a worker with the bulk
agents and the campaign started over HTTP; the test then breaks or watches the sandbox providers."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from infra.tools.sandbox.server import RunningSandbox
from producers.api import create_api
from producers.api.config import ApiConfig
from schemas.vocabulary import Channel
from tests.integration.test_campaign import template
from tests.support.api import make_api_key
from tests.support.worker import WorkerProcess, wait_for

USERS = {
    Channel.EMAIL: "INSERT INTO users (id, email, first_name) SELECT %(tag)s || '-' || i, %(tag)s || '-' || i || '@example.org', "
                   "'N' || i FROM generate_series(1, %(n)s) AS i",
    Channel.SMS: "INSERT INTO users (id, phone, first_name) SELECT %(tag)s || '-' || i, '+43660' || lpad(i::text, 7, '0'), "
                 "'N' || i FROM generate_series(1, %(n)s) AS i",
}


@dataclass
class BulkCampaign:
    """A started campaign: its id, its number of recipients and the API client that started it (open until teardown)."""
    id: str
    total: int
    client: TestClient
    auth: dict[str, str]

    def view(self) -> dict[str, Any]:
        return self.client.get(f"/v1/campaigns/{self.id}", headers=self.auth).json()

    def wait_sent(self, timeout: float) -> dict[str, Any]:
        """The campaign's view once every recipient is sent; fails after ``timeout`` seconds."""
        def settled() -> dict[str, Any] | None:
            v = self.view()
            return v if v["sent"] == self.total else None

        return wait_for(settled, timeout, interval=0.5, message="every recipient sent")


@pytest.fixture
def bulk_campaign(sandbox: RunningSandbox, worker_factory: Callable[..., WorkerProcess], db: psycopg.Connection,
                  tmp_path: Path) -> Iterator[Callable[..., BulkCampaign]]:
    """``bulk_campaign(n, channel=..., settings={...}, agents=[...], worker_env={...})`` starts a campaign to ``n`` new
    users (``<app_id>-1`` … ``-n``, first names N1 … Nn, each with an address on ``channel``: an email address, or a
    phone number +43660 and seven digits) with the template "Hi {{ user.first_name }}", through a worker running
    route-bulk, the channel's bulk deliver agent, ``agents`` and status, with the sandbox's settings updated by
    ``settings``. Set the sandbox's faults before: the worker starts inside."""
    with ExitStack() as clients:
        def start(n: int, *, channel: Channel = Channel.EMAIL, settings: dict[str, Any] | None = None,
                  agents: list[str] | None = None, worker_env: dict[str, str] | None = None) -> BulkCampaign:
            s = sandbox.settings.model_copy(update={**(settings or {}), "home": tmp_path})
            tag = s.app_id
            db.execute(USERS[channel], {"tag": tag, "n": n})
            template(db, f"{tag}_{channel}", "Hi {{ user.first_name }}", channel=channel.value)
            worker_factory(s, agents=["route-bulk", f"deliver-{channel}-bulk", *(agents or []), "status"],
                           extra_env=worker_env).wait_ready()
            auth = {"Authorization": f"Bearer {make_api_key(s)}"}
            client = clients.enter_context(TestClient(create_api(s, ApiConfig(rate_limit=1000, key_cache_seconds=0))))
            recipients = [f"{tag}-{i}" for i in range(1, n + 1)]
            started = client.post("/v1/campaigns", headers=auth,
                                  json={"template": f"{tag}_{channel}", "channels": [channel.value], "recipients": recipients})
            assert started.status_code == 202, started.text
            return BulkCampaign(started.json()["id"], n, client, auth)

        yield start
