"""Presence: who is alive, and which queues are paused.

Owns the ``P:workers`` key family (ours):

- ``P:workers`` sorted set: consumer → expiry (epoch ms) of its heartbeat.
  Members stay for :data:`KNOWN_FOR_MS` after they expire (a clean stop
  expires them at once): that is how reclaimers and sweepers tell our
  masters, alive or dead, from other SDKs' consumers (:func:`dead_consumers`,
  and ``reclaim.lua``);
- ``P:workers:<consumer>`` its last heartbeat (JSON), with the same expiry;
- ``P:workers:paused`` set of queue names no worker fetches from.

Written by masters (heartbeats), read by clients and the CLI. Control
commands and their replies (``P:workers:reply:<id>``) are
:mod:`backstage.ops.control`'s.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

import orjson
import redis

from ..protocol.keys import Keys

__all__ = ["RESERVED_CONSUMERS", "KNOWN_FOR_MS", "heartbeat", "live_consumers", "live_workers", "remove",
           "dead_consumers", "paused_queues", "set_paused"]

RESERVED_CONSUMERS = frozenset({"paused", "reply"})
#: How long a dead master stays listed in P:workers (as ours, and provably dead).
KNOWN_FOR_MS = 7 * 24 * 3600 * 1000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def heartbeat(r: "redis.Redis", keys: Keys, consumer: str, info: dict[str, Any],
              ttl_ms: int) -> tuple[set[str], int]:
    """Publish one master's presence; returns the paused queues and how many masters
    are alive (one round trip)."""
    now = int(time.time() * 1000)
    pipe = r.pipeline(transaction=False)
    pipe.set(keys.worker(consumer), orjson.dumps(info), px=ttl_ms)
    pipe.zadd(keys.workers, {consumer: now + ttl_ms})
    pipe.zremrangebyscore(keys.workers, "-inf", now - KNOWN_FOR_MS)
    pipe.smembers(keys.paused)
    pipe.zcount(keys.workers, now, "+inf")
    replies = pipe.execute()
    return {_text(q) for q in replies[3]}, int(replies[4])


def remove(r: "redis.Redis", keys: Keys, consumer: str) -> None:
    """Withdraw a master's presence (clean shutdown): it stays known, as dead."""
    pipe = r.pipeline(transaction=False)
    pipe.delete(keys.worker(consumer))
    pipe.zadd(keys.workers, {consumer: int(time.time() * 1000) - 1})
    pipe.execute()


def dead_consumers(r: "redis.Redis", keys: Keys) -> set[str]:
    """Our masters whose heartbeat expired (within KNOWN_FOR_MS): provably dead and ours."""
    now = int(time.time() * 1000)
    return {_text(c) for c in r.zrangebyscore(keys.workers, "-inf", f"({now}")}


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


def paused_queues(r: "redis.Redis", keys: Keys) -> set[str]:
    return {_text(q) for q in r.smembers(keys.paused)}


def set_paused(r: "redis.Redis", keys: Keys, queues: Iterable[str], paused: bool) -> None:
    qs = list(queues)
    if qs:
        (r.sadd if paused else r.srem)(keys.paused, *qs)
