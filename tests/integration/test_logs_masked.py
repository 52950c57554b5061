"""No address, phone number, token or secret reaches a log line: a worker at debug level, `herald api` under uvicorn."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from infra.topics import deliver_topic
from schemas.codec import Codec
from streams.output import Output
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
    codec, out = Codec(), Output(settings.kafka_bootstrap)
    d = delivery("email", address="jane.roe@example.com")
    out.send_all_blocking([delivery_record(codec, deliver_topic(settings, "email"), d)])
    log_path = tmp_path / "worker.log"
    env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "infra.cli.main", "worker", "--loglevel", "debug", "--agent", "deliver-email"]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: db.execute("SELECT 1 FROM deliveries WHERE status = 'sent' AND delivery_id = %s",
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
    assert not prefixes_in(text, SENDGRID_KEY), [l for l in text.splitlines() if SENDGRID_KEY[:4] in l][:5]
    assert "jane.roe@example.com" not in text
