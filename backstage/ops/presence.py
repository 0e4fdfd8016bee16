"""Presence and remote control: who is alive, and what to tell them.

Owns the ``P:workers`` key family (ours):

- ``P:workers`` sorted set: consumer → expiry (epoch ms) of its heartbeat.
  Members stay for KNOWN_FOR_MS after they expire (a clean stop expires
  them at once): that is how reclaimers and sweepers tell our masters, alive
  or dead, from other SDKs' consumers (see :func:`known_consumers`);
- ``P:workers:<consumer>`` its last heartbeat (JSON), with the same expiry;
- ``P:workers:paused`` set of queue names no worker fetches from;
- ``P:workers:reply:<id>`` list where workers answer a control command.

And the remote-control stream ``P:control`` (ours): written only by admin
users (``backstage acl admin``: the operator CLI, the dashboard), read by
every master with a plain ``XREAD`` from the id it last saw. The producer and
worker ACL rule sets cannot write it, so a leaked producer password cannot
stop workers or change their concurrency. Control messages that arrive as
broadcasts (the task ``backstage.control``, as older versions sent them) are
ignored.

Written by masters (heartbeats, replies), read by clients and the CLI.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

import orjson
import redis

from ..protocol.keys import Keys

__all__ = ["CONTROL_TASK", "COMMANDS", "RESERVED_CONSUMERS", "MAX_CONCURRENCY", "check_concurrency", "heartbeat",
           "live_consumers", "live_workers", "remove", "paused_queues", "set_paused", "reply", "collect_replies",
           "reply_key", "send_control", "control_tail", "read_control", "dead_consumers", "KNOWN_FOR_MS"]

CONTROL_TASK = "backstage.control"  # the broadcast task older versions sent control as: now ignored
COMMANDS = ("ping", "shutdown", "pause", "resume", "concurrency")
RESERVED_CONSUMERS = frozenset({"paused", "reply"})
REPLY_TTL_MS = 60_000
CONTROL_MAXLEN = 1000
#: Bounds of a remote ``concurrency`` command (children per master).
MAX_CONCURRENCY = 1024


def check_concurrency(value: object) -> str | None:
    """None if ``value`` is a valid remote concurrency, else what is wrong with it."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CONCURRENCY:
        return f"concurrency={value!r}: expected an integer from 1 to {MAX_CONCURRENCY}"
    return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


#: How long a dead master stays listed in P:workers (as ours, and provably dead).
KNOWN_FOR_MS = 7 * 24 * 3600 * 1000


def _workers(keys: Keys) -> str:
    return keys.workers


def _paused(keys: Keys) -> str:
    return f"{keys.prefix}:workers:paused"


def reply_key(keys: Keys, request_id: str) -> str:
    return f"{keys.prefix}:workers:reply:{request_id}"


def heartbeat(r: "redis.Redis", keys: Keys, consumer: str, info: dict[str, Any],
              ttl_ms: int) -> tuple[set[str], int]:
    """Publish one master's presence; returns the paused queues and how many masters
    are alive (one round trip)."""
    now = int(time.time() * 1000)
    pipe = r.pipeline(transaction=False)
    pipe.set(keys.worker(consumer), orjson.dumps(info), px=ttl_ms)
    pipe.zadd(_workers(keys), {consumer: now + ttl_ms})
    pipe.zremrangebyscore(_workers(keys), "-inf", now - KNOWN_FOR_MS)
    pipe.smembers(_paused(keys))
    pipe.zcount(_workers(keys), now, "+inf")
    replies = pipe.execute()
    return {_text(q) for q in replies[3]}, int(replies[4])


def remove(r: "redis.Redis", keys: Keys, consumer: str) -> None:
    """Withdraw a master's presence (clean shutdown): it stays known, as dead."""
    pipe = r.pipeline(transaction=False)
    pipe.delete(keys.worker(consumer))
    pipe.zadd(_workers(keys), {consumer: int(time.time() * 1000) - 1})
    pipe.execute()


def dead_consumers(r: "redis.Redis", keys: Keys) -> set[str]:
    """Our masters whose heartbeat expired (within KNOWN_FOR_MS): provably dead and ours."""
    now = int(time.time() * 1000)
    return {_text(c) for c in r.zrangebyscore(_workers(keys), "-inf", f"({now}")}


def live_consumers(r: "redis.Redis", keys: Keys) -> list[str]:
    now = int(time.time() * 1000)
    return [_text(c) for c in r.zrangebyscore(_workers(keys), now, "+inf")]


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
    return {_text(q) for q in r.smembers(_paused(keys))}


def set_paused(r: "redis.Redis", keys: Keys, queues: Iterable[str], paused: bool) -> None:
    qs = list(queues)
    if qs:
        (r.sadd if paused else r.srem)(_paused(keys), *qs)


def reply(r: "redis.Redis", key: str, answer: dict[str, Any]) -> None:
    pipe = r.pipeline(transaction=False)
    pipe.rpush(key, orjson.dumps(answer))
    pipe.pexpire(key, REPLY_TTL_MS)
    pipe.execute()


def collect_replies(r: "redis.Redis", key: str, expected: int, timeout: float) -> list[dict[str, Any]]:
    """Wait up to ``timeout`` seconds for ``expected`` answers (fewer if some never come)."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(out) < expected:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        got = r.blpop([key], timeout=max(left, 0.01))
        if got is None:
            break
        out.append(orjson.loads(got[1]))
    r.delete(key)
    return out


def send_control(r: "redis.Redis", keys: Keys, message: dict[str, Any]) -> None:
    """Append one control message to ``P:control`` (admin users only)."""
    r.xadd(keys.control, {"payload": orjson.dumps(message)}, maxlen=CONTROL_MAXLEN, approximate=True)


def control_tail(r: "redis.Redis", keys: Keys) -> bytes:
    """The id a new reader starts after: only messages sent from now on."""
    try:
        info: Any = r.xinfo_stream(keys.control)
    except redis.ResponseError:  # no stream yet: everything that comes is new
        return b"0-0"
    last = info.get("last-generated-id") or info.get(b"last-generated-id") or b"0-0"
    return last if isinstance(last, bytes) else str(last).encode()


def read_control(r: "redis.Redis", keys: Keys, after: bytes, count: int = 100) -> list[tuple[bytes, bytes]]:
    """Control messages after id ``after``: (id, payload) pairs, oldest first."""
    res: Any = r.xread({keys.control: after}, count=count)
    out: list[tuple[bytes, bytes]] = []
    for _stream, entries in res or []:
        for mid, fields in entries:
            out.append((mid, fields.get(b"payload", b"") if isinstance(fields, dict) else b""))
    return out
