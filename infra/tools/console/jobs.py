"""Dead-letter replays started from the console: planned and sent by ``producers.dlq`` exactly as
``herald dlq replay`` does (``prepare_replay``, then ``send`` at the chosen rate), in a thread, with progress.

A replay passes the deliver stage's ledger like any delivery, so a dead letter replayed twice is sent once.
"""
from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

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


def by_target(plan: ReplayPlan) -> list[tuple[str, str, str, int]]:
    """(to topic, from stage, reason, count) of a plan, as the CLI's table shows it."""
    c: Counter[tuple[str, str, str]] = Counter((r.topic, e.stage, e.error_class) for e, r in plan.records)
    return [(*k, n) for k, n in sorted(c.items())]


class ReplayJobs:
    """The replays of this API process (kept until it stops; the last ``keep`` of them)."""

    def __init__(self, settings: Settings, keep: int = 50) -> None:
        self.settings = settings
        self.keep = keep
        self.jobs: dict[str, ReplayJob] = {}
        self._lock = threading.Lock()

    def start(self, key_id: int, selection: Selection, max_replays: int, limit: int | None, rate: float) -> ReplayJob:
        job = ReplayJob(uuid.uuid4().hex[:12], key_id, rate)
        with self._lock:
            self.jobs[job.id] = job
            while len(self.jobs) > self.keep:
                self.jobs.pop(next(iter(self.jobs)))
        threading.Thread(target=self._run, args=(job, selection, max_replays, limit), name=f"replay-{job.id}",
                         daemon=True).start()
        return job

    def get(self, job_id: str) -> ReplayJob | None:
        return self.jobs.get(job_id)

    def _run(self, job: ReplayJob, selection: Selection, max_replays: int, limit: int | None) -> None:
        def progress(n: int) -> None:
            job.done += n

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
