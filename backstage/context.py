"""The running job, as its handler sees it: :func:`current_job`.

Owns the per-job context a prefork child sets around each handler call
(job id, task, attempt, queue, deadline) and the coalescing of progress
reports. Import-light on purpose: it is part of the base package.

Progress travels to the master as an IPC frame (``ipc.Progress``), not over
a Redis connection of the child: the master owns the status hash and
writes progress into its next settle round trip, under the same "still
ours" check as every status write, so a late progress can never overwrite
a job's final status, and children open no connections for it.
"""

from __future__ import annotations

import contextvars
import math
import time
from dataclasses import dataclass, field
from typing import Callable

from .errors import InvalidJobError

__all__ = ["JobContext", "current_job", "PROGRESS_INTERVAL"]

#: At most one progress report per job leaves the child in this many seconds;
#: the last value wins, and one still held is sent when the job ends.
PROGRESS_INTERVAL = 0.5
_MESSAGE_MAX = 500


class ProgressReporter:
    """Coalesces one job's progress reports (the child makes one per job)."""

    __slots__ = ("send", "last", "pending", "interval", "clock")

    def __init__(self, send: Callable[[float, str | None], None], *, interval: float = PROGRESS_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.send = send
        self.interval = interval
        self.clock = clock
        self.last = -math.inf
        self.pending: tuple[float, str | None] | None = None

    def report(self, fraction: float, message: str | None) -> None:
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self.pending = None
            self.send(fraction, message)
        else:
            self.pending = (fraction, message)

    def flush(self) -> None:
        """Send the value still held (the job ends)."""
        if self.pending is not None:
            fraction, message = self.pending
            self.pending = None
            self.send(fraction, message)


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a running handler may know about its job, and how it reports progress.

    ``deadline`` is the epoch time (seconds) at which its time limit kills
    it, or None without a limit.
    """

    job_id: str | None
    task: str
    attempt: int
    child: int
    queue: str = "default"
    deadline: float | None = None
    _reporter: ProgressReporter | None = field(default=None, repr=False, compare=False)

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress (``fraction`` from 0 to 1, an optional short ``message``).

        Visible in ``client.status(job_id, detail=True)`` for jobs that keep a
        status (``result_ttl``). Cheap to call in a tight loop: at most one
        report per :data:`PROGRESS_INTERVAL` leaves the child, the last wins.
        """
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
            raise InvalidJobError(f"progress fraction={fraction!r}: expected a number from 0 to 1")
        if message is not None and not isinstance(message, str):
            raise InvalidJobError(f"progress message={message!r}: expected a string or None")
        if self._reporter is not None:
            self._reporter.report(float(fraction), message[:_MESSAGE_MAX] if message else message)


_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar("backstage_job", default=None)


def current_job() -> JobContext | None:
    """The job the calling handler is running (None outside a handler)."""
    return _current.get()
