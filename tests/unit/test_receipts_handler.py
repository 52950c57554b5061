"""The receipts handler over the in-memory receipts and status stores."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from infra.settings import Settings
from schemas.codec import Codec
from tests.support import status_scenarios as scenarios
from tests.support.status_world import MemoryWorld, World


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec()


def run(scenario: Callable[[World], Awaitable[None]], codec: Codec) -> None:
    asyncio.run(scenario(MemoryWorld(Settings(), codec)))


def test_a_receipt_for_a_known_delivery_updates_its_status(codec):
    run(scenarios.a_receipt_for_a_known_delivery_updates_its_status, codec)


def test_a_hard_bounce_marks_the_address_undeliverable_and_drops_the_cached_recipient(codec):
    run(scenarios.a_hard_bounce_marks_the_address_and_drops_the_cached_recipient, codec)


def test_a_receipt_for_an_unknown_provider_message_id_climbs_the_ladder_then_is_dead_lettered(codec):
    run(scenarios.a_receipt_for_an_unknown_message_id_climbs_the_ladder_then_is_dead_lettered, codec)
