"""/healthz (the pipeline's consumers are committing), /readyz (Kafka, PostgreSQL, Redis answer), /metrics."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict

from producers.api.auth import Resources
from producers.api.hostile import CheckedRoute
from producers.api.kafka import group_offsets, herald_groups, kafka_answers
from producers.api.resources import ApiResources

router = APIRouter(tags=["operations"], route_class=CheckedRoute)


class HealthReport(BaseModel):
    """A probe's verdict (200 and 503 alike): ``ok`` and what was checked."""

    model_config = ConfigDict(extra="allow")
    ok: bool


async def _sample(res: ApiResources) -> dict[str, Any]:
    """Sample the workers' consumer-group offsets (at most every ``health_cache_seconds``) and judge them."""
    now = time.monotonic()
    if res.health_sample and now - res.health_sample[0] < res.config.health_cache_seconds:
        return res.health_sample[1]
    app_id = res.settings.app_id

    def read() -> tuple[list[str], dict]:
        groups = herald_groups(res.admin, app_id)
        return groups, group_offsets(res.admin, groups)

    try:
        groups, offsets = await asyncio.wait_for(asyncio.to_thread(read), 10)
    except Exception as exc:  # noqa: BLE001 - any failure to read offsets means we cannot vouch for the consumers
        verdict = {"ok": False, "error": f"cannot read the consumer groups' offsets: {exc!r}"}
    else:
        stalls = res.commit_watch.observe(now, offsets)
        verdict = {
            "ok": not stalls,
            "groups": groups,
            "partitions": len(offsets),
            "lag": sum(max(end - max(c, 0), 0) for c, end in offsets.values()),
            "stalled": [
                {"group": s.group, "topic": s.topic, "partition": s.partition, "lag": s.lag, "seconds_without_commit": round(s.stalled_for, 1)}
                for s in stalls
            ],
        }
    res.health_sample = (now, verdict)
    return verdict


@router.get("/healthz", response_model=HealthReport,
            responses={503: {"model": HealthReport, "description": "a consumer stopped committing"}})
async def healthz(res: Resources) -> JSONResponse:
    """Live when no partition with waiting records has gone ``HERALD_API__COMMIT_STALL_SECONDS`` without a commit
    by the workers' consumer groups (``app_id`` and ``app_id-*``)."""
    verdict = await _sample(res)
    return JSONResponse(verdict, status_code=200 if verdict["ok"] else 503)


async def _check(name: str, probe) -> tuple[str, str]:
    try:
        return name, str(await asyncio.wait_for(probe(), 5))
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported by name
        return name, f"error: {exc!r}"


@router.get("/readyz", response_model=HealthReport,
            responses={503: {"model": HealthReport, "description": "a dependency does not answer"}})
async def readyz(res: Resources) -> JSONResponse:
    """Ready when Kafka, PostgreSQL and Redis all answer."""
    async def pg() -> str:
        async with res.db.connection(timeout=5) as conn:
            await conn.execute("SELECT 1")
        return "ok"

    async def rd() -> str:
        await res.redis.ping()
        return "ok"

    async def kafka() -> str:
        return await asyncio.to_thread(kafka_answers, res.admin)

    results = dict(await asyncio.gather(_check("kafka", kafka), _check("postgresql", pg), _check("redis", rd)))
    ok = not any(v.startswith("error") for v in results.values())
    return JSONResponse({"ok": ok, **results}, status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response)
async def metrics(res: Resources) -> Response:
    """Prometheus metrics of this API process."""
    return Response(generate_latest(res.metrics.registry), media_type=CONTENT_TYPE_LATEST)
