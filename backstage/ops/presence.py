"""Presence: who is alive, and which queues are paused.

Owns the ``P:workers`` key family (ours):

- ``P:workers`` sorted set: consumer → expiry (epoch ms) of its heartbeat;
- ``P:workers:<consumer>`` its last heartbeat (JSON), with the same expiry;
- ``P:workers:paused`` set of queue names no worker fetches from;
- ``P:workers:minute:<epoch minute>`` hash: jobs ``processed`` and ``failed``
  by all workers in that minute (each heartbeat adds its deltas; kept 2 h).

Written by masters (heartbeats), read by clients and the CLI. Control
commands and their replies (``P:workers:reply:<id>``) are
:mod:`backstage.ops.control`'s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import orjson
import redis
import redis.asyncio

from ..protocol import wire
from ..protocol.keys import Keys

__all__ = ["RESERVED_CONSUMERS", "heartbeat", "live_consumers", "live_workers", "remove", "paused_queues",
           "set_paused", "per_minute", "live_consumers_async", "live_workers_async", "set_paused_async", "Served"]

RESERVED_CONSUMERS = frozenset({"paused", "reply"})
MINUTE_TTL_S = 7200  # per-minute job counts are kept two hours (the dashboard charts one)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def heartbeat(r: "redis.Redis", keys: Keys, consumer: str, info: dict[str, Any], ttl_ms: int,
              counts: tuple[int, int] = (0, 0)) -> set[str]:
    """Publish one master's presence, and add ``counts`` (jobs processed,
    failed since the last heartbeat) to this minute's totals; returns the
    paused queues (one round trip)."""
    now = int(time.time() * 1000)
    pipe = r.pipeline(transaction=False)
    if counts[0] or counts[1]:
        minute = keys.worker_minute(now // 60_000)
        pipe.hincrby(minute, "processed", counts[0])
        pipe.hincrby(minute, "failed", counts[1])
        pipe.expire(minute, MINUTE_TTL_S)
    pipe.set(keys.worker(consumer), orjson.dumps(info), px=ttl_ms)
    pipe.zadd(keys.workers, {consumer: now + ttl_ms})
    pipe.zremrangebyscore(keys.workers, "-inf", now)
    pipe.smembers(keys.paused)
    return {_text(q) for q in pipe.execute()[-1]}


def remove(r: "redis.Redis", keys: Keys, consumer: str) -> None:
    """Withdraw a master's presence (clean shutdown)."""
    pipe = r.pipeline(transaction=False)
    pipe.delete(keys.worker(consumer))
    pipe.zrem(keys.workers, consumer)
    pipe.execute()


def live_consumers(r: "redis.Redis", keys: Keys) -> list[str]:
    now = int(time.time() * 1000)
    return [_text(c) for c in r.zrangebyscore(keys.workers, now, "+inf")]


def live_workers(r: "redis.Redis", keys: Keys) -> list[dict[str, Any]]:
    """Heartbeats of the masters alive now, by consumer name."""
    names = live_consumers(r, keys)
    if not names:
        return []
    out = []
    for raw in r.mget([keys.worker(n) for n in names]):
        if raw is not None:
            out.append(orjson.loads(raw))
    return sorted(out, key=lambda w: w.get("consumer", ""))


def per_minute(r: "redis.Redis", keys: Keys, minutes: int, now_ms: int | None = None) -> list[tuple[int, int, int]]:
    """(epoch minute, processed, failed) of the last ``minutes`` minutes, oldest first."""
    last = (now_ms if now_ms is not None else int(time.time() * 1000)) // 60_000
    span = range(last - minutes + 1, last + 1)
    pipe = r.pipeline(transaction=False)
    for m in span:
        pipe.hmget(keys.worker_minute(m), "processed", "failed")
    return [(m, int(p or 0), int(f or 0)) for m, (p, f) in zip(span, pipe.execute())]


def paused_queues(r: "redis.Redis", keys: Keys) -> set[str]:
    return {_text(q) for q in r.smembers(keys.paused)}


def set_paused(r: "redis.Redis", keys: Keys, queues: Iterable[str], paused: bool) -> None:
    qs = list(queues)
    if qs:
        (r.sadd if paused else r.srem)(keys.paused, *qs)


# -- the same reads for AsyncClient ----------------------------------------------------------
async def live_consumers_async(r: "redis.asyncio.Redis", keys: Keys) -> list[str]:
    """:func:`live_consumers` for an asyncio client."""
    now = int(time.time() * 1000)
    return [_text(c) for c in await r.zrangebyscore(keys.workers, now, "+inf")]


async def live_workers_async(r: "redis.asyncio.Redis", keys: Keys) -> list[dict[str, Any]]:
    """:func:`live_workers` for an asyncio client."""
    names = await live_consumers_async(r, keys)
    if not names:
        return []
    raws = await r.mget([keys.worker(n) for n in names])
    return sorted((orjson.loads(raw) for raw in raws if raw is not None), key=lambda w: w.get("consumer", ""))


async def set_paused_async(r: "redis.asyncio.Redis", keys: Keys, queues: Iterable[str], paused: bool) -> None:
    """:func:`set_paused` for an asyncio client."""
    qs = list(queues)
    if qs:
        await (r.sadd if paused else r.srem)(keys.paused, *qs)


@dataclass(frozen=True)
class Served:
    """What the live workers run, from their heartbeats: the tasks they serve and
    their payload size limit. Decides which entries a requeue would only bounce."""

    tasks: frozenset[str]
    max_payload_bytes: int
    workers: int

    @classmethod
    def from_heartbeats(cls, workers: Sequence[Mapping[str, Any]]) -> "Served":
        """From ``presence.live_workers`` (workers that publish no task list count as none)."""
        tasks = frozenset(t for w in workers for t in w.get("tasks", ()) if isinstance(t, str))
        limits = [int(w["max_payload_bytes"]) for w in workers if isinstance(w.get("max_payload_bytes"), int)]
        return cls(tasks, max(limits) if limits else wire.DEFAULT_MAX_PAYLOAD_BYTES, len(workers))

    def problem(self, task: str, fields: Mapping[str, str]) -> str | None:
        """Why requeueing a dead letter (its ``taskName`` and fields, as text) cannot
        cure what dead-lettered it; None when it may."""
        reason = fields.get("reason", "")
        if reason == "unknown-task" and task not in self.tasks:
            who = f"none of the {self.workers} live worker(s)" if self.workers else "no live worker"
            return (f"unknown-task: {who} serves it (their heartbeats list their tasks): deploy the handler "
                    "first, or pass --force")
        if fields.get("errorType") == "PayloadTooLarge" and \
                len(fields.get("payload", "").encode()) > self.max_payload_bytes:
            return (f"payload over the workers' {self.max_payload_bytes}-byte limit (--max-payload-bytes): "
                    "raise it first, or pass --force")
        return None
