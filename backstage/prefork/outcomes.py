"""Outcomes: what finishing a job commits, for one decoded entry.

One :class:`~backstage.prefork.entries.Delivery` in, one settle operation
out, written into the exchange's current batch: success (ack, or the next
workflow step), retry (back to ``P:scheduled`` with its backoff), dead
letter (reason, error, traceback), hand-back (fetched but never run), and
the status writes of jobs that keep one. Rejected entries (bad input) are
dead-lettered here too. No Redis I/O here: the exchange sends the batch.

Runs in the master, on its one thread.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from .. import groups
from ..client import new_job_id
from ..protocol import wire
from ..protocol.keys import Keys
from . import policy
from .entries import Delivery, Rejected
from .broker import Refused
from .ipc import FanOut, NextStep

if TYPE_CHECKING:
    from ..app import Backstage
    from .broker import SettleBatch
    from .metrics import TaskStats

__all__ = ["Outcomes", "worker_entry", "HOPS_FIELD"]

#: (ours) how many times masters without a handler put an entry back on its stream
HOPS_FIELD = b"unknownTaskHops"

log = logging.getLogger("backstage.prefork")


def worker_entry(app: "Backstage", task_name: str, payload_json: bytes | str, job_id: str,
                 now: int) -> dict[str, str | bytes]:
    """Fields of a job the worker creates itself (a workflow step, a cron
    tick), with its task's declared attempts, backoff and time limit."""
    t = app.tasks.get(task_name)
    return wire.encode_entry(
        task_name, payload_json, enqueued_at=now, job_id=job_id,
        attempts=t.attempts if t else None, backoff=t.backoff if t else None,
        timeout_ms=math.ceil(t.timeout * 1000) if t and t.timeout else None,
    )


class BatchHolder(Protocol):
    """Where operations go: the exchange's current batch (it swaps batches as it sends them)."""

    batch: "SettleBatch"


class Outcomes:
    """Turns finished (or refused) deliveries into settle operations."""

    def __init__(self, app: "Backstage", keys: Keys, queues: Sequence[str], holder: BatchHolder,
                 stats_of: Callable[[str], "TaskStats"], *, consumer: str, max_deliveries: int,
                 dead_letter_maxlen: int, history: bool = False, unknown_task: str = "dead-letter",
                 unknown_task_hops: int = 10) -> None:
        self.app = app
        self.history = history  # write a job-history record with each outcome (--history N)
        self.keys = keys
        self.queues = list(queues)
        self.streams = [keys.stream(q) for q in queues]
        self.dead_letters = [keys.dead_letter(q) for q in queues]
        self.holder = holder
        self.stats_of = stats_of
        self.consumer = consumer
        self.max_deliveries = max_deliveries
        self.dlq_maxlen = dead_letter_maxlen
        self.unknown_task = unknown_task  # "dead-letter" or "requeue" (--unknown-task)
        self.unknown_task_hops = unknown_task_hops
        self.processed = 0
        self.failed = 0

    # -- a job ran ------------------------------------------------------------------------
    def succeeded(self, d: Delivery, step: NextStep | FanOut | None, value: str | None) -> None:
        """The handler returned (``value``: its result as JSON, when the job keeps a status)."""
        self.processed += 1
        d.stats.processed[d.si] += 1
        if d.result_ttl is not None:
            self._status(d.si, d.id, d.job_id, d.result_ttl, b"done", b"value", value if value is not None else b"null")
        if d.unique:
            self._release(d.si, d.id, d.job_id)
        if d.chord is not None:
            self.chord_member(d, value if value is not None else "null")
        if step is None:
            if self.history:
                self.holder.batch.ack_recorded(d.si, d.id, d.job_id or "", d.task, d.attempt,
                                               d.ran_ns // 1_000_000, wire.now_ms())
            else:
                self.holder.batch.ack(d.si, d.id)
        elif type(step) is FanOut:
            self.fan_out(d, step)
        else:
            self.next_step(d, step)  # type: ignore[arg-type]

    def running(self, d: Delivery) -> None:
        """The job was handed to a child (only jobs that keep a status are told)."""
        if d.result_ttl is not None:
            self._status(d.si, d.id, d.job_id, d.result_ttl, b"running", b"attempt", b"%d" % d.attempt)

    def next_step(self, d: Delivery, step: NextStep) -> None:
        """Ack ``d`` and enqueue its workflow's next step, in one operation."""
        t = self.app.tasks.get(step.task)
        q = step.queue or (t.queue if t is not None and t.queue else "default")
        now = wire.now_ms()
        wf = d.workflow_id or d.job_id
        fields = worker_entry(self.app, step.task, step.payload_json, new_job_id(), now)
        if wf:
            fields["workflowId"] = wf
        # the trace goes on: the handler's span when it sent one, else the job's own
        tp = step.traceparent or d.traceparent
        if tp:
            fields["traceparent"] = tp
        stream = self.keys.stream(q)
        if self.history:
            self._record(d.si, d.id, d.job_id, d.task, b"ok", d.attempt, d.ran_ns)
        if step.delay_ms and step.delay_ms > 0:
            self.holder.batch.schedule(d.si, d.id, now + int(step.delay_ms), wire.encode_scheduled(stream, q, fields),
                                       origin=d)
        else:
            self.holder.batch.add_next(d.si, d.id, stream, fields, origin=d)

    def chord_member(self, d: Delivery, value: str | None, reason: str = "", etype: str = "",
                     emsg: str = "") -> None:
        """Record a group/chord member's final outcome with its ack (``value``: its result
        JSON, or None with the reason it failed)."""
        assert d.chord is not None
        chord_id, index = d.chord
        ok = value is not None
        self.holder.batch.chord_member(d.si, d.id, self.keys.chord(chord_id), index, ok,
                                       value if ok else groups.failure_json(index, reason, etype, emsg))

    def fan_out(self, d: Delivery, g: FanOut) -> None:
        """Ack ``d`` and write the group or chord it returned, in one operation."""
        now = wire.now_ms()
        gid = g.group_id or new_job_id()
        wf = d.workflow_id or d.job_id
        members: list[tuple[str, dict[str, str | bytes]]] = []
        ids: list[str] = []
        for i, (task, payload_json, queue) in enumerate(g.members):
            jid = new_job_id()
            ids.append(jid)
            fields = worker_entry(self.app, task, payload_json, jid, now)
            fields["chordId"] = gid
            fields["chordIndex"] = str(i)
            if wf:
                fields["workflowId"] = wf
            members.append((self.keys.stream(self._queue_of(task, queue)), fields))
        cb_fields: list[Any] | None = None
        cb_stream = cb_dlq = ""
        cb_payload = b"null"
        rk, rttl = "", 0
        if g.callback is not None:
            task, cb_payload_json, queue = g.callback
            q = self._queue_of(task, queue)
            f = worker_entry(self.app, task, b"null", gid, now)
            del f["payload"]
            if wf:
                f["workflowId"] = wf
            cb_fields = [x for kv in f.items() for x in kv]
            cb_payload = cb_payload_json.encode() if isinstance(cb_payload_json, str) else cb_payload_json
            cb_stream, cb_dlq = self.keys.stream(q), self.keys.dead_letter(q)
            t = self.app.tasks.get(task)
            if t is not None and t.result_ttl:
                rk, rttl = self.keys.result(gid), math.ceil(t.result_ttl * 1000)
        head = groups.header(g.ttl_ms, len(members), g.on_failure, cb_fields, cb_payload, cb_stream, cb_dlq, gid, ids,
                             rk, rttl)
        if self.history:
            self._record(d.si, d.id, d.job_id, d.task, b"ok", d.attempt, d.ran_ns)
        self.holder.batch.fan_out(d.si, d.id, self.keys.chord(gid), head, members)

    def _queue_of(self, task: str, queue: str | None) -> str:
        t = self.app.tasks.get(task)
        return queue or (t.queue if t is not None and t.queue else "default")

    def failed_run(self, d: Delivery, kind: str, etype: str, emsg: str, tb: str, retry_ms: int | None) -> None:
        """The execution failed (``kind``: see :func:`policy.decide`): retry it or dead-letter it.

        ``raise Retry(...)`` (kind ``retry``) is the handler's choice, not a failure: it
        counts as a retry only (not in ``failed``), and is logged at info level."""
        if kind != "retry":
            self.failed += 1
            d.stats.failed[d.si] += 1
        decision = policy.decide(kind, attempt=d.attempt, attempts=d.attempts, max_deliveries=self.max_deliveries,
                                 backoff=d.backoff, retry_delay_ms=retry_ms)
        extra = {"event": "job-failed", "job_id": d.log_id, "task": d.task, "queue": self.queues[d.si]}
        if isinstance(decision, policy.RetryLater):
            if kind == "retry":
                log.info("job %s (%s) attempt %d asked for a retry (%s); retry in %.3gs", d.id.decode(), d.task,
                         d.attempt, emsg, decision.delay, extra={**extra, "event": "job-retry"})
            else:
                log.warning("job %s (%s) attempt %d failed: %s: %s; retry in %.3gs", d.id.decode(), d.task,
                            d.attempt, etype, emsg, decision.delay, extra=extra)
            d.stats.retried[d.si] += 1
            fields = dict(d.fields)
            fields[b"attempt"] = b"%d" % (d.attempt + 1)
            member = wire.encode_scheduled(self.streams[d.si], self.queues[d.si], fields)
            if d.result_ttl is not None:
                self._status(d.si, d.id, d.job_id, d.result_ttl, b"failed", b"errorType", etype,
                             b"errorMessage", emsg, b"traceback", tb, b"attempt", b"%d" % d.attempt)
            if self.history:
                self._record(d.si, d.id, d.job_id, d.task, b"failed", d.attempt, d.ran_ns,
                             b"reason", kind, b"errorType", etype, b"errorMessage", emsg)
            self.holder.batch.schedule(d.si, d.id, wire.now_ms() + round(decision.delay * 1000), member, origin=d)
        else:
            log.error("job %s (%s) dead-lettered (%s) after attempt %d: %s: %s", d.id.decode(), d.task,
                      decision.reason, d.attempt, etype, emsg, extra=extra)
            d.stats.dead[d.si] += 1
            if d.unique:
                self._release(d.si, d.id, d.job_id)
            if d.chord is not None:
                self.chord_member(d, None, decision.reason, etype, emsg)
            self._dead(d.si, d.id, d.fields, decision.reason, etype, emsg, d.attempt, tb, d.job_id, d.result_ttl,
                       d.task, d.ran_ns, origin=d)

    def progress(self, d: Delivery, fraction: float, message: str | None) -> None:
        """A running job reported progress (coalesced by its child): into its status hash."""
        if d.result_ttl is not None and d.job_id:
            self.holder.batch.status(d.si, d.id, self.keys.result(d.job_id), d.result_ttl, (
                b"progress", repr(float(fraction)), b"progressMessage", message or "",
                b"progressAt", b"%d" % wire.now_ms()))

    def cancelled(self, d: Delivery) -> None:
        """The job was cancelled (never started, or its child was killed): ack it, never retried."""
        log.info("job %s (%s) cancelled", d.log_id, d.task,
                 extra={"event": "cancel", "job_id": d.log_id, "task": d.task, "queue": self.queues[d.si]})
        if d.result_ttl is not None:
            self._status(d.si, d.id, d.job_id, d.result_ttl, b"cancelled")
        if d.chord is not None:
            self.chord_member(d, None, "cancelled", "Cancelled", "job cancelled")
        if d.job_id:
            if d.unique:
                self._release(d.si, d.id, d.job_id)
            self.holder.batch.honoured(d.si, d.id, self.keys.cancel(d.job_id), self.keys.cancels, d.job_id)
        if self.history:
            self._record(d.si, d.id, d.job_id, d.task, b"cancelled", d.attempt, d.ran_ns)
        self.holder.batch.ack(d.si, d.id)

    # -- a job did not run ------------------------------------------------------------------
    def rejected(self, si: int, entry_id: bytes, r: Rejected) -> None:
        """Bad input (:class:`Rejected` at decode): dead-letter it, with a log line.

        An entry for a task this app has no handler for may be a Go or
        TypeScript worker's, in a mixed fleet: with ``--unknown-task requeue``
        it goes back to its stream with its hop count (``unknownTaskHops``)
        one higher, until it has hopped ``--unknown-task-hops`` times.
        """
        if r.reason == "unknown-task" and self.unknown_task == "requeue":
            try:
                hops = int(r.fields.get(HOPS_FIELD, b"0"))
            except ValueError:
                hops = self.unknown_task_hops  # not a count we wrote: do not bounce it around
            if 0 <= hops < self.unknown_task_hops:
                again = dict(r.fields)
                again[HOPS_FIELD] = b"%d" % (hops + 1)
                self.holder.batch.hand_back(si, entry_id, again)
                log.debug("entry %s of %s: no handler for task %r here; requeued (hop %d of %d)",
                          entry_id.decode(), self.queues[si], r.task, hops + 1, self.unknown_task_hops,
                          extra={"event": "requeue", "task": r.task})
                return
            r = r._replace(message=f"{r.message} (requeued {hops} times: no worker with a handler took it)")
        queue = self.queues[si]
        self.stats_of(r.task).dead[si] += 1
        log.error("entry %s of %s dead-lettered (%s): %s", entry_id.decode(), queue, r.reason, r.message,
                  extra={"event": "dead-letter", "task": r.task, "queue": queue})
        if r.fields.get(b"unique") == b"1":
            self._release(si, entry_id, r.job_id)
        self._rejected_member(si, entry_id, r)
        self._dead(si, entry_id, r.fields, r.reason, r.error_type, r.message, 1, "", r.job_id, r.result_ttl, r.task, 0,
                   origin=r)

    def _rejected_member(self, si: int, entry_id: bytes, r: Rejected) -> None:
        """A group/chord member refused at decode still counts (as failed): its chord must end."""
        raw, idx = r.fields.get(b"chordId"), r.fields.get(b"chordIndex")
        if raw is None or idx is None or not idx.isdigit():
            return
        try:
            chord_id = raw.decode()
        except UnicodeDecodeError:
            return
        index = int(idx)
        self.holder.batch.chord_member(si, entry_id, self.keys.chord(chord_id), index, False,
                                       groups.failure_json(index, r.reason, r.error_type, r.message))

    def hand_back(self, d: Delivery) -> None:
        """Not run to the end (stopping: never started, or killed by a forced stop or the end
        of the grace period): return it to its stream for any worker, as it was (same attempt)."""
        if d.result_ttl is not None:
            self._status(d.si, d.id, d.job_id, d.result_ttl, b"queued")
        self.holder.batch.hand_back(d.si, d.id, d.fields, origin=d)

    # -- Redis refused an operation ---------------------------------------------------------
    def refused(self, batch: "SettleBatch", refused: list[Refused]) -> None:
        """Operations of ``batch`` whose side effect Redis refused (their entries are not
        acked): commit something else for each, so none waits forever.

        - a status write or a history record: the job's outcome was committed without it; logged;
        - a next step, a retry, a hand-back: the job is dead-lettered (``refused``) with Redis's error;
        - a dead letter: the entry is acked without its record, logged with its fields (the
          last resort: the dead-letter stream itself refuses it)."""
        for r in refused:
            queue = self.queues[r.si]
            where = f"entry {r.entry_id.decode()} of {queue}"
            extra = {"event": "refused", "queue": queue}
            if r.op == b"s":
                log.warning("%s: status not written: Redis refused it: %s", where, r.error, extra=extra)
                continue
            if r.op in (b"h", b"k"):
                log.warning("%s: history record not written: Redis refused it: %s", where, r.error, extra=extra)
                continue
            if r.op in (b"u", b"n", b"c", b"g"):  # workflow bookkeeping: the job's own outcome was committed
                log.error("%s: Redis refused its %s: %s", where, _WHAT.get(r.op, "workflow write"), r.error,
                          extra=extra)
                continue
            d = batch.origin(r.si, r.entry_id)
            if r.op != b"d" and isinstance(d, Delivery):
                log.error("%s (%s): Redis refused its %s: %s; dead-lettered", where, d.task, _WHAT[r.op], r.error,
                          extra={**extra, "task": d.task, "job_id": d.log_id})
                d.stats.dead[d.si] += 1
                self._dead(d.si, d.id, d.fields, "refused", "RedisRefused",
                           f"Redis refused the job's {_WHAT[r.op]}: {r.error}", d.attempt, "", d.job_id, None,
                           d.task, d.ran_ns)
                continue
            fields = d.fields if isinstance(d, (Delivery, Rejected)) else None
            log.error("%s: Redis refused its %s: %s; acked without it%s", where, _WHAT.get(r.op, "outcome"),
                      r.error, f"; its fields: {_shown(fields)}" if fields is not None else "", extra=extra)
            self.holder.batch.ack(r.si, r.entry_id)

    # -- helpers ------------------------------------------------------------------------------
    def _dead(self, si: int, entry_id: bytes, fields: dict[bytes, bytes], reason: str, etype: str, emsg: str,
              deliveries: int, tb: str, job_id: str | None, result_ttl: int | None, task: str, ran_ns: int,
              origin: object = None) -> None:
        if result_ttl is not None:
            self._status(si, entry_id, job_id, result_ttl, b"dead", b"reason", reason, b"errorType", etype,
                         b"errorMessage", emsg, b"traceback", tb, b"attempt", b"%d" % deliveries)
        if self.history:
            self._record(si, entry_id, job_id, task, b"dead", deliveries, ran_ns, b"reason", reason,
                         b"errorType", etype, b"errorMessage", emsg)
        dl = wire.dead_letter_fields(
            fields, original_id=entry_id.decode(), queue_key=self.streams[si], reason=reason,
            delivery_count=deliveries, consumer=self.consumer, error_type=etype,
            error_message=emsg, traceback=tb,
        )
        self.holder.batch.dead(si, entry_id, self.dead_letters[si], self.dlq_maxlen, dl, origin=origin)

    def _release(self, si: int, entry_id: bytes, job_id: str | None) -> None:
        """Free a unique job's id, in the same settle call as its final ack."""
        if job_id:
            self.holder.batch.release(si, entry_id, self.keys.unique(job_id))

    def _status(self, si: int, entry_id: bytes, job_id: str | None, ttl_ms: int, status: bytes, *extra: Any) -> None:
        if job_id:
            self.holder.batch.status(si, entry_id, self.keys.result(job_id), ttl_ms,
                                (b"status", status, b"updatedAt", b"%d" % wire.now_ms(), *extra))

    def _record(self, si: int, entry_id: bytes, job_id: str | None, task: str, outcome: bytes, attempt: int,
                ran_ns: int, *extra: Any) -> None:
        """Job-history record of an outcome settled by another operation
        (the same fields as settle.lua's 'k' writes for plain successes)."""
        self.holder.batch.record(si, entry_id, (
            b"entryId", entry_id, b"jobId", job_id or "", b"taskName", task, b"queue", self.queues[si],
            b"outcome", outcome, b"attempt", attempt, b"durationMs", ran_ns // 1_000_000,
            b"finishedAt", wire.now_ms(), *extra))


_WHAT = {b"x": "next step", b"z": "scheduled retry or next step", b"r": "hand-back", b"d": "dead letter",
         b"s": "status write", b"h": "history record", b"k": "history record",
         b"u": "unique id release", b"n": "cancel removal", b"c": "group/chord member record",
         b"g": "group/chord write"}


def _shown(fields: dict[bytes, bytes], limit: int = 2000) -> str:
    text = repr({k: v for k, v in fields.items()})
    return text if len(text) <= limit else text[:limit] + "…"
