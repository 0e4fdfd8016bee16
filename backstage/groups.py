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
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import orjson

from .errors import InvalidJobError
from .protocol.keys import validate_job_id, validate_queue
from .protocol.wire import now_ms

if TYPE_CHECKING:
    from .client import Job, _Producer

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


def group_args(producer: "_Producer", jobs: Iterable["Job | tuple[str, Any]"], callback: "Job | tuple[str, Any] | None",
               on_failure: str, group_id: str | None, ttl: float,
               opts: dict[str, Any]) -> tuple[list[Any], list[Any], str]:
    """(keys, args, id) of group.lua for a group (``callback`` None) or a chord;
    every member checked and serialized before anything is sent."""
    from .client import Job, _Opts, new_job_id

    what = "enqueue_chord" if callback is not None else "enqueue_group"
    if opts["delay"] is not None or opts["at"] is not None:
        raise InvalidJobError(f"{what}: members run at once: no delay= or at=")
    ttl_ms = check_ttl(ttl)
    policy = check_policy(on_failure)
    gid = new_job_id() if group_id is None else validate_job_id(group_id, "group_id")
    now = now_ms()
    now_b = b"%d" % now
    keys: list[Any] = [producer.keys.chord(gid)]
    index: dict[str, int] = {}
    by_task: dict[str, _Opts] = {}
    args: list[Any] = []
    ids: list[str] = []
    for i, job in enumerate(jobs):
        if isinstance(job, Job):
            if job.delay is not None or job.at is not None or job.dedupe_key is not None or job.unique:
                raise InvalidJobError(f"{what}: member {i} ({job.task!r}): no delay, at, dedupe_key or unique "
                                      "for group members")
            o = producer._resolve(job.task, job.priority, job.queue, None, None, None, None, job.attempts,
                                  job.backoff, job.timeout, job.result_ttl)
            payload = job.payload
            jid = new_job_id() if job.job_id is None else validate_job_id(job.job_id)
        elif isinstance(job, tuple) and len(job) == 2 and isinstance(job[0], str):
            o2 = by_task.get(job[0])
            if o2 is None:
                o2 = by_task[job[0]] = producer._resolve(job[0], dedupe_key=None, dedupe_ttl=None, **opts)
            o, payload, jid = o2, job[1], new_job_id()
        else:
            raise InvalidJobError(f"{what}: expected Job(...) or (task, payload) items, got {job!r:.80}")
        fields = [b"taskName", o.task_b, b"payload", producer._payload(o.task, payload), b"enqueuedAt", now_b,
                  *o.extra, b"jobId", jid, b"chordId", gid, b"chordIndex", b"%d" % i]
        si = index.get(o.stream)
        if si is None:
            keys.append(o.stream)
            si = index[o.stream] = len(keys)
        args += (si, len(fields), *fields)
        ids.append(jid)
    if not ids:
        raise InvalidJobError(f"{what}: give at least one member")
    cb_fields: list[Any] | None = None
    cb_payload, cb_stream, cb_dlq, rk, rttl = b"null", "", "", "", 0
    if callback is not None:
        if isinstance(callback, Job):
            o = producer._resolve(callback.task, callback.priority, callback.queue, None, None, None, None,
                                  callback.attempts, callback.backoff, callback.timeout, callback.result_ttl)
            cb_value = callback.payload
        elif isinstance(callback, tuple) and len(callback) == 2:
            o = producer._resolve(callback[0], None, None, None, None, None, None, None, None, None, None)
            cb_value = callback[1]
        else:
            raise InvalidJobError(f"enqueue_chord: callback={callback!r:.80}: expected (task, payload) or Job(...)")
        cb_payload = producer._payload(o.task, cb_value)
        cb_fields = [b"taskName", o.task_b, b"enqueuedAt", now_b, *o.extra, b"jobId", gid.encode()]
        cb_stream, cb_dlq = o.stream, producer.keys.dead_letter(o.queue)
        if o.result_ttl_ms is not None:
            rk, rttl = producer.keys.result(gid), o.result_ttl_ms
    head = header(ttl_ms, len(ids), policy, cb_fields, cb_payload, cb_stream, cb_dlq, gid, ids, rk, rttl)
    return keys, [now, *head, *args], gid

