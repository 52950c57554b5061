"""``herald worker`` as an orchestrator runs it: probes on a configured address, SIGTERM hands over cleanly."""
from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections import Counter

import pytest

from infra.kafka.producer import Producer
from infra.settings import WorkerConfig
from infra.tools.cli.worker import STOP_MARGIN_S
from infra.tools.sandbox.server import free_port
from infra.topics import deliver_topic
from schemas.codec import Codec
from tests.support.sandbox import delivery, delivery_record, sandbox  # noqa: F401 - fixture
from tests.support.worker import wait_for

pytestmark = pytest.mark.integration

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # loopback never through a proxy


def _get(url: str) -> tuple[int, str]:
    try:
        with _DIRECT.open(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _answers(url: str) -> bool:
    try:
        _get(url)
        return True
    except OSError:
        return False


def test_healthz_and_metrics_are_served_on_the_configured_host_and_port(topics, worker_factory):
    # 127.0.0.2 is loopback too: answering there and not on 127.0.0.1 shows the host setting applies
    port = free_port("127.0.0.2")
    settings = topics.model_copy(update={"metrics_port": port, "metrics_host": "127.0.0.2"})
    w = worker_factory(settings, agents=["status", "deliver-email"])
    base = f"http://127.0.0.2:{port}"
    wait_for(lambda: _answers(base + "/healthz"), 60, interval=0.3, message="/healthz to answer")
    code, body = wait_for(lambda: (r := _get(base + "/healthz"))[0] == 200 and "2 agent(s)" in r[1] and r, 60,
                          interval=0.3, message="/healthz 200 with both agents")
    assert body.startswith("ok")
    code, text = _get(base + "/metrics")
    assert code == 200 and "herald_last_batch_done_timestamp" in text and "herald_events_in" in text
    assert _get(base + "/nothing")[0] == 404
    assert not _answers(f"http://127.0.0.1:{port}/healthz")
    assert w.alive()


N = 6000


def test_sigterm_finishes_the_batch_in_hand_exits_0_in_bound_and_the_survivor_takes_over(sandbox, db, worker_factory):
    stop_seconds = 20.0
    settings = sandbox.settings.model_copy(update={
        "email_provider": "sendgrid", "batch_size": 100,
        "worker": WorkerConfig(stop_seconds=stop_seconds),
    })
    # each provider request takes a while, so the backlog lasts long enough to stop a worker in the middle of it
    # (each worker has two requests in hand: HERALD_DELIVER__BULK_AHEAD)
    sandbox.control.faults("sendgrid", latency_ms=300)
    codec, out = Codec(), Producer(settings)
    topic = deliver_topic(settings, "email", "bulk")
    ds = [delivery("email", lane="bulk", category="marketing", campaign_id="c-stop") for _ in range(N)]
    out.send_all_blocking([delivery_record(codec, topic, d) for d in ds])
    ids = [d["delivery_id"] for d in ds]

    def sent() -> int:
        return db.execute("SELECT count(*) FROM delivery_state WHERE status='sent' AND delivery_id = ANY(%s)", (ids,)).fetchone()[0]

    leaving = worker_factory(settings, agents=["deliver-email-bulk"])
    survivor = worker_factory(settings, agents=["deliver-email-bulk"])
    wait_for(lambda: sent() >= N // 4, 120, interval=0.2, message="a quarter of the backlog sent")
    rc, took = leaving.terminate(timeout=stop_seconds + STOP_MARGIN_S + 15)
    at_stop = sent()
    assert rc == 0, f"exit code {rc}\n{leaving.log_text()[-3000:]}"
    assert took <= stop_seconds + STOP_MARGIN_S, f"took {took:.1f} s to exit"
    assert at_stop < N, "the backlog was gone before the stop: nothing to hand over"

    # a batch abandoned mid-handler would leave claimed rows that wait out the claim lease (120 s) before the
    # survivor may send them; a finished one leaves nothing claimed, so the survivor carries straight on
    t_stop = time.monotonic()
    wait_for(lambda: sent() == N, 100, interval=0.5, message=f"all {N} sent by the survivor, well within the claim lease")
    handover = time.monotonic() - t_stop
    assert survivor.alive()
    inbox = Counter(m["to"] for m in sandbox.control.inbox("email"))
    assert sum(inbox.values()) == N and set(inbox) == {d["address"] for d in ds}, \
        f"duplicates: {[a for a, n in inbox.items() if n > 1][:5]}"
    rows = db.execute("SELECT count(*), count(DISTINCT delivery_id) FROM delivery_state WHERE delivery_id = ANY(%s)", (ids,)).fetchone()
    assert rows == (N, N)
    finished = "finishing the batch in hand" in leaving.log_text()
    print(f"\nSIGTERM → exit 0 in {took:.1f} s with {at_stop}/{N} sent (batch in hand finished: {finished}); "
          f"the survivor sent the rest in {handover:.1f} s")


def test_the_scheduler_serves_healthz_and_metrics_on_the_configured_host(topics, tmp_path):
    import os
    import subprocess
    import sys

    port = free_port("127.0.0.2")
    env = {**os.environ, **topics.model_copy(update={"metrics_host": "127.0.0.2"}).to_env(), "PYTHONUNBUFFERED": "1"}
    with open(tmp_path / "scheduler.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "infra.tools.cli.main", "scheduler", "--interval", "0.2",
                                 "--metrics-port", str(port), "--housekeeping-every", "0"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            base = f"http://127.0.0.2:{port}"
            wait_for(lambda: _answers(base + "/healthz"), 60, interval=0.3, message="the scheduler's /healthz")
            assert _get(base + "/healthz") == (200, "ok\n")
            code, text = _get(base + "/metrics")
            assert code == 200 and "herald_scheduler_last_tick_timestamp" in text
        finally:
            proc.terminate()
            assert proc.wait(30) == 0
