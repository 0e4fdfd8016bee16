"""Groups and chords: fan out, and fan in exactly once.

Owns the ``P:chord:<id>`` family (ours): one hash per group or chord with
``total``, ``left``, ``failed``, ``state`` (running | done | failed |
cancelled), the callback (``cb`` fields, ``cbp`` payload, ``cbs`` stream,
``dlq``), ``policy``, ``ids`` (member job ids), ``ttl``, and each member's
outcome ``r<i>`` (its return value as JSON) with ``e<i>`` (a failure).

Writes happen in Lua, atomically: ``group.lua`` writes the hash and every
member (producers); ``settle.lua`` writes them with the parent's ack when a
handler returns a :class:`Group`/:class:`Chord` (op ``g``), and records
each member's outcome with its ack (op ``c``): the first record of member
``i`` decrements ``left``; the one that reaches 0 enqueues the callback,
once, with the results in member order. A member settled twice (a
redelivery) is recorded once.

The callback's payload is ``{"chord": id, "payload": <callback payload>,
"results": [...], "failures": [{"index", "reason", "errorType",
"errorMessage"}, ...]}``; a failed member's result is ``null``. Its job id
is the chord id, so ``client.result(chord_id)`` waits for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import orjson

from .errors import InvalidJobError
from .protocol.keys import validate_job_id, validate_queue

__all__ = ["Group", "Chord", "POLICIES", "DEFAULT_TTL", "group_status"]

#: What a chord does when a member failed (dead-lettered or cancelled).
POLICIES = ("callback", "dead-letter")
#: Seconds a group's state lives after it was created (and after it ended).
DEFAULT_TTL = 86400.0

Member = tuple[str, Any]


def _members(jobs: Iterable[Any], what: str) -> list[tuple[str, Any, str | None]]:
    out: list[tuple[str, Any, str | None]] = []
    for j in jobs:
        if isinstance(j, tuple) and len(j) == 2 and isinstance(j[0], str) and j[0]:
            out.append((j[0], j[1], None))
        elif hasattr(j, "task") and hasattr(j, "payload"):  # a Job
            q = getattr(j, "queue", None) or getattr(j, "priority", None)
            if q is not None:
                validate_queue(q)
            out.append((j.task, j.payload, q))
        else:
            raise InvalidJobError(f"{what}: expected (task, payload) items or Job(...), got {j!r:.80}")
    if not out:
        raise InvalidJobError(f"{what}: give at least one member")
    return out


def check_ttl(ttl: object) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl < math.inf:
        raise InvalidJobError(f"ttl={ttl!r}: expected seconds > 0")
    return max(1, math.ceil(ttl * 1000))


def check_policy(on_failure: object) -> str:
    if on_failure not in POLICIES:
        raise InvalidJobError(f"on_failure={on_failure!r}: use one of {', '.join(POLICIES)}")
    return str(on_failure)


def check_callback(callback: Any) -> tuple[str, Any, str | None]:
    return _members([callback], "callback")[0]


@dataclass(frozen=True)
class Group:
    """Return it from a handler to fan out: its members are enqueued with the
    handler's ack, in one atomic step. ``jobs``: ``(task, payload)`` pairs or
    ``Job(task, payload, queue=...)``; ``group_id`` names it for
    ``client.group_status`` (default: a new id)."""

    jobs: Sequence[Any]
    group_id: str | None = None
    ttl: float = DEFAULT_TTL
    members: list[tuple[str, Any, str | None]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", _members(self.jobs, type(self).__name__))
        if self.group_id is not None:
            validate_job_id(self.group_id, "group_id")
        check_ttl(self.ttl)


@dataclass(frozen=True)
class Chord(Group):
    """A :class:`Group` whose ``callback`` (``(task, payload)``) runs once, when
    the last member settled, with every member's result in order.
    ``on_failure``: ``"callback"`` (run it with the failures listed) or
    ``"dead-letter"`` (dead-letter the callback instead)."""

    callback: Any = None
    on_failure: str = "callback"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.callback is None:
            raise InvalidJobError("Chord: give callback=(task, payload)")
        check_callback(self.callback)
        check_policy(self.on_failure)


def header(ttl_ms: int, total: int, policy: str, cb_fields: Sequence[Any] | None, cb_payload: bytes,
           cb_stream: str, cb_dlq: str, group_id: str, ids: Sequence[str], result_key: str = "",
           result_ttl_ms: int = 0) -> list[Any]:
    """The 11 header values of group.lua (and settle.lua's ``g``)."""
    cb = b"" if cb_fields is None else orjson.dumps([x.decode() if isinstance(x, bytes) else x for x in cb_fields])
    return [ttl_ms, total, policy, cb, cb_payload, cb_stream, cb_dlq, group_id, orjson.dumps(list(ids)),
            result_key, result_ttl_ms]


def failure_json(index: int, reason: str, error_type: str, message: str) -> bytes:
    """What a failed member leaves for the callback's ``failures`` list."""
    return orjson.dumps({"index": index, "reason": reason, "errorType": error_type, "errorMessage": message[:2000]})


def group_status(raw: Mapping[Any, Any]) -> dict[str, Any] | None:
    """``{"id", "state", "total", "done", "failed", "pending"}`` from the hash fields, or None."""
    if not raw:
        return None
    def get(k: str) -> str:
        v = raw.get(k.encode(), raw.get(k))
        return v.decode() if isinstance(v, bytes) else str(v or "")
    total, left, failed = int(get("total") or 0), int(get("left") or 0), int(get("failed") or 0)
    return {"id": get("id"), "state": get("state"), "total": total, "done": total - left - failed,
            "failed": failed, "pending": left}
