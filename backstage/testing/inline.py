"""Inline and capture modes: run or record an app's enqueues in the test's own process.

Inline mode runs each job through the same code the worker uses for the
decisions that matter: the payload goes through JSON (and the typed-task
codec) as it would through Redis, the handler's return value is read by
the child's ``Next`` parser, and every failure is decided by
:func:`backstage.prefork.policy.decide` with the job's attempts and backoff.
Delays (``delay=``, backoff, ``Next(delay=)``) are decided and recorded,
never slept. Nothing touches Redis.

Runs in tests only; imported lazily by ``app.testing``.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import itertools
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import orjson

from ..client import Job
from ..errors import InvalidJobError, Reject, Retry
from ..prefork import policy
from ..context import JobContext, _current
from ..prefork import ipc
from ..prefork.child import _next_step
from ..prefork.config import WorkerConfig
from ..protocol.keys import PRIORITIES, validate_queue
from ..protocol.wire import Backoff, encode_payload

if TYPE_CHECKING:
    from ..app import Backstage

__all__ = ["Attempt", "InlineJob", "InlineRun", "CapturedJob", "Capture"]

_OPTIONS = frozenset({"priority", "queue", "delay", "at", "dedupe_key", "dedupe_ttl", "attempts", "backoff",
                      "timeout", "result_ttl"})


@dataclass
class Attempt:
    """One execution of an inline job."""

    number: int
    outcome: str  # ok | error | retry | reject | unknown-task
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    #: seconds the worker would wait before the next attempt (None: no retry)
    retry_in: float | None = None


@dataclass
class InlineJob:
    """A job enqueued while :meth:`Testing.inline` was active, and what became of it."""

    id: str
    task: str
    payload: Any
    queue: str
    options: dict[str, Any]
    #: seconds the job would have waited before its first run (delay=/at=/Next delay)
    delay: float = 0.0
    parent: str | None = None  # the job whose Next step enqueued this one
    attempts: list[Attempt] = field(default_factory=list)
    status: str = "queued"  # queued | done | dead
    reason: str | None = None  # dead-letter reason (WIRE.md), when dead
    result: Any = None
    _raw: bytes = field(default=b"null", repr=False)  # the payload as it would sit in Redis


class InlineRun:
    """What :meth:`Testing.inline` yields: the jobs it ran.

    ``jobs`` lists every job in the order it was enqueued, ``dead`` those that
    ended in a dead-letter stream, ``results`` maps job id to the handler's
    return value for jobs that succeeded (JSON round-tripped when the task keeps results).
    """

    def __init__(self, app: "Backstage", *, max_deliveries: int = WorkerConfig.max_deliveries) -> None:
        self.app = app
        self.max_deliveries = max_deliveries
        self.jobs: list[InlineJob] = []
        self._queue: list[InlineJob] = []
        self._running = False
        self._dedupe: set[str] = set()
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        # pending chords: (id, members, callback [task, payload, options] or None, on_failure, parent id)
        self._chords: list[tuple[str, list[InlineJob], list[Any] | None, str, str | None]] = []
        #: group_status() of every group or chord that ended, by id
        self.groups: dict[str, dict[str, Any]] = {}

    @property
    def dead(self) -> list[InlineJob]:
        return [j for j in self.jobs if j.status == "dead"]

    @property
    def results(self) -> dict[str, Any]:
        return {j.id: j.result for j in self.jobs if j.status == "done"}

    def by_task(self, task: str) -> list[InlineJob]:
        """The jobs of one task, in enqueue order."""
        return [j for j in self.jobs if j.task == task]

    # -- enqueue (called by app.enqueue while the block runs) ------------------------
    def enqueue(self, task: str, payload: Any, options: dict[str, Any]) -> str | None:
        job = self._make(task, payload, options)
        if job is None:
            return None
        self._run_all()
        return job.id

    def enqueue_many(self, jobs: Iterable[Job | tuple[str, Any]], defaults: dict[str, Any]) -> list[str | None]:
        made = [self._make(*_job_args(j, defaults)) for j in list(jobs)]
        self._run_all()
        return [j.id if j is not None else None for j in made]

    def _make(self, task: str, payload: Any, options: dict[str, Any], *, parent: str | None = None,
              delay: float | None = None) -> InlineJob | None:
        unknown = set(options) - _OPTIONS
        if unknown:
            raise InvalidJobError(f"task {task!r}: unknown option(s) {', '.join(sorted(unknown))}")
        if not isinstance(task, str) or not task:
            raise InvalidJobError(f"task name {task!r}: expected a non-empty string")
        # the same JSON round trip as through Redis: non-JSON payloads fail here, as they would there
        raw = encode_payload(task, payload)
        value = orjson.loads(raw)
        t = self.app.tasks.get(task)
        queue = options.get("priority") or options.get("queue") or (t.queue if t is not None and t.queue else "default")
        if options.get("priority") is not None and options["priority"] not in PRIORITIES:
            raise InvalidJobError(f"task {task!r}: priority={options['priority']!r} is not one of {', '.join(PRIORITIES)}")
        validate_queue(queue)
        key = options.get("dedupe_key")
        if key is not None:
            if key in self._dedupe:
                return None
            self._dedupe.add(key)
        wait = delay if delay is not None else _wait(options)
        job = InlineJob(f"inline-{next(self._ids)}", task, value, queue, dict(options), wait, parent)
        job._raw = raw
        self.jobs.append(job)
        self._queue.append(job)
        return job

    # -- running ------------------------------------------------------------------
    def _run_all(self) -> None:
        if self._running:
            return  # a handler enqueued more: the outer loop runs it after the current job
        self._running = True
        try:
            while self._queue:
                self._run(self._queue.pop(0))
                if self._chords:
                    self._settle_chords()
        finally:
            self._running = False

    def _run(self, job: InlineJob) -> None:
        t = self.app.tasks.get(job.task)
        if t is None:
            job.attempts.append(Attempt(1, "unknown-task", "TaskNotFound", f"no handler for task {job.task!r}"))
            self._dead(job, policy.decide("unknown-task", attempt=1, attempts=None,
                                          max_deliveries=self.max_deliveries, backoff=None))
            return
        attempts = job.options.get("attempts") or t.attempts
        backoff = job.options.get("backoff") or t.backoff
        if backoff is not None and not isinstance(backoff, Backoff):
            backoff = Backoff.fixed(float(backoff))
        number = 0
        while True:
            number += 1
            token = _current.set(JobContext(job.id, job.task, number, 0))
            try:
                result = self._call(t, orjson.loads(job._raw))  # each attempt decodes the entry afresh
                step = _next_step(result)
                value = result
                if step is None and (job.options.get("result_ttl") or t.result_ttl):
                    # the worker keeps a tracked result as JSON: what cannot be encoded fails the job there
                    value = orjson.loads(orjson.dumps(result))
            except Exception as exc:  # noqa: BLE001 - every failure becomes data (Retry, Reject included)
                kind = "retry" if isinstance(exc, Retry) else "reject" if isinstance(exc, Reject) else "error"
                retry_ms = round(exc.delay * 1000) if isinstance(exc, Retry) and exc.delay is not None else None
                attempt = Attempt(number, kind, _etype(exc), str(exc),
                                  "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
                job.attempts.append(attempt)
                d = policy.decide(kind, attempt=number, attempts=attempts, max_deliveries=self.max_deliveries,
                                  backoff=backoff, retry_delay_ms=retry_ms)
                if isinstance(d, policy.RetryLater):
                    attempt.retry_in = d.delay
                    continue
                self._dead(job, d)
                return
            finally:
                _current.reset(token)
            job.attempts.append(Attempt(number, "ok"))
            job.status = "done"
            if isinstance(step, ipc.FanOut):
                self._fan_out(job, step)
            elif step is not None:
                task_name, delay_ms, payload_json, queue = step.task, step.delay_ms, step.payload_json, step.queue
                self._make(task_name, orjson.loads(payload_json), {"queue": queue} if queue else {},
                           parent=job.id, delay=delay_ms / 1000.0)
            else:
                job.result = value
            return

    # -- groups and chords: members run inline, the callback once they all ended --------------
    def enqueue_group(self, jobs: Iterable[Job | tuple[str, Any]], callback: Job | tuple[str, Any] | None,
                      options: dict[str, Any]) -> str:
        gid = options.get("group_id") or f"inline-group-{next(self._ids)}"
        defaults = {k: v for k, v in options.items() if k in _OPTIONS}
        members = [self._make(*_job_args(j, defaults)) for j in list(jobs)]
        if not members:
            raise InvalidJobError("enqueue_group: give at least one member")
        cb = None
        if callback is not None:
            cb = list(_job_args(callback, {}))
        self._chords.append((gid, [m for m in members if m is not None], cb, options.get("on_failure", "callback"),
                             None))
        self._run_all()
        return gid

    def _fan_out(self, parent: InlineJob, g: ipc.FanOut) -> None:
        members = [self._make(t, orjson.loads(pj), {"queue": q} if q else {}, parent=parent.id)
                   for t, pj, q in g.members]
        cb = None
        if g.callback is not None:
            t, pj, q = g.callback
            cb = [t, orjson.loads(pj), {"queue": q} if q else {}]
        gid = g.group_id or f"inline-group-{next(self._ids)}"
        self._chords.append((gid, [m for m in members if m is not None], cb, g.on_failure, parent.id))

    def _settle_chords(self) -> None:
        """Enqueue the callback of every chord whose members all ended (as the last member's settle does)."""
        for entry in list(self._chords):
            gid, members, cb, policy_, parent = entry
            if any(m.status not in ("done", "dead") for m in members):
                continue
            self._chords.remove(entry)
            self.groups[gid] = {"id": gid, "state": "failed" if any(m.status == "dead" for m in members) else "done",
                                "total": len(members), "done": sum(m.status == "done" for m in members),
                                "failed": sum(m.status == "dead" for m in members), "pending": 0}
            if cb is None:
                continue
            results = [orjson.loads(orjson.dumps(m.result)) if m.status == "done" else None for m in members]
            failures = [{"index": i, "reason": m.reason or "failed",
                         "errorType": (m.attempts[-1].error_type or "") if m.attempts else "",
                         "errorMessage": (m.attempts[-1].error_message or "") if m.attempts else ""}
                        for i, m in enumerate(members) if m.status == "dead"]
            task, payload, opts = cb
            made = self._make(task, {"chord": gid, "payload": payload, "results": results, "failures": failures},
                              opts, parent=parent)
            if made is not None and failures and policy_ == "dead-letter":
                self._queue.remove(made)  # dead-lettered, never run
                made.status, made.reason = "dead", "failed"

    def _call(self, t: Any, value: Any) -> Any:
        if not t.is_async:
            return t.handler(value)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
            return self._loop.run_until_complete(t.handler(value))
        # called from async code (a test or an ASGI app): run it on a loop of its own thread
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = asyncio.run(t.handler(value))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                box["error"] = exc

        th = threading.Thread(target=run, name="backstage-inline")
        th.start()
        th.join()
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _dead(self, job: InlineJob, decision: Any) -> None:
        job.status = "dead"
        job.reason = decision.reason

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None


@dataclass(frozen=True)
class CapturedJob:
    """An enqueue recorded by :meth:`Testing.capture`: not run, not sent."""

    id: str
    task: str
    payload: Any
    options: dict[str, Any]


class Capture:
    """What :meth:`Testing.capture` yields: ``jobs`` in enqueue order."""

    def __init__(self) -> None:
        self.jobs: list[CapturedJob] = []
        self._ids = itertools.count(1)

    def tasks(self) -> list[str]:
        """Task names in enqueue order."""
        return [j.task for j in self.jobs]

    def enqueue(self, task: str, payload: Any, options: dict[str, Any]) -> str:
        if not isinstance(task, str) or not task:
            raise InvalidJobError(f"task name {task!r}: expected a non-empty string")
        unknown = set(options) - _OPTIONS
        if unknown:
            raise InvalidJobError(f"task {task!r}: unknown option(s) {', '.join(sorted(unknown))}")
        value = orjson.loads(encode_payload(task, payload))
        job = CapturedJob(f"captured-{next(self._ids)}", task, value, dict(options))
        self.jobs.append(job)
        return job.id

    def enqueue_many(self, jobs: Iterable[Job | tuple[str, Any]], defaults: dict[str, Any]) -> list[str | None]:
        return [self.enqueue(*_job_args(j, defaults)) for j in list(jobs)]

    def enqueue_group(self, jobs: Iterable[Job | tuple[str, Any]], callback: Job | tuple[str, Any] | None,
                      options: dict[str, Any]) -> str:
        """Members (and a chord's callback) recorded as captured jobs, in order."""
        defaults = {k: v for k, v in options.items() if k in _OPTIONS}
        for j in list(jobs):
            self.enqueue(*_job_args(j, defaults))
        if callback is not None:
            self.enqueue(*_job_args(callback, {}))
        return f"captured-group-{next(self._ids)}"


def _job_args(job: Job | tuple[str, Any], defaults: dict[str, Any]) -> tuple[str, Any, dict[str, Any]]:
    if isinstance(job, Job):
        opts = {k: getattr(job, k) for k in _OPTIONS if getattr(job, k) is not None}
        return job.task, job.payload, opts
    if isinstance(job, tuple) and len(job) == 2:
        return job[0], job[1], {k: v for k, v in defaults.items() if v is not None}
    raise InvalidJobError(f"enqueue_many: expected Job(...) or (task, payload) items, got {job!r:.80}")


def _wait(options: dict[str, Any]) -> float:
    """Seconds a job enqueued with these options would wait before its first run."""
    at = options.get("at")
    if at is None:
        return float(options.get("delay") or 0.0)
    seconds = at.timestamp() if isinstance(at, _dt.datetime) else float(at)
    return max(0.0, seconds - time.time())


def _etype(exc: BaseException) -> str:
    name = type(exc).__qualname__
    mod = type(exc).__module__
    return name if mod in ("builtins", "__main__") else f"{mod}.{name}"


def iter_chain(run: InlineRun, job: InlineJob) -> Iterator[InlineJob]:
    """The job and the Next steps that followed it, in order."""
    yield job
    for j in run.jobs:
        if j.parent == job.id:
            yield from iter_chain(run, j)
