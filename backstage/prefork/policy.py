"""What happens to a job that did not succeed: retry (and when) or dead-letter.

Pure functions, run by the master; unit-tested without processes.
"""

from __future__ import annotations

import random
from typing import Union

from ..protocol.wire import Backoff

__all__ = ["Decision", "RetryLater", "Dead", "decide", "DEFAULT_BACKOFF"]

#: Backoff for jobs that allow several attempts but name no backoff.
DEFAULT_BACKOFF = Backoff.exponential(1.0, max=300.0, jitter=True)


class RetryLater(tuple[float]):
    """Run again after ``delay`` seconds (not :class:`backstage.Retry`, which a handler raises)."""

    @property
    def delay(self) -> float:
        return self[0]


class Dead(tuple[str]):
    """Dead-letter with ``reason`` (WIRE.md reasons)."""

    @property
    def reason(self) -> str:
        return self[0]


Decision = Union[RetryLater, Dead]


def decide(
    kind: str,
    *,
    attempt: int,
    attempts: int | None,
    max_deliveries: int,
    backoff: Backoff | None,
    retry_delay_ms: int | None = None,
    rng: random.Random | None = None,
) -> Decision:
    """Decide the fate of a job whose execution number ``attempt`` ended with ``kind``.

    ``kind``: ``error`` (handler raised), ``retry`` (handler raised Retry),
    ``timeout`` (killed past its limit), ``worker-lost`` (its child died),
    ``reject``, ``malformed``, ``unknown-task``.

    ``attempts`` is what the job or its task declares (None: not declared).

    - errors and timeouts retry while ``attempt < attempts`` (default 1: no retry);
    - a :class:`backstage.Retry` raised by the handler is honoured while ``attempt < attempts``,
      or ``attempt < max_deliveries`` when the job declares no attempts;
    - a lost worker is not the job's own failure: it retries while
      ``attempt < max(attempts, max_deliveries)``;
    - reject, malformed and unknown-task never retry.
    """
    if kind == "reject":
        return Dead(("failed",))
    if kind in ("malformed", "unknown-task"):
        return Dead((kind,))
    if kind == "worker-lost":
        limit = max(attempts or 1, max_deliveries)
        reason = "worker-lost"
    elif kind == "timeout":
        limit = attempts or 1
        reason = "timeout"
    elif kind == "error":
        limit = attempts or 1
        reason = "failed"
    elif kind == "retry":
        limit = attempts or max_deliveries
        reason = "failed"
    else:
        raise ValueError(f"unknown outcome kind {kind!r}")
    if attempt >= limit:
        return Dead((reason,))
    if kind == "retry" and retry_delay_ms is not None:
        return RetryLater((retry_delay_ms / 1000.0,))
    if kind == "worker-lost" and (attempts or 1) <= 1 and backoff is None:
        return RetryLater((0.0,))  # no policy given: redeliver at once
    return RetryLater(((backoff or DEFAULT_BACKOFF).seconds(attempt, rng),))
