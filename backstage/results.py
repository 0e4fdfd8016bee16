"""Job status and results (opt-in per task or per enqueue with ``result_ttl``).

Owns the reading of the ``P:result:<job id>`` family (ours): a hash with
``status`` (scheduled | queued | running | done | failed | dead), ``task``,
``updatedAt``, and, when there is one, ``value`` (the handler's return value
as JSON), ``attempt``, ``reason``, ``errorType``, ``errorMessage``,
``traceback``. It expires ``result_ttl`` after its last update. The writes
happen inside the Lua calls that change the job (``enqueue.lua`` when it is
created, ``settle.lua`` when it runs and ends), so a status never runs ahead
of the job. Jobs that do not opt in have no such key and cost nothing.
"""

from __future__ import annotations

from typing import Any, Mapping

import time

import orjson

from .errors import JobFailed, ResultNotFound, ResultTimeout

__all__ = ["STATUSES", "TERMINAL", "decode", "outcome", "read", "Waiter"]

STATUSES = ("scheduled", "queued", "running", "done", "failed", "dead")
#: ``failed`` is not terminal: a retry is scheduled. ``dead`` is.
TERMINAL = frozenset({"done", "dead"})


def decode(raw: Mapping[Any, Any]) -> dict[str, str]:
    def text(x: Any) -> str:
        return x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)
    return {text(k): text(v) for k, v in raw.items()}


def read(r: Any, keys: Any, job_id: str) -> dict[str, str]:
    """Every field of a job's status hash as text (empty: no status kept). ``r`` is a
    sync ``redis.Redis``, ``keys`` a :class:`~backstage.protocol.keys.Keys`."""
    return decode(r.hgetall(keys.result(job_id)))


def outcome(job_id: str, status: dict[str, str]) -> Any:
    """The return value of a ``done`` job, or raise JobFailed for a ``dead`` one."""
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
