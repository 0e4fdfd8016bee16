"""What runs now and what became of a job: ``backstage workers --jobs`` and
``backstage job ID``.

Read-only, run by the ``backstage`` CLI process. Running jobs come from the
masters' presence heartbeats (each lists the job its busy children run, so
the view is at most one heartbeat interval old); a job's status, result and
error come from its ``P:result:<id>`` hash, kept only for jobs enqueued with
``result_ttl``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import time
from typing import Any, Sequence

import orjson

from .. import results
from ..connections import redis_conn
from ..errors import BackstageError
from ..protocol.keys import Keys
from . import presence

__all__ = ["RUNNING_HEADS", "running_rows", "cmd_job"]

RUNNING_HEADS = ("CONSUMER", "CHILD", "PID", "JOB", "TASK", "QUEUE", "ATTEMPT", "STARTED", "RUNNING", "DEADLINE")


def _utc(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return _dt.datetime.fromtimestamp(seconds, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def running_rows(workers: Sequence[dict[str, Any]], now: float | None = None) -> list[list[str]]:
    """One table row per busy child of the given heartbeats."""
    now = time.time() if now is None else now
    rows = []
    for w in workers:
        for j in w.get("jobs", []):
            started = j.get("started_at")
            deadline = j.get("deadline")
            rows.append([str(w.get("consumer", "?")), str(j.get("child", "?")), str(j.get("pid", "?")),
                         str(j.get("job_id") or j.get("entry_id", "?")), str(j.get("task", "?")),
                         str(j.get("queue", "?")), str(j.get("attempt", 1)), _utc(started),
                         f"{now - started:.1f}s" if started else "-",
                         _utc(deadline) + (f" (in {deadline - now:.0f}s)" if deadline else "")])
    return rows


def _running(workers: Sequence[dict[str, Any]], job_id: str) -> list[dict[str, Any]]:
    return [{"consumer": w.get("consumer"), **j} for w in workers for j in w.get("jobs", [])
            if job_id in (j.get("job_id"), j.get("entry_id"))]


def cmd_job(args: argparse.Namespace, url: str, prefix: str) -> int:
    """``backstage job ID``: status, result or error of a job, and where it runs now."""
    keys = Keys(prefix)
    r = redis_conn.sync_client(url, slot_key=prefix)
    where = redis_conn.endpoint(r)
    try:
        with redis_conn.translate_errors(where):
            status = results.read(r, keys, args.id)
            running = _running(presence.live_workers(r, keys), args.id)
    finally:
        r.close()
    if args.json:
        value: Any = None
        if status.get("value") is not None:
            value = orjson.loads(status["value"])
        print(orjson.dumps({"job_id": args.id, "status": status or None, "result": value,
                            "running": running}).decode())
        return 0 if status or running else 1
    if not status and not running:
        raise BackstageError(f"no status kept for job {args.id}: only jobs enqueued with result_ttl= (or whose "
                             "task has one) keep it, until it expires; running jobs show in "
                             "`backstage workers --jobs`")
    lines = [("job", args.id)]
    if status:
        updated = status.get("updatedAt", "")
        lines.append(("status", status.get("status", "?")
                      + (f" (updated {_utc(int(updated) / 1000)})" if updated.isdigit() else "")))
        for name, label in (("task", "task"), ("attempt", "attempt"), ("reason", "reason")):
            if status.get(name):
                lines.append((label, status[name]))
        if status.get("value") is not None:
            lines.append(("result", status["value"]))
        error = ": ".join(x for x in (status.get("errorType"), status.get("errorMessage")) if x)
        if error:
            lines.append(("error", error))
    for j in running:
        lines.append(("running", f"on {j.get('consumer')} child {j.get('child')} (pid {j.get('pid')}) since "
                                 f"{_utc(j.get('started_at'))}, deadline {_utc(j.get('deadline'))}"))
    pad = max(len(k) for k, _ in lines) + 2
    for k, v in lines:
        print(f"{k.ljust(pad)}{v}")
    tb = status.get("traceback", "").rstrip("\n")
    if tb:
        print("traceback:\n" + tb)
    return 0
