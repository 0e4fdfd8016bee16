"""Is Redis usable now? The master's one record of Redis trouble.

Every part of the master that talks to Redis reports here: an error starts
(or doubles, up to :data:`BACKOFF_MAX`) a back-off during which no Redis
work is tried. An outage is logged once (a reminder every 30 s while it
lasts), and the first success after it says that Redis is back; an error
just after that success is taken as part of the same outage. Parts
that must react to an error (the exchange drops its blocking wait)
subscribe with :meth:`RedisHealth.on_error`.

Runs in the master, on its one thread.
"""

from __future__ import annotations

import collections
import logging
import math
from typing import Any, Callable

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
        self._back: list[Callable[[], None]] = []
        self.back_at = -math.inf  # when Redis last came back
        self.outage: list[Any] | None = None  # [since, failed calls, announced] of the current outage
        self.reminder = math.inf

    def on_back(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` when Redis answers again after an error."""
        self._back.append(fn)

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

    #: An error this soon after Redis came back (a connection that had not yet
    #: noticed the restart, another that is met next) belongs to the same outage.
    SETTLE = 2.0
    #: While Redis stays away, a reminder every so often instead of a line per retry.
    REMINDER = 30.0

    def failed(self, what: str, exc: Exception) -> None:
        """Redis failed during ``what``: back off, tell the listeners, log it (once per outage)."""
        self.errors[what] += 1
        self.last_error = exc
        now = self.clock()
        self.backoff = min(max(self.backoff * 2, BACKOFF_MIN), BACKOFF_MAX)
        self.down_until = now + self.backoff
        for fn in self._listeners:
            fn()
        text = type(exc).__name__ + (f": {exc}" if str(exc) else "")
        # an error reply is Redis refusing the command, not Redis being away: say which
        kind = "refused" if isinstance(exc, redis.ResponseError) else "error"
        outage = self.outage
        if outage is None:
            # one warning per outage, however many calls fail during it; an error right after
            # Redis came back (a connection that had not noticed yet) is said only if it lasts
            announce = now - self.back_at >= self.SETTLE
            outage = self.outage = [now, 0, announce]
            self.reminder = now + (self.REMINDER if announce else self.SETTLE)
            log.log(logging.WARNING if announce else logging.DEBUG, "Redis %s during %s at %s: %s; retrying in %.1fs",
                    kind, what, self.where, text, self.backoff, extra={"event": "redis-error"})
        elif now >= self.reminder:
            self.reminder = now + self.REMINDER
            outage[2] = True
            log.warning("Redis at %s still failing after %.0fs (%s during %s); retrying", self.where,
                        now - outage[0], text, what, extra={"event": "redis-error"})
        else:
            log.debug("Redis %s during %s at %s: %s; retrying in %.1fs", kind, what, self.where, text, self.backoff,
                      extra={"event": "redis-error"})
        outage[1] += 1

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
        """Redis answered. During the back-off that is the reply to a call sent before
        the error (read from a socket afterwards), not a sign Redis is back: ignored."""
        if self.backoff and self.clock() >= self.down_until:
            self.backoff = 0.0
            self.back_at = self.clock()
            outage, self.outage = self.outage, None
            if outage is not None and outage[2]:  # said once per outage that was announced
                log.info("Redis at %s is back (after %.1fs, %d failed call%s)", self.where,
                         self.back_at - outage[0], outage[1], "" if outage[1] == 1 else "s",
                         extra={"event": "redis-reconnect"})
            for fn in self._back:
                fn()
