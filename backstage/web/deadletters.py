"""Dead letters on the dashboard: search, and requeue/delete through the
same code as ``backstage dlq`` (:class:`backstage.ops.dlq.DeadLetters`,
``requeue.lua``: each entry moved atomically).

Searching reads one queue's dead-letter stream newest first in bounded
pages; the time range becomes the XREVRANGE id bounds. "All matching"
acts on a snapshot: entries up to the newest id shown on the confirmation
page, so jobs that fail again meanwhile are left for the next action.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Iterator, Sequence, cast

from ..ops.dlq import DeadLetter, DeadLetters, Filter
from .data import ID_RE, NotFound

__all__ = ["DeadFilter", "search", "matching", "act", "load", "reasons", "ActionResult", "SCAN_BUDGET"]

SCAN_BUDGET = 5000  # entries one page load reads at most
_CHUNK = 100  # entries per requeue.lua / XDEL call (as `backstage dlq`'s default batch)


@dataclass(frozen=True)
class DeadFilter:
    """Criteria of the dead-letters page; empty ones match everything."""

    task: str = ""
    reason: str = ""
    text: str = ""  # substring of errorType: errorMessage (and traceback), case-insensitive
    since_ms: int | None = None
    until_ms: int | None = None

    @property
    def active(self) -> bool:
        return bool(self.task or self.reason or self.text or self.since_ms is not None or self.until_ms is not None)

    def matches(self, e: DeadLetter) -> bool:
        if self.task and e.task != self.task:
            return False
        if self.reason and e.fields.get("reason", "") != self.reason:
            return False
        if self.since_ms is not None and e.dead_at_ms < self.since_ms:
            return False
        if self.until_ms is not None and e.dead_at_ms > self.until_ms:
            return False
        if self.text:
            hay = f"{e.error}\n{e.fields.get('traceback', '')}".lower()
            if self.text.lower() not in hay:
                return False
        return True


def search(dls: DeadLetters, flt: DeadFilter, before: str | None, limit: int) -> tuple[list[DeadLetter], str | None, int]:
    """Up to ``limit`` matches, newest first, older than id ``before``.

    Returns (entries, cursor to go on or None, entries read). Stops after
    :data:`SCAN_BUDGET` entries read even with fewer matches: the cursor
    then says where the next page goes on.
    """
    if before is not None and not ID_RE.match(before):
        raise NotFound(f"bad cursor {before!r}")
    end = "(" + before if before else (f"{flt.until_ms}-18446744073709551615" if flt.until_ms is not None else "+")
    start = f"{flt.since_ms}-0" if flt.since_ms is not None else "-"
    out: list[DeadLetter] = []
    read = 0
    while read < SCAN_BUDGET:
        n = min(500, SCAN_BUDGET - read)
        page = cast("list[tuple[bytes, dict[bytes, bytes]]]", dls.r.xrevrange(dls.stream, end, start, count=n))
        read += len(page)
        for i, (eid, raw) in enumerate(page):
            e = DeadLetter.from_redis(eid, raw)
            if flt.matches(e):
                out.append(e)
                if len(out) >= limit:
                    more = i < len(page) - 1 or len(page) == n
                    return out, (e.id if more else None), read
        if len(page) < n:
            return out, None, read
        end = "(" + page[-1][0].decode()
    return out, end[1:], read


def matching(dls: DeadLetters, flt: DeadFilter, until: str) -> Iterator[DeadLetter]:
    """Every match up to and including id ``until``, oldest first (the snapshot of an action)."""
    for e in dls.scan(Filter(since_ms=flt.since_ms), until=until):
        if flt.matches(e):
            yield e


@dataclass
class ActionResult:
    done: int = 0
    missing: int = 0
    skipped: collections.Counter[str] = None  # type: ignore[assignment]
    error: str = ""

    def __post_init__(self) -> None:
        if self.skipped is None:
            self.skipped = collections.Counter()


def act(dls: DeadLetters, action: str, entries: Sequence[DeadLetter]) -> ActionResult:
    """Requeue (``requeue.lua``, as ``backstage dlq requeue``) or delete these entries."""
    res = ActionResult()
    if action == "delete":
        ids = [e.id for e in entries]
        for i in range(0, len(ids), _CHUNK):
            res.done += dls.delete(ids[i:i + _CHUNK])
        res.missing = len(ids) - res.done
        return res
    moves: list[tuple[str, str]] = []
    for e in entries:
        why = e.problem()
        if why is not None:
            res.skipped[why] += 1
        else:
            moves.append((e.id, dls.target_of(e)))
    for i in range(0, len(moves), _CHUNK):
        codes, err = dls.requeue_batch(moves[i:i + _CHUNK])
        res.done += codes.count(1)
        res.missing += codes.count(0)
        if -1 in codes:
            res.skipped["no taskName"] += codes.count(-1)
        if err:
            res.error = err
            break
    return res


def load(dls: DeadLetters, ids: Sequence[str]) -> list[DeadLetter]:
    """The entries with these ids that still exist (one pipeline)."""
    good = [i for i in ids if ID_RE.match(i)]
    pipe = dls.r.pipeline(transaction=False)
    for i in good:
        pipe.xrange(dls.stream, i, i)
    out = []
    for found in pipe.execute():
        if found:
            out.append(DeadLetter.from_redis(*found[0]))
    return out


def reasons() -> tuple[str, ...]:
    return ("failed", "max-deliveries", "timeout", "worker-lost", "malformed", "unknown-task")

