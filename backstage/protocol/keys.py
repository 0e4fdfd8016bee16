"""Key names: the one place where Redis key strings are built (WIRE.md › Keys).

Used by producers, the master and the CLI. Nothing else in the package
formats a key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import ConfigError, InvalidJobError

__all__ = ["Keys", "PRIORITIES", "RESERVED", "validate_queue", "validate_job_id", "DEFAULT_PREFIX", "DEFAULT_GROUP"]

DEFAULT_PREFIX = "backstage"
DEFAULT_GROUP = "backstage-workers"

#: The three built-in priority queues, most urgent first.
PRIORITIES: tuple[str, ...] = ("urgent", "default", "low")

#: Words that cannot name a queue: they are other key families under the prefix.
RESERVED: frozenset[str] = frozenset({"scheduled", "dedupe", "broadcast", "workers", "cron", "result", "history",
                                      "control", "unique", "cancel", "cancels", "chord"})

_QUEUE_RE = re.compile(r"[A-Za-z0-9_.-]+\Z")
#: Job (and chord) ids chosen by producers: no spaces, quotes or backslashes, so an id
#: is safe inside a key and inside the JSON the Lua scripts assemble.
_JOB_ID_RE = re.compile(r"[A-Za-z0-9_.:@+=/-]{1,200}\Z")


def validate_queue(name: object) -> str:
    """Return ``name`` if it is a valid queue name, else raise InvalidJobError."""
    if not isinstance(name, str) or not _QUEUE_RE.match(name):
        raise InvalidJobError(
            f"invalid queue name {name!r}: use letters, digits, '_', '.' or '-' (no ':' or spaces)"
        )
    if name in RESERVED:
        raise InvalidJobError(
            f"invalid queue name {name!r}: it is reserved ({', '.join(sorted(RESERVED))})"
        )
    return name


def validate_job_id(job_id: object, what: str = "job_id") -> str:
    """Return ``job_id`` if producers may choose it, else raise InvalidJobError naming ``what``."""
    if not isinstance(job_id, str) or not _JOB_ID_RE.match(job_id):
        raise InvalidJobError(
            f"{what}={job_id!r}: use 1-200 letters, digits or any of _ . : @ + = / - (no spaces or quotes)"
        )
    return job_id


@dataclass(frozen=True)
class Keys:
    """Builds every key of one prefix."""

    prefix: str = DEFAULT_PREFIX
    _streams: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not self.prefix or any(c.isspace() for c in self.prefix):
            raise ConfigError(f"prefix={self.prefix!r}: the key prefix must be a non-empty string without spaces")

    def stream(self, queue: str) -> str:
        """Ready stream of a queue (``P:<queue>``); the queue must be validated."""
        key = self._streams.get(queue)
        if key is None:
            key = self._streams[queue] = f"{self.prefix}:{queue}"
        return key

    def queue_of(self, stream_key: str) -> str:
        """Inverse of :meth:`stream`: ``P:reports`` → ``reports``."""
        head = self.prefix + ":"
        if not stream_key.startswith(head):
            raise ValueError(f"{stream_key!r} is not a key of prefix {self.prefix!r}")
        return stream_key[len(head):]

    @property
    def scheduled(self) -> str:
        return f"{self.prefix}:scheduled"

    def dead_letter(self, queue: str) -> str:
        return f"{self.prefix}:{queue}:dead-letter"

    def dedupe(self, key: str) -> str:
        return f"{self.prefix}:dedupe:{key}"

    @property
    def broadcast(self) -> str:
        return f"{self.prefix}:broadcast"

    @property
    def control(self) -> str:
        """Remote-control stream (ours): only admin users may write it (``backstage acl``)."""
        return f"{self.prefix}:control"

    #: Consumer groups on :attr:`broadcast` are named ``broadcast-<consumer>``.
    BROADCAST_GROUP_HEAD = "broadcast-"

    def broadcast_group(self, consumer: str) -> str:
        """Group name (not a key) through which one worker reads broadcasts."""
        return f"{self.BROADCAST_GROUP_HEAD}{consumer}"

    def broadcast_group_owner(self, group: str) -> str | None:
        """Inverse of :meth:`broadcast_group`: the consumer, or None for another group."""
        head = self.BROADCAST_GROUP_HEAD
        return group[len(head):] if group.startswith(head) else None

    @property
    def workers(self) -> str:
        """Sorted set of our masters: consumer -> heartbeat expiry in ms (ours); kept a week
        after expiry, which tells our masters, alive or dead, from other SDKs' consumers."""
        return f"{self.prefix}:workers"

    def worker(self, consumer: str) -> str:
        """Presence key of one worker (ours)."""
        return f"{self.prefix}:workers:{consumer}"

    @property
    def paused(self) -> str:
        """Set of queue names no worker fetches from (ours)."""
        return f"{self.prefix}:workers:paused"

    def worker_reply(self, request_id: str) -> str:
        """List where workers answer one control command (ours)."""
        return f"{self.prefix}:workers:reply:{request_id}"

    def is_worker_reply(self, key: str) -> bool:
        """Is ``key`` a :meth:`worker_reply` key of this prefix (control messages name one)?"""
        return key.startswith(f"{self.prefix}:workers:reply:")

    def cron_marker(self, name: str, tick_ms: int) -> str:
        """Fire marker of one cron tick (ours)."""
        return f"{self.prefix}:cron:{name}:{tick_ms}"

    def worker_minute(self, minute: int) -> str:
        """Jobs processed and failed by every worker in one epoch minute (ours, hash)."""
        return f"{self.prefix}:workers:minute:{minute}"

    def cron_last(self, name: str) -> str:
        """Last tick fired of one cron entry, in ms (ours)."""
        return f"{self.prefix}:cron:{name}:last"

    @property
    def match_all(self) -> str:
        """SCAN pattern of every key under this prefix."""
        return f"{self.prefix}:*"

    def result(self, job_id: str) -> str:
        """Result of one job (ours)."""
        return f"{self.prefix}:result:{job_id}"

    @property
    def history(self) -> str:
        """Capped stream of finished jobs, one record per settled attempt (ours, opt-in)."""
        return f"{self.prefix}:history"

    def unique(self, job_id: str) -> str:
        """Marker of a ``unique=True`` job still queued or running (ours; released at its settle)."""
        return f"{self.prefix}:unique:{job_id}"

    def cancel(self, job_id: str) -> str:
        """Cancel marker of one job (ours; expires after the cancel TTL)."""
        return f"{self.prefix}:cancel:{job_id}"

    @property
    def cancels(self) -> str:
        """Sorted set of cancelled job ids -> expiry ms, read by every master (ours)."""
        return f"{self.prefix}:cancels"

    def chord(self, chord_id: str) -> str:
        """State of one group or chord: counters, callback, results (ours)."""
        return f"{self.prefix}:chord:{chord_id}"
