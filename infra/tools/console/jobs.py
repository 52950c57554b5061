"""Dead-letter replays started from the console: planned and sent by ``producers.dlq`` exactly as
``herald dlq replay`` does (``prepare_replay``, then ``send`` at the chosen rate), in a thread, with progress.

A replay passes the deliver stage's ledger like any delivery, so a dead letter replayed twice is sent once.
A job's progress is kept in Redis (a day), so every process of ``herald api --workers N`` shows it, whichever one
the browser's next request reaches.
"""
from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis

from infra.settings import Settings
from producers.dlq import ReplayPlan, Selection, prepare_replay, send


@dataclass
class ReplayJob:
    id: str
    key_id: int
    rate: float
    total: int = 0
    done: int = 0
    sent: int = 0
    failed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    by_topic: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    error: str | None = None        # the replay could not run at all (Kafka away)
    finished: bool = False
    started_at: float = field(default_factory=time.time)

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "total": self.total, "done": self.done, "sent": self.sent, "failed": self.failed,
                "skipped": dict(self.skipped), "by_topic": dict(self.by_topic), "errors": dict(self.errors.most_common(5)),
                "error": self.error, "finished": self.finished}

    def stored(self) -> str:
        return json.dumps({**self.json(), "key_id": self.key_id, "rate": self.rate, "started_at": self.started_at})

    @classmethod
    def from_stored(cls, text: str | bytes) -> ReplayJob:
        d = json.loads(text)
        return cls(d["id"], d["key_id"], d["rate"], d["total"], d["done"], d["sent"], d["failed"], Counter(d["skipped"]),
                   Counter(d["by_topic"]), Counter(d["errors"]), d["error"], d["finished"], d["started_at"])


def by_target(plan: ReplayPlan) -> list[tuple[str, str, str, int]]:
    """(to topic, from stage, reason, count) of a plan, as the CLI's table shows it."""
    c: Counter[tuple[str, str, str]] = Counter((r.topic, e.stage, e.error_class) for e, r in plan.records)
    return [(*k, n) for k, n in sorted(c.items())]


class ReplayJobs:
    """The replays of this API process (kept until it stops; the last ``keep`` of them)."""

    KEEP_SECONDS = 86400
    SAVE_EVERY = 0.5   # seconds between two progress writes

    def __init__(self, settings: Settings, keep: int = 50) -> None:
        self.settings = settings
        self.keep = keep
        self.jobs: dict[str, ReplayJob] = {}
        self._lock = threading.Lock()
        self._redis = redis.Redis.from_url(settings.redis_dsn)

    def _key(self, job_id: str) -> str:
        return self.settings.rkey("console", "replay", job_id)

    def _save(self, job: ReplayJob) -> None:
        # Redis away: the page of this process still shows the job; the others catch up at the next save
        with contextlib.suppress(redis.RedisError):
            self._redis.set(self._key(job.id), job.stored(), ex=self.KEEP_SECONDS)

    def start(self, key_id: int, selection: Selection, max_replays: int, limit: int | None, rate: float) -> ReplayJob:
        job = ReplayJob(uuid.uuid4().hex[:12], key_id, rate)
        with self._lock:
            self.jobs[job.id] = job
            while len(self.jobs) > self.keep:
                self.jobs.pop(next(iter(self.jobs)))
        self._save(job)
        threading.Thread(target=self._run, args=(job, selection, max_replays, limit), name=f"replay-{job.id}",
                         daemon=True).start()
        return job

    def get(self, job_id: str) -> ReplayJob | None:
        """This process's own job, else the one another process of the API runs (from Redis)."""
        if (job := self.jobs.get(job_id)) is not None:
            return job
        if not job_id.isalnum():
            return None
        try:
            text = self._redis.get(self._key(job_id))
        except redis.RedisError:
            return None
        return ReplayJob.from_stored(text) if isinstance(text, (str, bytes)) else None

    def _run(self, job: ReplayJob, selection: Selection, max_replays: int, limit: int | None) -> None:
        saved = time.monotonic()

        def progress(n: int) -> None:
            nonlocal saved
            job.done += n
            if time.monotonic() - saved >= self.SAVE_EVERY:
                saved = time.monotonic()
                self._save(job)

        try:
            plan = prepare_replay(self.settings, selection, max_replays, limit)   # planned again: the DLQ may have moved
            job.total, job.skipped = len(plan.records), plan.skipped
            if plan.records:
                result = send(self.settings, [r for _, r in plan.records], job.rate, progress)
                job.sent, job.failed, job.by_topic, job.errors = result.sent, result.failed, result.by_topic, result.errors
        except Exception as exc:  # noqa: BLE001 - shown on the job's page; nothing else runs in this thread
            job.error = f"{type(exc).__name__}: {exc}"
        finally:
            job.finished = True
            self._save(job)
