"""`herald demo` (what `make demo` runs) delivers on every channel and prints it."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_demo_prints_delivered_notifications(topics):
    env = {**os.environ, **topics.to_env(), "NO_PROXY": "127.0.0.1,localhost"}
    done = subprocess.run([sys.executable, "-m", "infra.tools.cli.main", "demo", "--timeout", "120"],
                          capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "What Herald delivered" in out
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert len(rows) == 14  # 3 orders x 3 channels, a follower x 2, a reset, a scheduled birthday x 2
    not_sent = [r for r in rows if " sent " not in r]
    assert not not_sent, "\n".join(not_sent) + "\n" + out
    assert {"email", "sms", "push"} <= {c for r in rows for c in ("email", "sms", "push") if f" {c} " in r}
    assert "Sandbox providers received: fcm 5, smtp 6, twilio 3" in out
    assert "worker and scheduler stopped" in out
    # the worker's and the scheduler's logs of the whole run: no address, number or sandbox credential
    from tests.support.logscan import credentials, scan_logs

    tag = re.search(r"Herald demo (\w+):", out)
    assert tag, out[:500]
    logs = [topics.home / "demo" / f"{name}-{tag[1]}.log" for name in ("worker", "scheduler")]
    assert all(p.exists() for p in logs), logs
    assert scan_logs(logs, credentials(topics), shortest=8) == {}
    # the scheduler's lines come through Herald's masking JSON formatter (they were plain basicConfig lines)
    assert [json.loads(line)["msg"] for line in logs[1].read_text().splitlines() if line.strip()]
    # it ends with the console's address and a key that signs in to it
    last = out.strip().splitlines()[-2:]
    assert last[0].startswith(f"Console: http://{topics.api_host}:{topics.api_port}/console"), last
    key = re.search(r"Sign in with this key .*: (hk_\S+)$", last[1])
    assert key, last
    from tests.support.console import ConsoleServer, sign_in_over_http

    with ConsoleServer(topics) as srv:
        assert sign_in_over_http(srv.url, key[1]).status_code == 200
