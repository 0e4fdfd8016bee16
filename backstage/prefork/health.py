"""Is Redis usable now? The master's one record of Redis trouble.

Every part of the master that talks to Redis reports here: an error starts
(or doubles, up to :data:`BACKOFF_MAX`) a back-off during which no Redis
work is tried; the first success after it logs that Redis is back. Parts
that must react to an error (the exchange drops its blocking wait)
subscribe with :meth:`RedisHealth.on_error`.

Runs in the master, on its one thread.
"""

from __future__ import annotations

import collections
import logging
from typing import Callable

import redis

__all__ = ["RedisHealth", "BACKOFF_MAX"]

log = logging.getLogger("backstage.prefork")

BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0


class RedisHealth:
    """Back-off state after Redis errors, and their counts by operation."""

    def __init__(self, where: str, clock: Callable[[], float]) -> None:
        self.where = where  # host:port, for the log lines
        self.clock = clock
        self.down_until = 0.0  # no Redis work before this (clock time)
        self.backoff = 0.0  # the current back-off; 0 once Redis answered again
        self.errors: collections.Counter[str] = collections.Counter()
        self.last_error: Exception | None = None
        self._listeners: list[Callable[[], None]] = []

    def on_error(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` after every Redis error (once the back-off is set)."""
        self._listeners.append(fn)

    def up(self, now: float) -> bool:
        """May Redis work be tried at ``now``?"""
        return now >= self.down_until

    def due(self, deadline: float) -> float:
        """When work due at ``deadline`` that needs Redis may run: not before the back-off ends.

        The loop sleeps until the nearest such time and runs the work only
        once it is reached, so work skipped while Redis is down never leaves
        a deadline in the past (which would make every select return at once).
        """
        return deadline if deadline >= self.down_until else self.down_until

    def failed(self, what: str, exc: Exception) -> None:
        """Redis failed during ``what``: back off, tell the listeners, log it."""
        self.errors[what] += 1
        self.last_error = exc
        self.backoff = min(max(self.backoff * 2, BACKOFF_MIN), BACKOFF_MAX)
        self.down_until = self.clock() + self.backoff
        for fn in self._listeners:
            fn()
        # an error reply is Redis refusing the command, not Redis being away: say which
        kind = "refused" if isinstance(exc, redis.ResponseError) else "error"
        log.warning("Redis %s during %s at %s: %s; retrying in %.1fs", kind, what, self.where,
                    type(exc).__name__ + (f": {exc}" if str(exc) else ""), self.backoff,
                    extra={"event": "redis-error"})

    def last_problem(self) -> str:
        """The last Redis error in words: refused (an error reply) or unreachable."""
        exc = self.last_error
        if exc is None:
            return "Redis unreachable"
        text = type(exc).__name__ + (f": {exc}" if str(exc) else "")
        if isinstance(exc, redis.ResponseError):
            return f"Redis at {self.where} refused them ({text})"
        return f"Redis at {self.where} unreachable ({text})"

    def ok(self) -> None:
        """Redis answered."""
        if self.backoff:
            log.info("Redis at %s is back", self.where, extra={"event": "redis-reconnect"})
            self.backoff = 0.0
