"""The runtime's small parts: which engine runs an agent, liveness, finishing the batch in hand, the consumer thread."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from infra.settings import DeliverTuning, Settings, WorkerConfig
from streams.runtime.consumer_thread import ConsumerThread, membership
from streams.runtime.in_hand import to_the_end
from streams.runtime.liveness import Liveness
from streams.runtime.registry import DEFAULT_ENGINES, AgentSpec, Engine, agent_specs, resolve_engine


def _engines(settings: Settings) -> dict[str, Engine | None]:
    return {s.name: s.engine for s in agent_specs(settings)}


def test_the_route_is_a_faust_agent_the_sink_agents_batch_agents_and_the_tiers_their_own_loop():
    engines = _engines(Settings())
    lanes = {f"deliver-{c}{lane}" for c in ("email", "sms", "push") for lane in ("", "-critical", "-bulk")}
    assert {n for n, e in engines.items() if e is Engine.BATCH} == {"route-bulk", "route-critical", "status", *lanes}
    assert {n for n, e in engines.items() if e is Engine.SERVICE} == {"retry-1m", "retry-5m", "retry-15m"}
    assert engines["route"] is Engine.FAUST and engines["receipts"] is Engine.FAUST
    # the interactive agents (and the critical lane) take a batch as soon as a record waits, the rest keep a window
    ready = {s.name for s in agent_specs(Settings()) if s.ready}
    assert ready == {"route", "route-critical", *(f"deliver-{c}{lane}" for c in ("email", "sms", "push") for lane in ("", "-critical"))}
    assert set(DEFAULT_ENGINES) <= set(engines), "a default for an agent that does not exist"


def test_only_the_bulk_deliver_agents_hold_several_batches_at_once_as_the_setting_says():
    bulk = {f"deliver-{c}-bulk" for c in ("email", "sms", "push")}
    for settings, n in ((Settings(), 2), (Settings(deliver=DeliverTuning(bulk_ahead=3)), 3)):
        ahead = {s.name: s.ahead for s in agent_specs(settings)}
        assert {name for name, a in ahead.items() if a > 1} == bulk
        assert {ahead[name] for name in bulk} == {n}


def test_a_setting_overrides_an_engine_and_an_unknown_agent_there_is_an_error():
    engines = _engines(Settings(worker=WorkerConfig(engines={"route": "faust", "status": "faust"})))
    assert engines["route"] is Engine.FAUST and engines["status"] is Engine.FAUST
    with pytest.raises(ValueError, match="rout"):
        agent_specs(Settings(worker=WorkerConfig(engines={"rout": "batch"})))


def test_an_engine_a_handler_sets_itself_wins_over_the_default_and_a_service_is_always_a_service():
    async def loop(ctx) -> None: ...

    assert resolve_engine(AgentSpec("status", [], engine=Engine.FAUST)) is Engine.FAUST
    assert resolve_engine(AgentSpec("receipts", [])) is Engine.FAUST
    assert resolve_engine(AgentSpec("x", [], service=loop), {"x": "batch"}) is Engine.SERVICE


def test_static_membership_only_with_an_instance_id():
    assert membership(Settings()) == {}
    assert membership(Settings(worker=WorkerConfig(instance_id="w-1", static_session_seconds=30))) == {
        "group.instance.id": "w-1", "session.timeout.ms": 30_000}


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_liveness_names_an_agent_stuck_on_a_batch_and_a_loop_that_stopped_polling():
    clock = _Clock()
    live = Liveness(clock)
    live.watch("status", polls=True)
    live.watch("route", polls=False)
    clock.t += 500                       # idle Faust agent: fine; a polling loop silent for 500 s: not
    assert live.stalled(120) == {"status": "no poll for 500 s"}
    live.done("status")
    live.begin("route")
    clock.t += 100
    assert live.verdict(120) == (200, "ok: 2 agent(s) progressing\n")
    clock.t += 30
    code, body = live.verdict(120)
    assert code == 503 and "route: a batch in hand for 130 s" in body and "status" in body
    live.done("route")
    live.done("status")
    assert live.verdict(120)[0] == 200


def test_a_stop_lets_the_batch_in_hand_finish_within_the_bound():
    finished: list[str] = []

    async def batch(seconds: float, name: str) -> None:
        await asyncio.sleep(seconds)
        finished.append(name)

    async def main() -> None:
        short = asyncio.ensure_future(to_the_end(batch(0.2, "short"), 5, "a"))
        long = asyncio.ensure_future(to_the_end(batch(5, "long"), 0.2, "b"))
        await asyncio.sleep(0.05)
        short.cancel()
        long.cancel()
        t0 = time.monotonic()
        for t in (short, long):
            with pytest.raises(asyncio.CancelledError):
                await t
        assert time.monotonic() - t0 < 1
        await asyncio.sleep(0.1)

    asyncio.run(main())
    assert finished == ["short"], "the batch within the bound finishes, the one beyond it is abandoned"


class _FakeConsumer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def consume(self, n: int, timeout: float) -> list:
        time.sleep(timeout)
        self.calls.append(("consume", threading.current_thread().name))
        return []

    def commit(self, offsets, asynchronous: bool) -> None:
        self.calls.append(("commit", threading.current_thread().name))

    def close(self) -> None:
        self.calls.append(("close", threading.current_thread().name))


def test_the_consumer_thread_closes_after_a_pending_consume_in_the_same_thread_even_when_cancelled():
    fake = _FakeConsumer()

    async def main() -> None:
        kafka = ConsumerThread(fake, "engine-x")
        await kafka.commit([])
        pending = asyncio.ensure_future(kafka.consume(10, 0.3))
        await asyncio.sleep(0.05)
        pending.cancel()                      # a stop while consume waits in its thread
        closing = asyncio.ensure_future(kafka.close())
        await asyncio.sleep(0.01)
        closing.cancel()                      # and the close itself cancelled: it still runs
        with pytest.raises(asyncio.CancelledError):
            await closing
        await asyncio.sleep(0.5)

    asyncio.run(main())
    assert [c for c, _ in fake.calls] == ["commit", "consume", "close"]
    assert len({t for _, t in fake.calls}) == 1 and fake.calls[0][1].startswith("engine-x")


def test_a_worker_of_the_critical_lane_runs_its_route_and_deliver_agents_and_the_others_the_rest():
    from infra.tools.cli.worker import LaneChoice, _of_lane

    specs = agent_specs(Settings())
    critical = _of_lane(specs, LaneChoice.CRITICAL, None)
    assert set(critical) == {"route-critical", "deliver-email-critical", "deliver-sms-critical", "deliver-push-critical"}
    others = _of_lane(specs, LaneChoice.OTHERS, None)
    assert set(critical) | set(others) == {s.name for s in specs} and not set(critical) & set(others)
    assert _of_lane(specs, LaneChoice.CRITICAL, ["route", "deliver-email-critical"]) == ["deliver-email-critical"]
    with pytest.raises(ValueError, match="no agent of lane critical"):
        _of_lane(specs, LaneChoice.CRITICAL, ["route"])
