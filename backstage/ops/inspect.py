"""Queue statistics: the one reading of a queue's depth, backlog and dead
letters, shared by ``backstage inspect``, the worker's Prometheus metrics
and (later) the dashboard.

Read-only; bounded: two pipelined round trips for any number of queues
(the second only for queues with pending entries, and only when asked).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Collection, Sequence

import redis

from ..protocol.keys import PRIORITIES, Keys

__all__ = ["QueueStats", "queue_stats", "discover_queues"]


@dataclass(frozen=True)
class QueueStats:
    """One queue as one consumer group sees it."""

    queue: str
    length: int  # entries in the ready stream (pending ones included, unless deleted on ack)
    pending: int  # delivered to the group and not yet acked (PEL)
    oldest_pending_s: float | None  # age of the oldest pending entry (when asked for)
    lag: int | None  # entries not yet delivered to the group (Redis 7+)
    consumers: int  # of the group; only live workers' when asked (``live=``)
    dead_letters: int
    stale_consumers: tuple[str, ...] = ()  # consumers of stopped workers not yet removed (when ``live=``)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def queue_stats(r: "redis.Redis", keys: Keys, group: str, queues: Sequence[str], *,
                oldest: bool = True, live: Collection[str] | None = None) -> list[QueueStats]:
    """Statistics of ``queues`` for consumer ``group``; ``oldest`` also reads the
    age of each queue's oldest pending entry (one more round trip). With
    ``live`` (the consumer names of live workers, from presence), ``consumers``
    counts only those, and the others are listed in ``stale_consumers``
    (one more round trip, for queues that have consumers)."""
    pipe = r.pipeline(transaction=False)
    for q in queues:
        pipe.xlen(keys.stream(q))
        pipe.xlen(keys.dead_letter(q))
        pipe.xinfo_groups(keys.stream(q))
    replies = pipe.execute(raise_on_error=False)
    rows: list[dict[str, Any]] = []
    for i, q in enumerate(queues):
        length, dead, groups = replies[3 * i:3 * i + 3]
        for reply in (length, dead):
            if isinstance(reply, Exception) and not isinstance(reply, redis.ResponseError):
                raise reply
        row: dict[str, Any] = {"queue": q, "length": length if isinstance(length, int) else 0, "pending": 0,
                               "oldest_pending_s": None, "lag": None, "consumers": 0,
                               "dead_letters": dead if isinstance(dead, int) else 0}
        for g in groups if isinstance(groups, list) else ():  # an error: no stream or no group yet
            if _text(g["name"]) == group:
                row["pending"] = int(g["pending"])
                row["consumers"] = int(g["consumers"])
                row["lag"] = g.get("lag")
        rows.append(row)
    busy = [row for row in rows if oldest and row["pending"]]
    if busy:
        pipe = r.pipeline(transaction=False)
        for row in busy:
            pipe.xpending_range(keys.stream(row["queue"]), group, min="-", max="+", count=1)
        now = time.time()
        for row, first in zip(busy, pipe.execute(raise_on_error=False)):
            if isinstance(first, list) and first:
                ms = int(_text(first[0]["message_id"]).split("-")[0])
                row["oldest_pending_s"] = round(now - ms / 1000, 1)
    counted = [row for row in rows if live is not None and row["consumers"]]
    if counted:
        assert live is not None
        pipe = r.pipeline(transaction=False)
        for row in counted:
            pipe.xinfo_consumers(keys.stream(row["queue"]), group)
        for row, found in zip(counted, pipe.execute(raise_on_error=False)):
            if isinstance(found, list):
                names = {_text(c["name"]) for c in found}
                row["consumers"] = len(names & set(live))
                row["stale_consumers"] = tuple(sorted(names - set(live)))
    return [QueueStats(**row) for row in rows]


def discover_queues(r: "redis.Redis", keys: Keys) -> list[str]:
    """Every queue with a ready stream under this prefix (SCAN), the built-in ones first."""
    found = set(PRIORITIES)
    for raw in r.scan_iter(match=keys.match_all, _type="stream", count=1000):
        try:
            name = keys.queue_of(_text(raw))
        except ValueError:
            continue
        if ":" not in name and _text(raw) != keys.broadcast:
            found.add(name)
    rest = sorted(found - set(PRIORITIES))
    return [q for q in PRIORITIES if q in found] + rest
