"""Cron entries: the schedule maths (croniter) and the once-per-tick firing.

Declared with ``app.cron(...)`` in the app module, so every master knows
them; fired by the master loop. Each tick is fired by exactly one master
however many run: ``lua/cron_fire.lua`` sets a per-tick marker (``SET NX``
with expiry) and, only if it was not set, enqueues the job and records the
tick as the entry's last fired one, all in one atomic call.

Keys (ours, WIRE.md "cron" family): ``P:cron:<name>:<tick ms>`` (marker,
with expiry) and ``P:cron:<name>:last`` (the last tick fired, no expiry).
"""

from __future__ import annotations

import datetime as _dt
import zoneinfo
from dataclasses import dataclass, field
from typing import Any

from croniter import croniter

from .errors import ConfigError

__all__ = ["CronEntry", "CATCH_UP"]

#: What a master does, at start, with ticks missed while no master ran:
#: ``latest`` fires the most recent missed tick once; ``skip`` fires none.
CATCH_UP = ("latest", "skip")


@dataclass(frozen=True)
class CronEntry:
    """One schedule: ``expr`` (5 fields, a 6th for seconds, or ``@hourly``-style) in ``tz``."""

    expr: str
    task: str
    payload_json: bytes
    tz: str = "UTC"
    queue: str = "default"
    name: str = ""
    catch_up: str = "latest"
    _zone: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.expr, str) or not croniter.is_valid(self.expr):
            raise ConfigError(f"cron expression {self.expr!r} is not valid: use 5 fields (minute hour day month "
                              "weekday), a 6th for seconds, or @hourly/@daily/@weekly/@monthly/@yearly")
        try:
            zone = zoneinfo.ZoneInfo(self.tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
            raise ConfigError(f"cron {self.expr!r}: unknown time zone tz={self.tz!r}") from None
        if self.catch_up not in CATCH_UP:
            raise ConfigError(f"cron {self.expr!r}: catch_up={self.catch_up!r} must be one of {', '.join(CATCH_UP)}")
        if not self.name or ":" in self.name or any(c.isspace() for c in self.name):
            raise ConfigError(f"cron name {self.name!r}: must be non-empty, without ':' or spaces")
        object.__setattr__(self, "_zone", zone)

    def _at(self, epoch_ms: int) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(epoch_ms / 1000, tz=self._zone)

    def next_after(self, epoch_ms: int) -> int:
        """The first tick strictly after ``epoch_ms`` (epoch ms)."""
        it = croniter(self.expr, self._at(epoch_ms))
        return round(float(it.get_next(float)) * 1000)

    def latest_at_or_before(self, epoch_ms: int) -> int:
        """The most recent tick at or before ``epoch_ms`` (epoch ms)."""
        nxt = self.next_after(epoch_ms)
        it = croniter(self.expr, self._at(nxt))
        return round(float(it.get_prev(float)) * 1000)

    def marker_ttl_ms(self, tick_ms: int) -> int:
        """How long a tick's marker lives: a few periods, at least a minute, at most a day."""
        period = self.next_after(tick_ms) - tick_ms
        return max(60_000, min(3 * period, 86_400_000))
