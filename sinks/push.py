"""The push channel's sink when APNs is on: APNs device tokens to APNs, every other token to FCM.

Why a dispatcher and not a platform on the ``Delivery``: the token's format
says which service it belongs to (an APNs device token is 64 hex characters,
an FCM registration token is 100+ characters with a colon; the devices API and
``herald users import`` refuse a token whose format contradicts its
platform), and an iOS app that uses Firebase registers an FCM token, which
must go to FCM. So the route stage, the ``Delivery`` schema, the ledger and
the device effects stay as they are: one push delivery per token, one result
per delivery in order, and an APNs ``410`` is an ``InvalidToken`` like FCM's
``UNREGISTERED``.

The two services are called concurrently; their results are put back in the
order of the deliveries.
"""
from __future__ import annotations

import asyncio

from schemas.records import Delivery
from schemas.vocabulary import Channel
from sinks.apns import is_apns_token
from sinks.base import Result, Sink


class PushSink:
    provider = "push"   # names the circuit breaker and the metrics of the push channel with both services
    channel = Channel.PUSH

    def __init__(self, fcm: Sink, apns: Sink) -> None:
        self.fcm = fcm
        self.apns = apns
        self.max_batch = min(fcm.max_batch, apns.max_batch)

    async def send_batch(self, deliveries: list[Delivery]) -> list[Result]:
        to_apns = [i for i, d in enumerate(deliveries) if is_apns_token(d.address or "")]
        if not to_apns:
            return await self.fcm.send_batch(deliveries)
        if len(to_apns) == len(deliveries):
            return await self.apns.send_batch(deliveries)
        apns_set = set(to_apns)
        to_fcm = [i for i in range(len(deliveries)) if i not in apns_set]
        fcm_results, apns_results = await asyncio.gather(
            self.fcm.send_batch([deliveries[i] for i in to_fcm]),
            self.apns.send_batch([deliveries[i] for i in to_apns]),
        )
        for part, got in ((to_fcm, fcm_results), (to_apns, apns_results)):
            if len(got) != len(part):
                raise RuntimeError(f"a push sink returned {len(got)} results for {len(part)} deliveries")
        out: list[Result | None] = [None] * len(deliveries)
        for idx, res in zip(to_fcm, fcm_results, strict=True):
            out[idx] = res
        for idx, res in zip(to_apns, apns_results, strict=True):
            out[idx] = res
        return [r for r in out if r is not None]

    async def close(self) -> None:
        await asyncio.gather(self.fcm.close(), self.apns.close())
