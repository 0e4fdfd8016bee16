"""Job status and results (opt-in per task or per enqueue with ``result_ttl``).

Owns the reading of the ``P:result:<job id>`` family (ours): a hash with
``status`` (waiting | scheduled | queued | running | done | failed | dead |
cancelled), ``task``, ``updatedAt``, and, when there is one, ``value`` (the
handler's return value as JSON), ``attempt``, ``reason``, ``errorType``,
``errorMessage``, ``traceback``, ``progress`` (0..1), ``progressMessage``,
``progressAt``. It expires ``result_ttl`` after its last update. The writes
happen inside the Lua calls that change the job (``enqueue.lua`` when it is
created, ``settle.lua`` when it runs and ends), so a status never runs ahead
of the job. Jobs that do not opt in have no such key and cost nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

import orjson

from .errors import JobFailed, ResultNotFound, ResultTimeout

__all__ = ["STATUSES", "TERMINAL", "JobStatus", "decode", "detail", "outcome", "read", "Waiter"]

STATUSES = ("waiting", "scheduled", "queued", "running", "done", "failed", "dead", "cancelled")
#: ``failed`` is not terminal: a retry is scheduled. ``dead`` and ``cancelled`` are.
#: ``waiting``: a chord's callback whose members are still running.
TERMINAL = frozenset({"done", "dead", "cancelled"})


def decode(raw: Mapping[Any, Any]) -> dict[str, str]:
    def text(x: Any) -> str:
        return x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)
    return {text(k): text(v) for k, v in raw.items()}


def read(r: Any, keys: Any, job_id: str) -> dict[str, str]:
    """Every field of a job's status hash as text (empty: no status kept). ``r`` is a
    sync ``redis.Redis``, ``keys`` a :class:`~backstage.protocol.keys.Keys`."""
    return decode(r.hgetall(keys.result(job_id)))
@dataclass(frozen=True)
class JobStatus:
    """A tracked job's status with its details (``client.status(id, detail=True)``)."""

    status: str
    task: str | None = None
    attempt: int | None = None
    updated_at: int | None = None  # epoch ms
    progress: float | None = None  # 0..1, as the handler last reported it
    progress_message: str | None = None
    error_type: str | None = None
    error_message: str | None = None


def detail(raw: Mapping[Any, Any]) -> JobStatus | None:
    """The :class:`JobStatus` of a status hash's fields (None when there is none)."""
    s = decode(raw)
    if "status" not in s:
        return None
    def num(k: str) -> int | None:
        v = s.get(k)
        return int(v) if v and v.lstrip("-").isdigit() else None
    prog = s.get("progress")
    return JobStatus(s["status"], s.get("task"), num("attempt"), num("updatedAt"),
                     float(prog) if prog else None, s.get("progressMessage") if prog else None,
                     s.get("errorType") or None, s.get("errorMessage") or None)


def outcome(job_id: str, status: dict[str, str]) -> Any:
    """The return value of a ``done`` job, or raise JobFailed for a ``dead`` one."""
    if status.get("status") == "cancelled":
        raise JobFailed(job_id, "cancelled", "Cancelled", "the job was cancelled", "")
    if status.get("status") == "dead":
        raise JobFailed(job_id, status.get("reason", "failed"), status.get("errorType", ""),
                        status.get("errorMessage", ""), status.get("traceback", ""))
    value = status.get("value")
    return None if value is None else orjson.loads(value)


class Waiter:
    """The polling logic of ``result()``, shared by the sync and async clients."""

    def __init__(self, job_id: str, timeout: float | None, poll: float) -> None:
        self.job_id = job_id
        self.timeout = timeout
        self.poll = poll
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.delay = 0.002

    def check(self, raw: Mapping[Any, Any]) -> tuple[bool, Any]:
        """(True, value) once the job ended; else (False, seconds to sleep).

        Raises ResultNotFound, JobFailed or ResultTimeout.
        """
        status = decode(raw)
        if not status:
            raise ResultNotFound(f"no status kept for job {self.job_id}: enqueue it with result_ttl= "
                                 "(or give its task one), or it expired")
        if status.get("status") in TERMINAL:
            return True, outcome(self.job_id, status)
        pause = min(self.delay, self.poll)
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise ResultTimeout(f"job {self.job_id} is still {status.get('status')} after {self.timeout}s")
            pause = min(pause, left)
        self.delay *= 2
        return False, pause
