"""Pure liveness rule for /healthz: a consumer that stopped committing.

Why committed offsets and not a worker heartbeat: a heartbeat proves a process
runs, not that it consumes (aiokafka #1154: a consumer can sit stuck after a
broker restart while its process looks fine). The consumer group's committed
offsets against the log end show exactly the failure users feel: records
waiting and nobody moving past them. A partition is stalled when it has lag
and its committed offset has not moved for ``stall_after`` seconds; an idle
partition (no lag) is healthy however old its commit is.
"""
from __future__ import annotations

from dataclasses import dataclass, field

GroupPartition = tuple[str, str, int]  # (consumer group, topic, partition)


@dataclass(frozen=True, slots=True)
class Stall:
    group: str
    topic: str
    partition: int
    committed: int
    end: int
    stalled_for: float

    @property
    def lag(self) -> int:
        return self.end - self.committed


@dataclass
class CommitWatch:
    stall_after: float
    # partition → (committed offset last seen, time it was first seen at that offset or without lag)
    _progress: dict[GroupPartition, tuple[int, float]] = field(default_factory=dict)

    def observe(self, now: float, offsets: dict[GroupPartition, tuple[int, int]]) -> list[Stall]:
        """Record a sample ``{(group, topic, partition): (committed, log_end)}`` taken at ``now``; return the stalled partitions.

        A committed offset below 0 means "nothing committed yet": the lag is the whole log.
        """
        stalls: list[Stall] = []
        for tp, (committed, end) in offsets.items():
            committed = max(committed, 0)
            seen = self._progress.get(tp)
            if seen is None or seen[0] != committed or committed >= end:
                self._progress[tp] = (committed, now)
                continue
            waited = now - seen[1]
            if waited >= self.stall_after:
                stalls.append(Stall(tp[0], tp[1], tp[2], committed, end, waited))
        for tp in set(self._progress) - set(offsets):
            del self._progress[tp]
        return sorted(stalls, key=lambda s: (s.group, s.topic, s.partition))
