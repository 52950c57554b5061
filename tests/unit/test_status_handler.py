"""The status handler over the in-memory status store: highest rank wins, history keeps everything, never backwards."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from infra.kafka.records import InRecord
from infra.settings import Settings
from schemas.codec import Codec
from schemas.vocabulary import Status
from streams.stages.status_fold import fold
from tests.support import status_scenarios as scenarios
from tests.support.status_world import (
    MemoryWorld,
    World,
    change,
    status_handler,
    status_input,
)


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec()


def run(scenario: Callable[[World], Awaitable[None]], codec: Codec) -> None:
    asyncio.run(scenario(MemoryWorld(Settings(), codec)))


def test_changes_in_any_order_end_at_the_highest_rank_and_all_are_in_the_history(codec):
    run(scenarios.changes_in_any_order_end_at_the_highest_rank, codec)


def test_changes_in_any_order_across_batches_end_at_the_highest_rank(codec):
    run(scenarios.changes_in_any_order_across_batches_end_at_the_highest_rank, codec)


def test_a_lower_status_in_a_later_batch_does_not_move_the_notification_backwards(codec):
    run(scenarios.a_lower_status_in_a_later_batch_does_not_move_it_backwards, codec)


def test_a_delivery_said_sent_again_adds_no_second_history_row(codec):
    run(scenarios.a_delivery_said_sent_again_adds_no_second_history_row, codec)


def test_a_notification_keeps_the_first_trace_id_its_changes_name(codec):
    run(scenarios.a_notification_keeps_the_first_trace_id_its_changes_name, codec)


def test_a_status_record_without_a_trace_id_takes_its_headers(codec):
    run(scenarios.a_status_record_without_a_trace_id_takes_its_headers, codec)


def test_undecodable_records_and_unknown_channels_are_dead_lettered_and_the_rest_written(codec):
    async def scenario(world: World) -> None:
        good = status_input(world, [change("n-good", Status.SENT)])
        stranger = change("n-odd", Status.SENT).to_avro() | {"channel": "pigeon"}
        bad = [InRecord(world.settings.topic("status"), 0, 9, b"k", b"garbage"),
               InRecord(world.settings.topic("status"), 0, 10, b"k", world.codec.encode("StatusChange", stranger))]
        out = await status_handler(world).handle([*bad, *good])
        assert [dict(r.headers)["herald-dlq-error-class"] for r in out] == [b"not_avro", b"unknown_channel"]
        assert await world.statuses.status_of("n-good") == Status.SENT

    run(scenario, codec)


def test_fold_picks_the_first_of_equal_ranks_and_sorts_updates_by_id():
    folded = fold([change("n2", Status.SCHEDULED), change("n1", Status.QUEUED), change("n2", Status.DEFERRED)])
    assert [(u.id, u.status) for u in folded.updates] == [("n1", Status.QUEUED), ("n2", Status.SCHEDULED)]
    assert [c.status for c in folded.history] == [Status.SCHEDULED, Status.QUEUED, Status.DEFERRED]
