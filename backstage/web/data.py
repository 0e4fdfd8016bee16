"""Every Redis read behind the dashboard's pages, each one bounded.

Owns no key family: it reads streams, the scheduled set, presence, cron
markers, result hashes and the history through the modules that own them
(:mod:`backstage.ops.presence`, :mod:`backstage.ops.history`,
:mod:`backstage.protocol.keys`). Pages read with ``COUNT``/``LIMIT``
(XRANGE, XPENDING, ZRANGEBYSCORE), never a whole stream; the only keyspace
scan (queue discovery) runs at most once a minute.
"""

from __future__ import annotations

import datetime as _dt
import re
import threading
import time
from typing import Any, cast

import orjson
import redis

from ..connections import redis_conn
from ..ops import presence
from ..ops.textentry import TextEntry
from ..ops.inspect import queue_stats
from ..ops.history import History, HistoryFilter, Record
from ..protocol.keys import PRIORITIES, Keys, validate_queue
from .config import DashboardConfig

__all__ = ["Store", "NotFound", "Entry", "ID_RE", "pretty_json", "fmt_ms", "fmt_age"]

ID_RE = re.compile(r"[0-9]{1,20}-[0-9]{1,20}\Z")
PAGE = 50
_DISCOVER_EVERY = 60.0
_DISCOVER_MAX_KEYS = 100_000  # stop a discovery scan after this many keys (it runs again later)
_SCHEDULED_SAMPLE = 2000
_HISTORY_BUDGET = 5000  # records a job page reads to find one job's history


class NotFound(LookupError):
    """An unknown queue, id or page: rendered as a 404 page."""


def pretty_json(text: str) -> str:
    """Indented JSON of ``text``, or ``text`` itself when it is not JSON."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    if isinstance(value, str):  # a double-encoded payload (scheduled members carry those)
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            pass
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def fmt_ms(ms: int | str | None) -> str:
    """Epoch ms as UTC ``YYYY-MM-DD HH:MM:SS``; '' for nothing."""
    try:
        n = int(ms)  # type: ignore[arg-type]
        return _dt.datetime.fromtimestamp(n / 1000, tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return "" if ms is None else str(ms)


def fmt_age(seconds: float | None) -> str:
    """``12s``, ``5m``, ``3h``, ``2d``; '-' for None."""
    if seconds is None:
        return "-"
    s = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.0f}{unit}"
    return f"{s:.0f}s"


Entry = TextEntry  # a queue's entry, shown as text


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _id_key(entry_id: str) -> tuple[int, int]:
    a, b = entry_id.split("-", 1)
    return int(a), int(b)


class Store:
    """The dashboard's Redis reads (thread-safe: handlers run in a thread pool)."""

    def __init__(self, cfg: DashboardConfig) -> None:
        self.cfg = cfg
        self.keys = Keys(cfg.prefix)
        self.group = cfg.group
        self.r = redis_conn.sync_client(cfg.redis_url, socket_timeout=5.0, slot_key=cfg.prefix)
        self.where = redis_conn.endpoint(self.r)
        self.history = History(self.r, self.keys)
        self._found: set[str] = set()
        self._found_at = -_DISCOVER_EVERY
        self._lock = threading.Lock()

    def close(self) -> None:
        self.r.close()

    # -- queues ----------------------------------------------------------------------
    def _discover(self) -> set[str]:
        with self._lock:
            if time.monotonic() - self._found_at < _DISCOVER_EVERY:
                return self._found
            found: set[str] = set()
            head = self.keys.prefix + ":"
            for n, raw in enumerate(self.r.scan_iter(match=f"{head}*", _type="stream", count=1000)):
                name = _text(raw)[len(head):]
                if name.endswith(":dead-letter"):
                    name = name[: -len(":dead-letter")]
                try:
                    found.add(validate_queue(name))
                except ValueError:
                    pass
                if n >= _DISCOVER_MAX_KEYS:
                    break
            self._found, self._found_at = found, time.monotonic()
            return found

    def queues(self, workers: list[dict[str, Any]] | None = None) -> list[str]:
        """Known queues: the priorities first, then the rest by name."""
        names = set(PRIORITIES) | set(self.cfg.queues) | self._discover()
        for w in workers if workers is not None else presence.live_workers(self.r, self.keys):
            names.update(q for q in w.get("queues", []) if isinstance(q, str))
        return [q for q in PRIORITIES] + sorted(names - set(PRIORITIES))

    def check_queue(self, queue: str) -> str:
        """``queue`` if it is valid and known, else NotFound."""
        try:
            validate_queue(queue)
        except ValueError:
            raise NotFound(f"no queue named {queue!r}") from None
        if queue in PRIORITIES or queue in self.cfg.queues:
            return queue
        if self.r.exists(self.keys.stream(queue), self.keys.dead_letter(queue)):
            return queue
        raise NotFound(f"no queue named {queue!r} (prefix {self.keys.prefix!r})")

    def scheduled_counts(self) -> tuple[int, dict[str, int], bool]:
        """(total, per queue, exact): per-queue counts read from the soonest
        members only when the set is larger than the sample."""
        total = int(self.r.zcard(self.keys.scheduled))
        per: dict[str, int] = {}
        for raw in cast("list[bytes]", self.r.zrange(self.keys.scheduled, 0, _SCHEDULED_SAMPLE - 1)):
            q = self._member_queue(raw)
            per[q] = per.get(q, 0) + 1
        return total, per, total <= _SCHEDULED_SAMPLE

    def _member_queue(self, raw: bytes) -> str:
        try:
            m = orjson.loads(raw)
            stream = m.get("streamKey") if isinstance(m, dict) else None
            if isinstance(stream, str) and stream.startswith(self.keys.prefix + ":"):
                return self.keys.queue_of(stream)
            if isinstance(m, dict) and isinstance(m.get("priority"), str):
                return str(m["priority"])
        except (orjson.JSONDecodeError, ValueError):
            pass
        return "default"

    def overview(self) -> dict[str, Any]:
        """Every queue's counts, the per-minute chart data and the live workers."""
        workers = presence.live_workers(self.r, self.keys)
        total, per, exact = self.scheduled_counts()
        rows = []
        for stats in queue_stats(self.r, self.keys, self.group, self.queues(workers)):
            row = stats.as_dict()
            row["scheduled"] = per.get(stats.queue, 0)
            rows.append(row)
        minutes = presence.per_minute(self.r, self.keys, 60)
        paused = presence.paused_queues(self.r, self.keys)
        return {"queues": rows, "scheduled": total, "scheduled_exact": exact, "minutes": minutes,
                "workers": workers, "paused": sorted(paused), "history": self.history.length(),
                "now": int(time.time() * 1000)}

    # -- one queue ---------------------------------------------------------------------
    def _group_info(self, stream: str) -> dict[str, Any] | None:
        try:
            groups = self.r.xinfo_groups(stream)
        except redis.ResponseError:
            return None
        for g in groups:
            if _text(g["name"]) == self.group:
                return dict(g)
        return None

    def queued(self, queue: str, after: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """A page of the ready stream, oldest first, after entry id ``after``."""
        stream = self.keys.stream(queue)
        start = "(" + after if after else "-"
        raw = cast("list[tuple[bytes, dict[bytes, bytes]]]", self.r.xrange(stream, start, "+", count=PAGE + 1))
        g = self._group_info(stream)
        last = _text(g["last-delivered-id"]) if g else "0-0"
        out: list[dict[str, Any]] = []
        for eid, fields in raw[:PAGE]:
            e = Entry.from_redis(eid, fields)
            out.append({"entry": e, "delivered": _id_key(e.id) <= _id_key(last)})
        return out, (_text(raw[PAGE - 1][0]) if len(raw) > PAGE else None)

    def pending(self, queue: str, after: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """A page of the group's pending entries (consumer, idle, deliveries)."""
        stream = self.keys.stream(queue)
        start = "(" + after if after else "-"
        try:
            raw = self.r.xpending_range(stream, self.group, min=start, max="+", count=PAGE + 1)
        except redis.ResponseError:
            return [], None
        out: list[dict[str, Any]] = [{"id": _text(p["message_id"]), "consumer": _text(p["consumer"]),
                "idle_s": int(p["time_since_delivered"]) / 1000, "deliveries": int(p["times_delivered"])}
               for p in raw[:PAGE]]
        return out, (_text(raw[PAGE - 1]["message_id"]) if len(raw) > PAGE else None)

    def scheduled(self, queue: str, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """A page of this queue's scheduled members by due time.

        The cursor is ``<score>:<skip>``: members of the set from that due
        time on, after the first ``skip`` of them (members sharing a due
        millisecond). Reads at most a few sample-sized slices of the set.
        """
        score, skip = 0, 0
        if cursor:
            try:
                a, b = cursor.split(":", 1)
                score, skip = int(a), int(b)
            except ValueError:
                raise NotFound(f"bad cursor {cursor!r}") from None
        out: list[dict[str, Any]] = []
        budget = _SCHEDULED_SAMPLE * 2
        while budget > 0:
            raw = cast("list[tuple[bytes, float]]", self.r.zrangebyscore(
                self.keys.scheduled, score, "+inf", start=skip, num=500, withscores=True))
            budget -= 500
            for member, sc in raw:
                s = int(sc)
                skip = skip + 1 if s == score else 1
                score = s
                if self._member_queue(member) == queue:
                    out.append(self._scheduled_row(member, s))
                    if len(out) >= PAGE:
                        return out, f"{score}:{skip}"
            if len(raw) < 500:
                return out, None
        return out, f"{score}:{skip}"

    def _scheduled_row(self, member: bytes, due: int) -> dict[str, Any]:
        try:
            m = orjson.loads(member)
        except orjson.JSONDecodeError:
            m = {}
        m = m if isinstance(m, dict) else {}
        return {"due": due, "task": str(m.get("taskName", "")), "job_id": str(m.get("jobId", "")),
                "attempt": str(m.get("attempt", "")), "payload": pretty_json(str(m.get("payload", "null"))),
                "raw": member.decode("utf-8", "replace")}

    # -- one job -----------------------------------------------------------------------
    def entry(self, queue: str, entry_id: str) -> dict[str, Any]:
        """An entry of a ready stream (if still there), its PEL row, status and history."""
        if not ID_RE.match(entry_id):
            raise NotFound(f"{entry_id!r} is not a stream entry id (like 1700000000000-0)")
        stream = self.keys.stream(queue)
        found = cast("list[tuple[bytes, dict[bytes, bytes]]]", self.r.xrange(stream, entry_id, entry_id))
        e = Entry.from_redis(*found[0]) if found else None
        pend = None
        try:
            rows = self.r.xpending_range(stream, self.group, min=entry_id, max=entry_id, count=1)
            if rows:
                pend = {"consumer": _text(rows[0]["consumer"]), "idle_s": int(rows[0]["time_since_delivered"]) / 1000,
                        "deliveries": int(rows[0]["times_delivered"])}
        except redis.ResponseError:
            pass
        job_id = e.fields.get("jobId") if e else None
        history, _ = self.history.search(HistoryFilter(job_id=job_id or entry_id), limit=20, budget=_HISTORY_BUDGET)
        if e is None and not history:
            raise NotFound(f"no entry {entry_id} in {stream}, and no history of it (acked jobs leave none "
                           "unless workers run with --history N)")
        return {"entry": e, "pending": pend, "status": self.status(job_id) if job_id else None,
                "history": history, "job_id": job_id, "queue": queue, "entry_id": entry_id}

    def status(self, job_id: str) -> dict[str, str] | None:
        raw = cast("dict[bytes, bytes]", self.r.hgetall(self.keys.result(job_id)))
        return {_text(k): _text(v) for k, v in raw.items()} if raw else None

    def job(self, job_id: str) -> dict[str, Any]:
        """A job by its id: status hash and history records."""
        if not job_id or len(job_id) > 200 or any(c.isspace() for c in job_id):
            raise NotFound(f"{job_id!r} is not a job id")
        status = self.status(job_id)
        history, _ = self.history.search(HistoryFilter(job_id=job_id), limit=20, budget=_HISTORY_BUDGET)
        if status is None and not history:
            raise NotFound(f"no job {job_id!r}: no status kept (result_ttl) and nothing in the latest "
                           f"{_HISTORY_BUDGET} history records")
        return {"job_id": job_id, "status": status, "history": history}

    def jobs(self, flt: HistoryFilter, before: str | None) -> tuple[list[Record], str | None]:
        return self.history.search(flt, before=before, limit=PAGE, budget=_HISTORY_BUDGET)

    # -- workers and cron -------------------------------------------------------------------
    def workers(self) -> dict[str, Any]:
        return {"workers": presence.live_workers(self.r, self.keys),
                "paused": sorted(presence.paused_queues(self.r, self.keys))}

    def cron(self) -> list[dict[str, Any]]:
        """Cron entries the live workers announce, with next fire times and the last fired tick."""
        from croniter import croniter
        import zoneinfo

        seen: dict[str, dict[str, Any]] = {}
        for w in presence.live_workers(self.r, self.keys):
            for c in w.get("cron", []) or []:
                if isinstance(c, dict) and isinstance(c.get("name"), str):
                    row = seen.setdefault(c["name"], {**c, "workers": []})
                    row["workers"].append(w.get("consumer", "?"))
        now = _dt.datetime.now(_dt.timezone.utc)
        names = sorted(seen)
        lasts = self.r.mget([self.keys.cron_last(n) for n in names]) if names else []
        out = []
        for name, last in zip(names, lasts):
            row = seen[name]
            try:
                it = croniter(str(row.get("expr")), now.astimezone(zoneinfo.ZoneInfo(str(row.get("tz", "UTC")))))
                row["next"] = [int(it.get_next(_dt.datetime).timestamp() * 1000) for _ in range(3)]
            except (ValueError, KeyError, zoneinfo.ZoneInfoNotFoundError):
                row["next"] = []
            row["last"] = int(last) if last is not None else None
            out.append(row)
        return out
