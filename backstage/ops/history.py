"""Job history: read and search the ``P:history`` stream (ours, opt-in).

Masters started with ``--history N`` (or ``Backstage(history=N)``) write one
record per settled attempt *in the settle.lua call that acks it*
(:mod:`backstage.prefork.broker`), capped at about N records with
``XADD MAXLEN ~``. Nothing else writes the stream; this module is its only
reader, used by the ``backstage jobs`` command and the dashboard.

Record fields: ``entryId`` (the entry's id in its ready stream), ``jobId``
(empty for jobs enqueued without one), ``taskName``, ``queue``,
``outcome`` (``ok``; ``failed``: the attempt raised and a retry is
scheduled; ``dead``: dead-lettered), ``attempt``, ``durationMs``,
``finishedAt`` (epoch ms) and, unless ``ok``, ``reason``, ``errorType``,
``errorMessage``.

Reads go newest first in bounded pages (``XREVRANGE … COUNT``), so neither
the CLI nor a dashboard page ever loads the whole stream.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import re
from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis

from ..errors import ConfigError
from ..protocol.keys import Keys
from .textentry import TextEntry

__all__ = ["OUTCOMES", "Record", "HistoryFilter", "History", "add_parser", "run"]

OUTCOMES = ("ok", "failed", "dead")
_PAGE = 500
_ID_RE = re.compile(r"[0-9]{1,20}-[0-9]{1,20}\Z")


@dataclass(frozen=True, eq=False)
class Record(TextEntry):
    """One history record: its stream id and fields as text."""

    def get(self, name: str) -> str:
        """A field's text, '' when absent."""
        return self.fields.get(name, "")

    @property
    def job_id(self) -> str:
        """``jobId``, else the entry id (jobs enqueued by other SDKs carry none)."""
        return self.get("jobId") or self.get("entryId")

    @property
    def finished_ms(self) -> int:
        raw = self.get("finishedAt")
        return int(raw) if raw.isdigit() else self.ms

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, **self.fields}


@dataclass(frozen=True)
class HistoryFilter:
    """Which records to list; no criteria matches everything."""

    task: str | None = None
    outcomes: frozenset[str] | None = None
    since_ms: int | None = None
    job_id: str | None = None
    queue: str | None = None
    text: str | None = None  # substring of errorType/errorMessage, case-insensitive

    def __post_init__(self) -> None:
        if self.outcomes is not None:
            bad = sorted(self.outcomes - set(OUTCOMES))
            if bad:
                raise ConfigError(f"outcome {', '.join(bad)!s}: use {', '.join(OUTCOMES)} (comma-separated)")

    def matches(self, rec: Record) -> bool:
        if self.task is not None and rec.get("taskName") != self.task:
            return False
        if self.outcomes is not None and rec.get("outcome") not in self.outcomes:
            return False
        if self.job_id is not None and self.job_id not in (rec.get("jobId"), rec.get("entryId")):
            return False
        if self.queue is not None and rec.get("queue") != self.queue:
            return False
        if self.text is not None:
            hay = (rec.get("errorType") + ": " + rec.get("errorMessage")).lower()
            if self.text.lower() not in hay:
                return False
        return True


class History:
    """Reads of one prefix's ``P:history`` stream."""

    def __init__(self, r: "redis.Redis", keys: Keys) -> None:
        self.r = r
        self.key = keys.history

    def length(self) -> int:
        return int(self.r.xlen(self.key))

    def get(self, record_id: str) -> Record | None:
        if not _ID_RE.match(record_id):
            return None
        found = cast("list[tuple[bytes, dict[bytes, bytes]]]", self.r.xrange(self.key, record_id, record_id))
        return Record.from_redis(*found[0]) if found else None

    def search(self, flt: HistoryFilter = HistoryFilter(), *, before: str | None = None, limit: int = 50,
               budget: int | None = None) -> tuple[list[Record], str | None]:
        """Up to ``limit`` matching records, newest first, older than record id ``before``.

        Reads pages of the stream, never more than ``budget`` records in all
        (None: no bound). Returns (records, cursor): the cursor is the id to
        pass as ``before`` to go on, or None when the stream (back to
        ``since_ms``) has been read to its start.
        """
        if before is not None and not _ID_RE.match(before):
            raise ConfigError(f"cursor {before!r}: expected a record id such as 1700000000000-0")
        end = "(" + before if before else "+"
        start = f"{flt.since_ms}-0" if flt.since_ms is not None else "-"
        out: list[Record] = []
        read = 0
        while True:
            page_size = _PAGE if budget is None else max(min(_PAGE, budget - read), 0)
            if page_size == 0:
                return out, end[1:] if end != "+" else None
            page = cast("list[tuple[bytes, dict[bytes, bytes]]]",
                        self.r.xrevrange(self.key, end, start, count=page_size))
            read += len(page)
            for i, (eid, raw) in enumerate(page):
                rec = Record.from_redis(eid, raw)
                if flt.matches(rec):
                    out.append(rec)
                    if len(out) >= limit:
                        more = i < len(page) - 1 or len(page) == page_size
                        return out, rec.id if more else None
            if len(page) < page_size:
                return out, None
            end = "(" + page[-1][0].decode()


# -- the `backstage jobs` command ---------------------------------------------------
def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]",
               common: Any) -> None:
    """The ``jobs`` subcommand of the ``backstage`` CLI (``common`` adds the connection options)."""
    j = sub.add_parser("jobs", help="list and search the job history (workers run with --history N)",
                       description="Finished jobs, newest first, from the history stream that workers "
                                   "started with --history N keep.")
    j.add_argument("--task", help="only jobs of this task")
    j.add_argument("--outcome", help=f"only these outcomes: {', '.join(OUTCOMES)} (comma-separated)")
    j.add_argument("--since", help="only jobs finished since: ISO-8601 time, age (10m, 2h, 3d) or epoch ms")
    j.add_argument("--id", dest="job_id", help="only this job id (or ready-stream entry id)")
    j.add_argument("--queue", help="only jobs of this queue")
    j.add_argument("--error", help="only jobs whose error type or message contains this text")
    j.add_argument("--limit", type=int, default=50, help="at most N records (default 50)")
    common(j)


def _utc(ms: int) -> str:
    return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def build_filter(task: str | None, outcome: str | None, since: str | None, job_id: str | None,
                 queue: str | None = None, text: str | None = None, *, now_ms: int) -> HistoryFilter:
    """A filter from command-line or query-string values (blank values are ignored)."""
    from .dlq import parse_since

    outcomes = frozenset(o.strip() for o in outcome.split(",") if o.strip()) if outcome else None
    return HistoryFilter(task=task or None, outcomes=outcomes or None,
                         since_ms=parse_since(since, now_ms) if since else None,
                         job_id=job_id or None, queue=queue or None, text=text or None)


def run(args: argparse.Namespace, url: str, prefix: str) -> int:
    """Run ``backstage jobs``; returns the exit code. Raises BackstageError on bad input."""
    from ..connections import redis_conn
    from ..protocol import wire

    if args.limit < 1:
        raise ConfigError(f"--limit {args.limit}: expected a number >= 1")
    flt = build_filter(args.task, args.outcome, args.since, args.job_id, args.queue, args.error,
                       now_ms=wire.now_ms())
    r = redis_conn.sync_client(url, slot_key=prefix)
    try:
        with redis_conn.translate_errors(redis_conn.endpoint(r)):
            hist = History(r, Keys(prefix))
            records, _ = hist.search(flt, limit=args.limit)
            total = hist.length()
    finally:
        r.close()
    if args.json:
        print(orjson.dumps([rec.as_json() for rec in records]).decode())
        return 0
    if not records:
        print("no matching jobs in the history" if total else
              f"the history is empty: run workers with --history N (prefix {prefix!r})")
        return 0
    heads = ("FINISHED", "JOB", "TASK", "QUEUE", "OUTCOME", "ATTEMPT", "MS", "ERROR")
    rows = []
    for rec in records:
        err = ": ".join(x for x in (rec.get("errorType"), rec.get("errorMessage")) if x)
        rows.append([_utc(rec.finished_ms), rec.job_id, rec.get("taskName"), rec.get("queue"), rec.get("outcome"),
                     rec.get("attempt"), rec.get("durationMs"), " ".join(err.split())[:80]])
    widths = [max(len(h), *(len(r_[i]) for r_ in rows)) for i, h in enumerate(heads)]
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths)).rstrip())
    for r_ in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r_, widths)).rstrip())
    return 0
