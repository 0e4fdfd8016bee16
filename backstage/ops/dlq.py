"""Dead-letter streams after the fact: list, show, requeue and purge.

Owns every command the operator's side issues on ``P:<queue>:dead-letter``
(WIRE.md › Dead-letter entry): reading entries, moving them back to their
ready streams (``requeue.lua``, each entry moved atomically) and deleting
them. The workers *write* dead letters (``settle.lua``, ``reclaim.lua``,
``promote.lua``); nothing else reads or rewrites them.

Two halves, both run by the ``backstage`` CLI process only:

* :class:`DeadLetters`, :class:`Filter`, :func:`parse_since` — the library
  half: everything comes in as arguments, errors come out as our own
  exceptions (:mod:`backstage.errors`).
* :func:`run` — the ``backstage dlq list|show|requeue|purge`` command: output
  formatting, confirmation, progress bar, and the one environment knob,
  ``BACKSTAGE_DLQ_BATCH`` (entries per Redis call; also ``--batch``).

Requeue and purge act on a snapshot: the entries that are in the stream when
the command starts. Jobs that fail again while a requeue runs land in the
dead-letter stream with new ids and are left for the next run, so a requeue
of jobs that keep failing always ends.
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import io
import itertools
import os
import re
import shutil
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TextIO, TypeVar, cast

import orjson
import redis

from ..connections import redis_conn
from ..protocol import scripts, wire
from ..errors import BackstageError, ConfigError
from ..protocol.keys import Keys, validate_queue
from . import presence
from .textentry import TextEntry

__all__ = ["DEAD_LETTER_FIELDS", "REQUEUE_DROPS", "DEFAULT_BATCH", "DEFAULT_LIST_LIMIT", "DeadLetter",
           "DeadLetters", "Filter", "Progress", "format_entry", "format_table", "parse_since", "run"]

#: Fields a dead-letter entry carries on top of the original entry's fields
#: (WIRE.md; ``member`` is the raw text of a parked, undecodable scheduled member).
DEAD_LETTER_FIELDS: tuple[str, ...] = (
    "originalId", "deadLetteredAt", "deliveryCount", "queue", "reason", "errorType",
    "errorMessage", "traceback", "consumer", "member",
)
#: Fields a requeued copy drops: the dead-letter fields, ``attempt`` so the job
#: starts over with all of its attempts, and ``unknownTaskHops`` so an
#: unknown-task entry may hop again (``--unknown-task requeue``).
REQUEUE_DROPS: tuple[str, ...] = (*DEAD_LETTER_FIELDS, "attempt", "unknownTaskHops")

DEFAULT_BATCH = 100
MAX_BATCH = 10_000
DEFAULT_LIST_LIMIT = 50
PROGRESS_MIN = 200  # entries: below this a progress bar is noise
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130

_SCAN_PAGE = 500
_ID_RE = re.compile(r"[0-9]{1,20}-[0-9]{1,20}\Z")
_AGE_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw])\Z")
_MS_RE = re.compile(r"[0-9]+\Z")
_AGE_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_SECONDS_LOOKALIKE = 10**11  # epoch ms below this is 1973: the user gave seconds
_MAX_U64 = 2**64 - 1

_NO_TASK = "no taskName: an undecodable scheduled member or a malformed entry, not a job; repair it by hand"
_BAD_JSON = "payload is not valid JSON: it would be dead-lettered again"

T = TypeVar("T")
_Item = tuple[bytes, dict[bytes, bytes]]  # one XRANGE item


# -- entries and filters ---------------------------------------------------------
@dataclass(frozen=True, eq=False)
class DeadLetter(TextEntry):
    """One dead-letter entry: its stream id and every field, decoded as text.

    Fields keep the stream's order. Invalid UTF-8 is replaced (U+FFFD); that
    only matters for display, since requeue.lua copies the raw bytes.
    """

    @property
    def task(self) -> str:
        """``taskName``; empty when missing (parked scheduled members, malformed entries)."""
        return self.fields.get("taskName", "")

    @property
    def dead_at_ms(self) -> int:
        """``deadLetteredAt``, else the entry id's milliseconds (when it was written)."""
        raw = self.fields.get("deadLetteredAt", "")
        return int(raw) if _MS_RE.match(raw) else int(self.id.split("-", 1)[0])

    @property
    def error(self) -> str:
        """``errorType: errorMessage``, either part alone, or '' when neither is set."""
        etype, msg = self.fields.get("errorType", ""), self.fields.get("errorMessage", "")
        return f"{etype}: {msg}" if etype and msg else etype or msg

    def problem(self) -> str | None:
        """Why this entry cannot be requeued as a job, or None if it can.

        The requeued copy must decode as a job (:func:`wire.decode_entry`,
        the worker's own check); anything else would only be dead-lettered
        again as malformed.
        """
        if not self.task:
            return _NO_TASK
        decoded = wire.decode_entry({k: v for k, v in self.fields.items() if k not in REQUEUE_DROPS})
        if isinstance(decoded, wire.Malformed):
            return _BAD_JSON if decoded.reason.startswith("payload is not valid JSON") else \
                f"not a valid job ({decoded.reason}): it would be dead-lettered again"
        return None

    def as_json(self) -> dict[str, str]:
        """``{"id": …, <field>: <text>, …}``: what ``--json`` prints."""
        return {"id": self.id, **self.fields}


@dataclass(frozen=True)
class Filter:
    """Which entries a command acts on; no criteria matches everything."""

    task: str | None = None
    since_ms: int | None = None

    @property
    def active(self) -> bool:
        """True when at least one criterion is set."""
        return self.task is not None or self.since_ms is not None

    def matches(self, entry: DeadLetter) -> bool:
        """True if ``entry`` passes every criterion."""
        if self.task is not None and entry.task != self.task:
            return False
        if self.since_ms is not None and entry.dead_at_ms < self.since_ms:
            return False
        return True


def parse_since(text: str, now: int) -> int:
    """Epoch ms of a ``--since`` value, relative to ``now`` (epoch ms).

    Accepts an ISO-8601 time (``2025-11-28T09:30:00Z``, ``2025-11-28``; a time
    without an offset is local time), an age (``90s``, ``10m``, ``2h``,
    ``3d``, ``1w``) or epoch milliseconds. Raises ConfigError naming the
    value and the accepted forms.
    """
    s = text.strip()
    forms = "use an ISO-8601 time (2025-11-28T09:30:00Z), an age (10m, 2h, 3d) or epoch milliseconds"
    m = _AGE_RE.match(s)
    if m:
        return now - round(float(m[1]) * _AGE_MS[m[2]])
    if _MS_RE.match(s):
        ms = int(s)
        if 0 < ms < _SECONDS_LOOKALIKE:
            raise ConfigError(f"--since {text!r}: that is before 1973 in milliseconds; if it is epoch seconds, "
                              f"use {ms * 1000}")
        return ms
    iso = s[:-1] + "+00:00" if s[-1:] in ("Z", "z") else s
    try:
        when = _dt.datetime.fromisoformat(iso)
    except ValueError:
        raise ConfigError(f"--since {text!r}: not a time I understand; {forms}") from None
    if when.tzinfo is None:
        when = when.astimezone()  # naive: the operator's local time
    return int(when.timestamp() * 1000)


def _next_id(entry_id: str) -> str:
    ms, seq = (int(p) for p in entry_id.split("-", 1))
    return f"{ms + 1}-0" if seq == _MAX_U64 else f"{ms}-{seq + 1}"


# -- the dead-letter stream of one queue ----------------------------------------------
class DeadLetters:
    """Read, requeue and purge the dead-letter stream of one queue.

    Redis errors are not translated here: wrap calls in
    :func:`backstage.connections.redis_conn.translate_errors` (as :func:`run` does).
    """

    def __init__(self, r: "redis.Redis", keys: Keys, queue: str) -> None:
        self.r = r
        self.keys = keys
        self.queue = validate_queue(queue)
        self.stream = keys.dead_letter(queue)
        self.ready = keys.stream(queue)
        self._requeue = r.register_script(scripts.source("requeue"))

    def _range(self, start: str, end: str, count: int, *, reverse: bool = False) -> list[_Item]:
        # decode_responses=False: ids and fields are bytes (redis-py's stubs allow str/None too)
        if reverse:
            return cast("list[_Item]", self.r.xrevrange(self.stream, start, end, count=count))
        return cast("list[_Item]", self.r.xrange(self.stream, start, end, count=count))

    def known(self) -> bool:
        """True if the dead-letter stream or the ready stream of the queue exists."""
        return bool(self.r.exists(self.stream, self.ready))

    def length(self) -> int:
        """Number of entries in the dead-letter stream."""
        return int(self.r.xlen(self.stream))

    def last_id(self) -> str | None:
        """Id of the newest entry (the upper bound of a snapshot), None if empty."""
        newest = self._range("+", "-", 1, reverse=True)
        return newest[0][0].decode() if newest else None

    def get(self, entry_id: str) -> DeadLetter | None:
        """The entry with this full ``ms-seq`` id, or None."""
        found = self._range(entry_id, entry_id, 1)
        return DeadLetter.from_redis(*found[0]) if found else None

    def scan(self, flt: Filter = Filter(), *, until: str | None = None) -> Iterator[DeadLetter]:
        """Matching entries, oldest first, read in pages; stop after id ``until`` if given."""
        start, end = "-", until or "+"
        while True:
            page = self._range(start, end, _SCAN_PAGE)
            for eid, raw in page:
                entry = DeadLetter.from_redis(eid, raw)
                if flt.matches(entry):
                    yield entry
            if len(page) < _SCAN_PAGE:
                return
            start = "(" + page[-1][0].decode()

    def target_of(self, entry: DeadLetter) -> str:
        """Ready stream a requeue sends ``entry`` to: its ``queue`` field when
        that is a queue's stream under our prefix, else this queue's stream."""
        source = entry.fields.get("queue", "")
        if source:
            try:
                return self.keys.stream(validate_queue(self.keys.queue_of(source)))
            except ValueError:  # another prefix, P:scheduled, a dead-letter key…
                pass
        return self.ready

    def requeue_batch(self, moves: Sequence[tuple[str, str]]) -> tuple[list[int], str]:
        """Move entries ``(id, target stream)`` back as fresh jobs: one atomic step each.

        Returns ``(codes, error)`` as requeue.lua does: per id 1 moved, 0
        already gone, -1 left in place (no taskName); ``error`` is '' unless
        an XADD failed, in which case ``codes`` stops before that id.
        """
        if not moves:
            return [], ""
        targets: dict[str, int] = {}
        pairs: list[str | int] = []
        for entry_id, target in moves:
            if target == self.stream:
                raise ValueError("requeue target is the dead-letter stream itself")
            pairs += (entry_id, targets.setdefault(target, len(targets) + 2))
        codes, err = self._requeue(keys=[self.stream, *targets],
                                   args=[len(REQUEUE_DROPS), *REQUEUE_DROPS, *pairs])
        return [int(c) for c in codes], (err.decode("utf-8", "replace") if isinstance(err, bytes) else str(err))

    def delete(self, ids: Sequence[str]) -> int:
        """XDEL these ids; returns how many were still there."""
        return int(self.r.xdel(self.stream, *ids)) if ids else 0

    def purge_until(self, last_id: str) -> int:
        """Delete every entry up to and including ``last_id``; returns how many.

        Exact ``XTRIM MINID``: entries added after the snapshot survive.
        """
        return int(self.r.xtrim(self.stream, minid=_next_id(last_id), approximate=False))


# -- terminal output ---------------------------------------------------------------
_CONTROL = {c: "?" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_CONTROL_KEEP_LINES = {c: f"\\x{c:02x}" for c in _CONTROL if c not in (0x09, 0x0A)}


def _cell(text: str) -> str:
    """One table cell: whitespace runs (newlines too) become one space, control characters '?'."""
    return " ".join(text.split()).translate(_CONTROL)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _utc(ms: int, fmt: str = "%Y-%m-%dT%H:%M:%SZ") -> str:
    """UTC time of epoch ``ms`` (the raw number if it is out of range)."""
    try:
        return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc).strftime(fmt)
    except (OverflowError, OSError, ValueError):
        return str(ms)


_HEADS = ("ID", "TASK", "REASON", "ERROR", "DEAD AT", "DELIVERIES")
_ID, _TASK, _REASON, _ERROR, _DEAD_AT, _DELIVERIES = range(6)
_SEP = "  "
_TASK_MAX, _TASK_MIN, _TASK_LAST = 32, 12, 8
_ERROR_ROOMY, _ERROR_MIN = 24, 10
_DEAD_AT_LONG = "%Y-%m-%dT%H:%M:%SZ"
_DEAD_AT_SHORT = "%m-%d %H:%M"  # UTC too; for narrow terminals (the full time is in show/--json)


def format_table(entries: Sequence[DeadLetter], width: int) -> list[str]:
    """Lines of the ``dlq list`` table, fitted to ``width`` columns.

    When the natural table is too wide, in this order: ERROR shrinks to 24;
    DEAD AT drops year and seconds (and ERROR gets the room back, up to
    what still fits); TASK shrinks to 12, ERROR to 10, TASK to 8.
    Clipped cells end with '…'. A terminal narrower than that still wraps.
    """
    widths: list[int] = []

    def shrink(col: int, floor: int) -> None:
        over = sum(widths) + len(_SEP) * (len(widths) - 1) - width
        if over > 0:
            widths[col] = max(widths[col] - over, min(floor, widths[col]))

    for dead_at_fmt in (_DEAD_AT_LONG, _DEAD_AT_SHORT):
        rows = [[e.id, _cell(e.task) or "-", _cell(e.fields.get("reason", "")) or "-", _cell(e.error) or "-",
                 _utc(e.dead_at_ms, dead_at_fmt), _cell(e.fields.get("deliveryCount", "")) or "-"]
                for e in entries]
        widths[:] = [max([len(head), *(len(row[i]) for row in rows)]) for i, head in enumerate(_HEADS)]
        widths[_TASK] = min(widths[_TASK], _TASK_MAX)
        shrink(_ERROR, _ERROR_ROOMY)
        if sum(widths) + len(_SEP) * (len(widths) - 1) <= width:
            break
    shrink(_TASK, _TASK_MIN)
    shrink(_ERROR, _ERROR_MIN)
    shrink(_TASK, _TASK_LAST)

    def line(cells: Sequence[str]) -> str:
        return _SEP.join(c.rjust(w) if i == _DELIVERIES else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    return [line(_HEADS)] + [line([_clip(v, w) for v, w in zip(row, widths)]) for row in rows]


def format_entry(entry: DeadLetter, stream: str) -> list[str]:
    """Lines of ``dlq show``: every field; multi-line values (traceback) verbatim below their name."""
    names = ["id", "stream", *entry.fields]
    pad = max(len(n) for n in names) + 2
    lines = [f"{'id'.ljust(pad)}{entry.id}", f"{'stream'.ljust(pad)}{stream}"]
    for name, value in entry.fields.items():
        shown = value.translate(_CONTROL_KEEP_LINES)  # tracebacks as-is, terminal escapes defused
        if "\n" in shown.rstrip("\n"):
            lines.append(f"{name}:")
            lines.append(shown.rstrip("\n"))
            continue
        if name in ("deadLetteredAt", "enqueuedAt") and _MS_RE.match(value):
            shown = f"{value} ({_utc(int(value))})"
        lines.append(f"{name.ljust(pad)}{shown}")
    return lines


class Progress:
    """``\\r[####......] n/total`` on a terminal; silent when disabled."""

    def __init__(self, total: int, stream: TextIO, *, enabled: bool, width: int = 30) -> None:
        self.total, self.stream, self.enabled, self.width = total, stream, enabled, width
        self.shown = False

    def update(self, done: int) -> None:
        """Redraw the bar at ``done`` of ``total``."""
        if not self.enabled or self.total <= 0:
            return
        filled = self.width * min(done, self.total) // self.total
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total}")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        """End the bar's line so that what follows starts on a fresh one."""
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = False


def _progress(total: int) -> Progress:
    return Progress(total, sys.stderr, enabled=total > PROGRESS_MIN and sys.stderr.isatty())


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _entries(n: int) -> str:
    return "1 entry" if n == 1 else f"{n} entries"


def _print_json(obj: Any) -> None:
    print(orjson.dumps(obj).decode())


# -- the `backstage dlq` command ------------------------------------------------------
@dataclass
class _Ctx:
    args: argparse.Namespace
    dls: DeadLetters
    flt: Filter
    limit: int | None
    batch: int


def _positive(name: str, value: object, maximum: int | None = None) -> int:
    try:
        n = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{name}={value!r}: expected a whole number") from None
    if n < 1 or (maximum is not None and n > maximum):
        raise ConfigError(f"{name}={n}: must be between 1 and {maximum}" if maximum else f"{name}={n}: must be >= 1")
    return n


def _batch_size(flag: int | None) -> int:
    if flag is not None:
        return _positive("--batch", flag, MAX_BATCH)
    env = os.environ.get("BACKSTAGE_DLQ_BATCH")
    return _positive("BACKSTAGE_DLQ_BATCH", env, MAX_BATCH) if env else DEFAULT_BATCH


def _cmd_list(c: _Ctx) -> int:
    limit = c.limit if c.limit is not None else DEFAULT_LIST_LIMIT
    entries = list(itertools.islice(c.dls.scan(c.flt), limit + 1))
    more = len(entries) > limit
    del entries[limit:]
    if c.args.json:
        _print_json([e.as_json() for e in entries])
        return 0
    if not entries:
        print(f"no {'matching ' if c.flt.active else ''}entries in {c.dls.stream}")
        return 0
    # fitted to a terminal (or an explicit $COLUMNS) only: piped output (grep, a file) keeps every cell whole
    fit = sys.stdout.isatty() or bool(os.environ.get("COLUMNS"))
    width = shutil.get_terminal_size().columns if fit else sys.maxsize
    print("\n".join(format_table(entries, width)))
    if more:
        total = "" if c.flt.active else f" of {c.dls.length()}"
        print(f"\nshowing the oldest {limit}{total} {'matching ' if c.flt.active else ''}entries; "
              "raise --limit, or narrow with --task / --since")
    return 0


def _cmd_show(c: _Ctx) -> int:
    entry_id = c.args.id.strip()
    if not _ID_RE.match(entry_id):
        raise ConfigError(f"entry id {c.args.id!r}: expected a stream id like 1764370090000-0 (see `backstage dlq list`)")
    entry = c.dls.get(entry_id)
    if entry is None:
        raise BackstageError(f"no entry {entry_id} in {c.dls.stream}; `backstage dlq list {c.dls.queue}` shows the ids")
    if c.args.json:
        _print_json(entry.as_json())
    else:
        print("\n".join(format_entry(entry, c.dls.stream)))
    return 0


def _select(c: _Ctx, until: str, skipped: collections.Counter[str],
            served: presence.Served | None = None) -> list[tuple[str, str]]:
    """``(id, target stream)`` of the matching, requeueable entries of the snapshot,
    oldest first, at most --limit; counts the others in ``skipped`` by reason.
    ``served`` (None: --force) also skips entries the live workers would dead-letter
    again. Keeps ids only (not payloads): a snapshot of 100,000 entries stays small."""
    moves: list[tuple[str, str]] = []
    for entry in c.dls.scan(c.flt, until=until):
        why = entry.problem()
        if why is None and served is not None:
            why = served.problem(entry.task, entry.fields)
        if why is not None:
            skipped[why] += 1
            continue
        moves.append((entry.id, c.dls.target_of(entry)))
        if c.limit is not None and len(moves) >= c.limit:
            break
    return moves


def _cmd_requeue(c: _Ctx) -> int:
    until = c.dls.last_id()
    skipped: collections.Counter[str] = collections.Counter()
    force = getattr(c.args, "force", False)
    served = None if force else presence.Served.from_heartbeats(presence.live_workers(c.dls.r, c.dls.keys))
    moves = _select(c, until, skipped, served) if until else []
    moved: collections.Counter[str] = collections.Counter()
    missing = 0
    bar = _progress(len(moves))
    done = 0
    try:
        for chunk in _chunks(moves, c.batch):
            codes, err = c.dls.requeue_batch(chunk)
            for (_, target), code in zip(chunk, codes):
                if code == 1:
                    moved[target] += 1
                elif code == 0:
                    missing += 1
                else:
                    skipped[_NO_TASK] += 1
            done += len(codes)
            bar.update(done)
            if err:
                bar.close()
                raise BackstageError(f"requeue stopped: {err}; {sum(moved.values())} moved before it, the rest are "
                                     f"still in {c.dls.stream}: fix the cause and run the same command again")
    except KeyboardInterrupt:
        bar.close()
        print(f"backstage: interrupted after requeueing {sum(moved.values())} of {len(moves)} (maybe a batch more); "
              f"the others are still in {c.dls.stream}: run the same command again to go on", file=sys.stderr)
        return EXIT_INTERRUPTED
    bar.close()
    return _requeue_report(c, moved, skipped, missing)


def _requeue_report(c: _Ctx, moved: collections.Counter[str], skipped: collections.Counter[str], missing: int) -> int:
    requeued, nskipped = sum(moved.values()), sum(skipped.values())
    if c.args.json:
        _print_json({"requeued": requeued, "skipped": nskipped, "missing": missing,
                     "skipped_reasons": dict(skipped), "targets": dict(moved)})
        return 0
    if not (requeued or nskipped or missing):
        print(f"no {'matching ' if c.flt.active else ''}entries to requeue in {c.dls.stream}")
        return 0
    where = ", ".join(f"{n} to {t}" for t, n in sorted(moved.items()))
    print(f"requeued {_entries(requeued)}" + (f" ({where})" if where else ""))
    if nskipped:
        print(f"skipped {nskipped} that would only be dead-lettered again (left in {c.dls.stream}):")
        for why, n in skipped.most_common():
            print(f"  {n}  {why}")
    if missing:
        print(f"{missing} already gone (requeued or purged by someone else meanwhile)")
    return 0


def _confirmed(c: _Ctx, what: str) -> bool:
    """--yes, or a 'y' from the operator on a terminal; raises ConfigError when nobody can be asked."""
    if c.args.yes:
        return True
    if not sys.stdin.isatty():
        raise ConfigError(f"purge would delete {what} for good: add --yes to confirm")
    sys.stderr.write(f"delete {what} for good? [y/N] ")
    sys.stderr.flush()
    try:
        answer = input()
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes")


def _cmd_purge(c: _Ctx) -> int:
    until = c.dls.last_id()
    everything = not c.flt.active and c.limit is None
    ids: list[str] = []
    if until is not None and not everything:
        ids = [e.id for e in itertools.islice(c.dls.scan(c.flt, until=until), c.limit)]
    count = c.dls.length() if everything and until is not None else len(ids)
    if count and not _confirmed(c, f"{_entries(count)} of {c.dls.stream}"):
        print("backstage: nothing purged", file=sys.stderr)
        return EXIT_ERROR
    purged = 0
    bar = _progress(len(ids))
    try:
        if count and everything and until is not None:
            purged = c.dls.purge_until(until)
        for chunk in _chunks(ids, c.batch):
            purged += c.dls.delete(chunk)
            bar.update(purged)
    except KeyboardInterrupt:
        bar.close()
        print(f"backstage: interrupted after purging {purged} of {count}", file=sys.stderr)
        return EXIT_INTERRUPTED
    bar.close()
    if c.args.json:
        _print_json({"purged": purged})
    elif count:
        print(f"purged {_entries(purged)} from {c.dls.stream}")
    else:
        print(f"nothing to purge: no {'matching ' if c.flt.active else ''}entries in {c.dls.stream}")
    return 0


_ACTIONS: dict[str, Callable[[_Ctx], int]] = {
    "list": _cmd_list, "show": _cmd_show, "requeue": _cmd_requeue, "purge": _cmd_purge,
}


def _text_streams_forgiving() -> None:
    # Entries hold whatever producers wrote; an unencodable character must not
    # turn a listing into a traceback on a non-UTF-8 terminal.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def run(args: argparse.Namespace, url: str, prefix: str) -> int:
    """Run ``backstage dlq <action> QUEUE …`` (``args`` from the CLI parser).

    Validates every option before connecting. Raises BackstageError (with a
    one-line message) for bad input, an unknown queue, a missing id or
    Redis errors (translated: host:port, never the password). Returns the
    exit code.
    """
    _text_streams_forgiving()
    queue = validate_queue(args.queue)
    since = getattr(args, "since", None)
    flt = Filter(task=getattr(args, "task", None),
                 since_ms=parse_since(since, wire.now_ms()) if since is not None else None)
    limit = getattr(args, "limit", None)
    if limit is not None:
        limit = _positive("--limit", limit)
    batch = _batch_size(getattr(args, "batch", None))
    keys = Keys(prefix)
    r = redis_conn.sync_client(url, slot_key=prefix)
    where = redis_conn.endpoint(r)
    try:
        with redis_conn.translate_errors(where):
            redis_conn.check_version(r.info("server"), where)
            dls = DeadLetters(r, keys, queue)
            if not dls.known():
                raise ConfigError(f"unknown queue {queue!r}: neither {dls.ready} nor {dls.stream} exists "
                                  f"(prefix {prefix!r}); check the name and --prefix")
            return _ACTIONS[args.action](_Ctx(args, dls, flt, limit, batch))
    except KeyboardInterrupt:  # while reading: nothing was changed
        print("backstage: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (`| head`): stop quietly, like other shell tools
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    finally:
        r.close()
