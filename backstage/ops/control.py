"""Broadcast and remote control: every command, on both ends, in one module.

Senders (``Client.broadcast``/``Client.control``, the ``backstage control``
CLI) build messages here; the master parses and carries out control
commands here (:func:`execute`, through the narrow :class:`Controllable`
it implements) and answers through :func:`reply`.

Control commands travel as broadcasts (``P:broadcast``) of the task
:data:`CONTROL_TASK`; answers go to ``P:workers:reply:<request id>``
(lists, expiring after :data:`REPLY_TTL_MS`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import redis
import redis.asyncio

from ..errors import InvalidJobError
from ..protocol.keys import Keys, validate_queue
from ..protocol.wire import encode_payload, now_ms

__all__ = ["CONTROL_TASK", "COMMANDS", "BROADCAST_MAXLEN", "REPLY_TTL_MS", "ControlRequest", "Controllable",
           "broadcast_fields", "check_command", "request_payload", "parse_request", "execute", "reply",
           "collect_replies", "collect_replies_async"]

CONTROL_TASK = "backstage.control"
COMMANDS = ("ping", "shutdown", "pause", "resume", "concurrency")
BROADCAST_MAXLEN = 10_000  # approximate cap of P:broadcast
REPLY_TTL_MS = 60_000


# -- sending -------------------------------------------------------------------------
def broadcast_fields(task: str, payload: Any) -> dict[str, Any]:
    """Fields of one broadcast entry (WIRE.md › Broadcast entry)."""
    if not isinstance(task, str) or not task:
        raise InvalidJobError(f"broadcast task name {task!r}: expected a non-empty string")
    return {"taskName": task, "payload": encode_payload(task, payload), "enqueuedAt": str(now_ms())}


def check_command(command: str, value: Any) -> None:
    """Raise InvalidJobError unless ``command`` with ``value`` is a control command masters carry out."""
    if command not in COMMANDS:
        raise InvalidJobError(f"control command {command!r}: use one of {', '.join(COMMANDS)}")
    if command in ("pause", "resume"):
        validate_queue(value)
    if command == "concurrency" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InvalidJobError(f"control concurrency {value!r}: expected an integer >= 1")


def request_payload(command: str, value: Any, target: str | None, reply_to: str, request_id: str) -> dict[str, Any]:
    """The payload of a :data:`CONTROL_TASK` broadcast."""
    return {"cmd": command, "value": value, "target": target, "reply_to": reply_to, "id": request_id}


# -- receiving (the master) ------------------------------------------------------------
@dataclass(frozen=True)
class ControlRequest:
    """A parsed control message."""

    cmd: Any
    value: Any
    target: Any
    reply_to: Any


def parse_request(raw: bytes) -> ControlRequest | None:
    """Decode a control payload; None when it is not a control message."""
    try:
        msg = orjson.loads(raw)
        cmd = msg["cmd"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if not isinstance(msg, dict):
        return None
    return ControlRequest(cmd, msg.get("value"), msg.get("target"), msg.get("reply_to"))


class Controllable(Protocol):
    """What a master lets remote control do (and nothing more)."""

    def presence_info(self) -> dict[str, Any]: ...

    def request_stop(self) -> None: ...

    def reload_paused(self) -> list[str]: ...

    def set_concurrency(self, n: int) -> int: ...


def execute(req: ControlRequest, worker: Controllable, consumer: str) -> dict[str, Any]:
    """Carry out one request addressed to ``consumer``; returns the answer."""
    cmd, value = req.cmd, req.value
    answer: dict[str, Any] = {"consumer": consumer, "cmd": cmd, "ok": True}
    if cmd == "ping":
        answer.update(worker.presence_info())
    elif cmd == "shutdown":
        worker.request_stop()
    elif cmd in ("pause", "resume"):
        answer["paused"] = worker.reload_paused()
    elif cmd == "concurrency" and isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        answer["concurrency"] = worker.set_concurrency(value)
    else:
        answer.update(ok=False, error=f"unknown control command {cmd!r} / value {value!r}")
    return answer


def reply(r: "redis.Redis", keys: Keys, key: Any, answer: dict[str, Any]) -> bool:
    """Answer a request at ``key`` if it is a reply key of this prefix; False otherwise."""
    if not isinstance(key, str) or not keys.is_worker_reply(key):
        return False
    pipe = r.pipeline(transaction=False)
    pipe.rpush(key, orjson.dumps(answer))
    pipe.pexpire(key, REPLY_TTL_MS)
    pipe.execute()
    return True


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


async def collect_replies_async(r: "redis.asyncio.Redis", key: str, expected: int,
                                timeout: float) -> list[dict[str, Any]]:
    """:func:`collect_replies` for an asyncio client."""
    out: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(out) < expected:
        left = deadline - loop.time()
        if left <= 0:
            break
        got = await r.blpop([key], timeout=max(left, 0.01))
        if got is None:
            break
        out.append(orjson.loads(got[1]))
    await r.delete(key)
    return out
