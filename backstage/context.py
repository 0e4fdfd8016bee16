"""The per-job context a running handler can read: :func:`current_job`.

Set by the prefork child around each handler call (a ``contextvars`` variable,
so ``async def`` handlers see it too); ``None`` anywhere else.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

__all__ = ["JobContext", "current_job"]


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a running handler may want to know about its job.

    Attributes:
        job_id: the id ``enqueue`` returned (``None`` for entries of SDKs that set none).
        task: the task name.
        attempt: 1 for the first run, 2 for the first retry, …
        child: the index of the prefork child running it.
    """

    job_id: str | None
    task: str
    attempt: int
    child: int


_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar("backstage_job", default=None)


def current_job() -> JobContext | None:
    """The job the calling handler is running (``None`` outside a handler)."""
    return _current.get()
