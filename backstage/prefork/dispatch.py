"""Dispatch: the buffer of fetched jobs, who runs them next, and taking
them back when they finish.

Owns the deliveries fetched but not yet handed to a child, the moving
average job time that sizes fetches and frames, and the choice of child
for each job. Children themselves (processes, pipes) are the supervisor's:
dispatch appends to a child's queue, asks the supervisor to flush its
pipe, and takes a finished job off the child's queue.

Runs in the master, on its one thread.
"""

from __future__ import annotations

import collections
import math
from typing import Callable, Deque, Iterable, Iterator, Sequence

from .. import tracing
from . import ipc
from .config import WorkerConfig
from .entries import Delivery
from .supervisor import Child, Supervisor

__all__ = ["Dispatcher"]


class Dispatcher:
    """Buffered deliveries, backpressure, and the hand-over to children."""

    def __init__(self, cfg: WorkerConfig, supervisor: Supervisor, clock: Callable[[], float],
                 running: Callable[[Delivery], None], queues: Sequence[str] = (),
                 skip: Callable[[Delivery], None] | None = None) -> None:
        self.cfg = cfg
        self.queues = list(queues)
        # tracing on (backstage.contrib.otel, set up before the fork): children
        # also get each job's queue and traceparent, in frames of their own kind
        self.trace = tracing.tracer is not None
        self.sup = supervisor
        self.clock = clock
        self.running = running  # told of each job that keeps a status when a child gets it
        self.skip = skip or (lambda d: None)  # told of each cancelled job taken off the buffer
        #: job ids cancelled (the housekeeper's copy of P:cancels); empty on the hot path
        self.cancelled: set[str] = set()
        self.buffer: Deque[Delivery] = collections.deque()
        self.ewma = cfg.fast_job_threshold * 10  # start in slow mode: one job per child
        self.dispatches = 0

    # -- what the exchange asks (its Demand) ----------------------------------------------
    def free_slots(self) -> int:
        """Jobs the buffer and the children may still take (backpressure)."""
        fast = self.ewma < self.cfg.fast_job_threshold
        per_child = (self.cfg.max_batch * 2) if fast else (1 + self.cfg.prefetch)
        held = len(self.buffer)
        for c in self.sup.children:
            held += len(c.inflight)
        room = self.sup.concurrency * per_child - held
        if not fast and per_child > 1:
            # a child running a long job gets nothing fetched to wait behind it: other
            # masters' idle children run those jobs sooner (fast mode has no long jobs to speak of)
            room -= (per_child - 1) * self.long_busy()
        return room

    # -- long jobs ----------------------------------------------------------------------------
    def is_long(self, d: Delivery) -> bool:
        """Measured at least --long-job-threshold, or (not measured yet) with a time limit that long."""
        t = self.cfg.long_job_threshold
        avg = d.stats.avg
        if avg != math.inf:
            return avg >= t
        return d.timeout is not None and d.timeout >= t

    def long_busy(self) -> int:
        """Children running a long job: nothing is fetched to wait behind it."""
        return sum(1 for c in self.sup.children if c.inflight and c.killed is None and self.is_long(c.inflight[0]))

    def take_long(self) -> list[Delivery]:
        """Buffered long jobs to hand back to their stream, while every child runs a long job.

        Another master may have an idle child (two masters of two children
        and four long jobs then run on four children, not two, two after
        two). Only while every usable child runs a long job: one busy with
        short jobs frees up soon (and the scan stays off the hot path of
        fast workloads). The caller checks that other masters are alive.
        """
        if not self.buffer:
            return []
        usable = [c for c in self.sup.children if c.usable]
        if any(not c.inflight for c in usable) or self.long_busy() < len(usable):
            return []
        out = [d for d in self.buffer if self.is_long(d)]
        if out:
            keep = [d for d in self.buffer if not self.is_long(d)]
            self.buffer.clear()
            self.buffer.extend(keep)
        return out

    def may_hold(self) -> bool:
        """May outcomes wait for more? Only while no usable child is idle and
        some child still has a job queued behind its running one."""
        queued = False
        for c in self.sup.children:
            if c.usable:
                n = len(c.inflight)
                if n == 0:
                    return False  # a child has nothing to run: fetch for it now
                queued = queued or n > 1
        return queued  # else every child is down to its running job: refill them all

    # -- the buffer ------------------------------------------------------------------------------
    def add(self, d: Delivery) -> None:
        self.buffer.append(d)

    def put_back(self, deliveries: Iterable[Delivery]) -> None:
        """Jobs a lost child never started: first in line again."""
        self.buffer.extendleft(reversed(list(deliveries)))

    def to_front(self, n: int) -> None:
        """Move the last ``n`` buffered deliveries (just reclaimed) to the head, in order."""
        if n > 0:
            moved = [self.buffer.pop() for _ in range(n)]
            self.buffer.extendleft(moved)

    def take_all(self) -> list[Delivery]:
        out = list(self.buffer)
        self.buffer.clear()
        return out

    def held(self) -> Iterator[Delivery]:
        """Every delivery buffered or in a child (pending for us in Redis)."""
        yield from self.buffer
        for c in self.sup.children:
            yield from c.inflight

    def finished(self, child: Child, seq: int, duration_ns: int) -> Delivery:
        """``child`` finished its running job, number ``seq``, in ``duration_ns``:
        take it off the child (whose next job starts now) and learn its time."""
        inflight = child.inflight
        if not inflight or inflight[0].seq != seq:
            raise ValueError(f"outcome for job {seq} but child {child.index} runs "
                             f"{inflight[0].seq if inflight else 'nothing'}")
        d = inflight.popleft()
        d.ran_ns = duration_ns
        child.head_started = self.clock()
        child.tasks_done += 1
        limit = self.cfg.max_tasks_per_child
        if limit is not None and child.tasks_done >= limit and child.retiring is None:
            child.retiring = "max tasks"
        seconds = duration_ns / 1e9
        self.ewma += 0.1 * (seconds - self.ewma)
        d.stats.observe(seconds)
        return d

    # -- hand-over ---------------------------------------------------------------------------------
    def dispatch(self) -> None:
        """Hand buffered jobs to children, idle children first.

        - Jobs of tasks known to be fast (under --fast-job-threshold, 1 ms)
          go several per frame, up to --max-batch queued in a child.
        - Jobs of tasks known to be short (under 1 s) may wait, one at a
          time, behind a short job running in a child: the child starts it
          the moment it is free, with no round trip through the master.
        - Any other job (a task not yet measured, or a long one) goes only to
          an idle child, so nothing waits behind a slow job while another
          child is free.
        """
        buffer = self.buffer
        if not buffer:
            return
        limit = self.cfg.max_batch
        fast_t = self.cfg.fast_job_threshold
        short_t = self.cfg.short_job_threshold
        free = [c for c in self.sup.children if c.usable and (
            not c.inflight or (c.batchable and len(c.inflight) < limit) or (c.queueable and len(c.inflight) < 2))]
        if not free:
            return
        # the least loaded first and, among equals, the one served longest ago:
        # idle children take turns instead of the first ones getting every job
        free.sort(key=lambda c: (len(c.inflight), c.given))
        share = max(1, -(-len(buffer) // len(free)))
        now = self.clock()
        max_tasks = self.cfg.max_tasks_per_child
        running = self.running
        queues = self.cfg.queues
        cancelled = self.cancelled
        for c in free:
            if not buffer:
                break
            meta: list[ipc.JobRow] = []
            payloads: list[bytes] = []
            was_idle = not c.inflight
            if was_idle:
                c.batchable = c.queueable = True  # kept up to date job by job below
            take = share
            if max_tasks is not None:  # never hand a child more than it may run
                take = min(take, max_tasks - c.tasks_done - len(c.inflight))
            while buffer and len(meta) < take:
                d = buffer[0]
                avg = d.stats.avg
                n = len(c.inflight)
                if n and not ((avg < fast_t and c.batchable and n < limit)
                              or (avg < short_t and c.queueable and n < 2)):
                    break
                buffer.popleft()
                if cancelled and d.job_id in cancelled:
                    self.skip(d)  # cancelled while queued: it never starts
                    continue
                p = d.payload
                meta.append((d.seq, d.task, d.job_id, d.attempt, len(p), d.result_ttl is not None or d.chord is not None,
                             queues[d.si], d.timeout))
                payloads.append(p)
                c.inflight.append(d)
                c.batchable = c.batchable and avg < fast_t
                c.queueable = c.queueable and avg < short_t
                if d.result_ttl is not None:
                    running(d)
            if not meta:
                continue
            if was_idle:
                c.head_started = now
            self.dispatches += 1
            c.given = self.dispatches
            if self.trace:
                traces = [[self.queues[d.si], d.traceparent] for d in list(c.inflight)[-len(meta):]]
                frame = ipc.pack_traced_jobs(meta, traces, payloads)
            else:
                frame = ipc.pack_jobs(ipc.JOBS, meta, payloads)
            self.sup.send(c, frame)
