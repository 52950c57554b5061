"""No address, phone number, token or secret reaches a log line: a worker at debug level, `herald api` under uvicorn."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from infra.kafka.producer import Producer
from infra.tools.sandbox.server import free_port
from infra.topics import deliver_topic
from schemas.codec import Codec
from tests.support.env import settings_env
from tests.support.sandbox import delivery, delivery_record, sandbox  # noqa: F401 - fixture
from tests.support.worker import wait_for

pytestmark = pytest.mark.integration

SENDGRID_KEY = "SG.Zq7xKp2LmN4vB8wR1tYc3d.Hf6Gj9Ks2Lq5Wx8Zb1Nc4Vm7Rt0Yp3Ua6Ie9Oo2Pq5"


def prefixes_in(text: str, secret: str, shortest: int = 4) -> list[str]:
    """Every prefix of ``secret`` of at least ``shortest`` characters that ``text`` contains."""
    return [secret[:n] for n in range(shortest, len(secret) + 1) if secret[:n] in text]


def test_worker_at_debug_level_logs_no_sendgrid_key(sandbox, db, tmp_path: Path):
    settings = sandbox.settings.model_copy(update={"email_provider": "sendgrid", "sendgrid_api_key": SecretStr(SENDGRID_KEY)})
    codec, out = Codec(), Producer(settings)
    d = delivery("email", address="jane.roe@example.com")
    out.send_all_blocking([delivery_record(codec, deliver_topic(settings, "email"), d)])
    log_path = tmp_path / "worker.log"
    env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "infra.tools.cli.main", "worker", "--loglevel", "debug", "--agent", "deliver-email"]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: db.execute("SELECT 1 FROM delivery_state WHERE status = 'sent' AND delivery_id = %s",
                                    (d["delivery_id"],)).fetchone(), 90, message="the delivery sent")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log_path.read_text(errors="replace")
    assert sandbox.control.inbox("email"), "the SendGrid sandbox got nothing: the worker did not send"
    assert "debug" in text.lower(), "the worker did not log at debug level"
    assert not prefixes_in(text, SENDGRID_KEY), [line for line in text.splitlines() if SENDGRID_KEY[:4] in line][:5]
    assert "jane.roe@example.com" not in text


def test_herald_api_logs_json_lines_without_addresses_or_numbers(topics, tmp_path: Path):
    import httpx

    from tests.support.api import make_api_key

    key = make_api_key(topics)
    port = free_port()
    log_path = tmp_path / "api.log"
    env = {**os.environ, **settings_env(topics), "PYTHONUNBUFFERED": "1", "NO_PROXY": "127.0.0.1,localhost"}
    cmd = [sys.executable, "-m", "infra.tools.cli.main", "api", "--host", "127.0.0.1", "--port", str(port), "--loglevel", "debug"]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    secrets = ["jane.doe@example.com", "+436641234567", "ann.roe@example.org", "+4915112345678", key]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}, timeout=10) as c:
            def up() -> bool:
                try:
                    return c.get("/healthz").status_code < 500
                except httpx.HTTPError:
                    return False

            wait_for(up, 60, 0.2, "herald api to answer")
            assert c.put("/v1/users/jane.doe@example.com", json={"email": "jane.doe@example.com", "phone": "+436641234567"}).status_code == 200
            assert c.get("/v1/users/jane.doe@example.com").status_code == 200
            assert c.get("/v1/users/+436641234567").status_code == 404
            bad = c.put("/v1/users/u2", json={"email": "ann.roe@example.org", "phone": "+4915112345678", "time_zone": "Mars/Base"})
            assert bad.status_code == 422
            assert c.post("/v1/notifications", json={"user_id": "ann.roe@example.org", "template": "x", "channels": ["fax"],
                                                     "variables": {"to": "ann.roe@example.org"}}).status_code == 422
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log_path.read_text(errors="replace")
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is JSON
    access = [entry["msg"] for entry in lines if entry["logger"] == "uvicorn.access"]
    assert any("/v1/users/[email]@example.com" in m for m in access), access
    assert any(entry["logger"] == "uvicorn.error" for entry in lines), "uvicorn's own lines go through the JSON formatter too"
    for s in secrets:
        assert not prefixes_in(text, s, shortest=min(8, len(s))), (s, [line for line in text.splitlines() if s[:8] in line][:3])
