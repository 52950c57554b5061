"""Cancel what waits: ``DELETE /v1/notifications/{id}`` (one notification) and ``POST /v1/cancellations`` (a key).

Both answer once every worker has seen the cancel (``HERALD_CAMPAIGN__CANCEL_CACHE_SECONDS``), so nothing is sent
after the answer (producers/cancellations.py).
"""
from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, Field

from producers import cancellations as cx
from producers.api.auth import Resources, SendKey
from producers.api.errors import ApiError
from producers.api.hostile import CheckedRoute
from producers.api.models import ID, Strict
from producers.api.notifications import ERRORS
from producers.campaign_run import connect
from streams.stores.cancellations import CancelKind

router = APIRouter(tags=["notifications"], route_class=CheckedRoute)


class CancelRequest(Strict):
    key: str = Field(min_length=1, max_length=cx.MAX_KEY_CHARS, description="the cancellation_key to cancel")


class KeyCanceled(BaseModel):
    key: str
    canceled_at: datetime
    scheduled_canceled: int = Field(description="waiting rows (send_at, quiet hours) ended 'canceled' at once; what "
                                                "the workers hold ends 'canceled' when they meet it")


class NotificationCanceled(BaseModel):
    id: str
    canceled_at: datetime
    status: str = "canceled"
    scheduled_canceled: int


@router.post("/v1/cancellations", response_model=KeyCanceled,
             responses={**ERRORS, 422: {"description": "an empty or too long key"}})
async def cancel_key(body: CancelRequest, caller: SendKey, res: Resources) -> KeyCanceled:
    """Cancel every notification carrying this ``cancellation_key`` that has not been sent (scope ``send``): those
    scheduled (``send_at``), deferred by quiet hours, waiting in a retry tier or in Kafka end ``canceled`` and are
    never delivered. Events with the key that occur after the cancel go on. Canceling again is harmless.

    Keys span tenants, so a key bound to a tenant cannot cancel by key (403); it can cancel one notification with
    ``DELETE /v1/notifications/{id}``.
    """
    if caller.tenant is not None:
        raise ApiError(403, "forbidden", "cancellation keys span tenants: use an API key without a tenant, or "
                                         "DELETE /v1/notifications/{id}")
    if problem := cx.key_problem(body.key):
        raise HTTPException(422, problem)

    def run() -> cx.Canceled:
        with connect(res.settings) as conn:
            return cx.cancel(res.settings, conn, CancelKind.KEY, body.key, res.codec)

    done = await asyncio.to_thread(run)
    return KeyCanceled(key=body.key, canceled_at=done.canceled_at, scheduled_canceled=done.scheduled)


@router.delete("/v1/notifications/{notification_id}", response_model=NotificationCanceled,
               responses={**ERRORS, 404: {"description": "unknown notification"},
                          409: {"description": "already sent, or ended without being sent: nothing to cancel"}})
async def cancel_notification(notification_id: Annotated[str, Path(pattern=ID)], caller: SendKey,
                              res: Resources) -> NotificationCanceled:
    """Cancel one notification that has not been sent (scope ``send``): scheduled, deferred by quiet hours, queued or
    waiting in a retry tier, it ends ``canceled`` and is never delivered. A notification already sent answers 409.
    Canceling again answers the same. A key with a tenant reaches its tenant's notifications only.
    """
    def run() -> tuple[int, str] | cx.Canceled:
        with connect(res.settings) as conn:
            row = conn.execute(
                "SELECT n.status FROM notifications n WHERE n.id = %s AND (%s::text IS NULL OR EXISTS "
                "(SELECT 1 FROM users u WHERE u.id = n.user_id AND u.tenant = %s::text))",
                (notification_id, caller.tenant, caller.tenant)).fetchone()
            waiting = cx.pending(conn, notification_id) if row is not None or caller.tenant is None else 0
            if row is None and not waiting:
                return 404, (f"no notification '{notification_id}' (a just-accepted one appears once the pipeline "
                             "has queued it)")
            status = row[0] if row is not None else None
            if status is not None and not waiting:
                if cx.is_sent(status):
                    return 409, (f"notification '{notification_id}' was already sent (status '{status}'); "
                                 "a sent notification cannot be canceled")
                if status in cx.ENDED:
                    return 409, f"notification '{notification_id}' already ended '{status}' unsent; nothing to cancel"
            return cx.cancel(res.settings, conn, CancelKind.NOTIFICATION, notification_id, res.codec)

    done = await asyncio.to_thread(run)
    if isinstance(done, tuple):
        code, message = done
        if code == 409:
            raise ApiError(409, "already_sent" if "already sent" in message else "conflict", message)
        raise HTTPException(code, message)
    return NotificationCanceled(id=notification_id, canceled_at=done.canceled_at, scheduled_canceled=done.scheduled)
