"""The master: one process, one thread, one selector loop.

Owns all queue traffic with Redis (through :class:`MasterBroker`) and the
children: it forks them after the app is imported, hands each job over a
pipe, reads outcomes back, and commits them. Every duty other than reading
fds is a step the loop runs each pass (reap, kill overdue, timers, settle,
fetch, dispatch, top up), each idempotent and bounded.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import selectors
import signal
import socket
import time
from typing import Any, Callable, Deque

import redis

from ..protocol import wire
from ..app import Backstage
from ..client import new_job_id
from ..protocol.keys import Keys
from . import ipc, policy
from .broker import MasterBroker
from .config import WorkerConfig
from .housekeeping import Housekeeper
from .metrics import Metrics, MetricsServer, TaskStats
from .recovery import RecoveryMixin
from .supervisor import EXIT_APP, Child, ChildrenMixin, Job, _job_id

__all__ = ["Master", "EXIT_OK", "EXIT_FORCED", "EXIT_USAGE", "EXIT_APP", "EXIT_REDIS"]

log = logging.getLogger("backstage.prefork")

EXIT_OK = 0
EXIT_FORCED = 1
EXIT_USAGE = 2
EXIT_REDIS = 4  # Redis unreachable or too old at start-up



class Master(ChildrenMixin, RecoveryMixin):
    """Runs until stopped by a signal; :meth:`run` returns the exit code."""

    def __init__(self, app: Backstage, config: WorkerConfig,
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.cfg = config
        self.clock = clock
        self.keys = Keys(config.prefix)
        self.queues = list(config.queues)
        self.broker = MasterBroker(config.redis_url, self.keys, config.group, config.consumer,
                                   config.queues, delete_on_ack=config.delete_on_ack,
                                   socket_timeout=config.redis_timeout, history=config.history)
        self.stream_keys = self.broker.streams
        self.concurrency = config.concurrency
        self.children: list[Child] = []
        self.buffer: Deque[Job] = collections.deque()
        self.batch = self.broker.new_batch()  # outcomes not yet sent
        self.batch_since: float | None = None  # when the first of them was seen
        # exchanges in flight: (batch or None, fetch count, streams, reply deadline)
        self.sending: Deque[tuple[Any, int, list[int], float]] = collections.deque()
        self.unsent: list[Any] = []  # batches whose exchange failed: sent again first
        self.exchange_sock: Any = None  # the exchange connection's socket, registered while it lives
        self.seq = 0
        self.dispatches = 0
        self.drained = False
        self.wait_fd: Any = None  # the XREAD connection's socket while a wait is out
        self.stopping = False
        self.forced = False
        self.stop_deadline = math.inf
        self.exit_code = EXIT_OK
        self.fatal: str | None = None
        self.ewma = config.fast_job_threshold * 10  # start in slow mode: one job per child
        self.redis_down_until = 0.0
        self.redis_backoff = 0.0
        self.next_promote = 0.0
        self.next_reclaim = 0.0
        self.next_renew = self.clock() + config.idle_timeout / 3
        self.next_forget = self.clock() + config.idle_timeout
        self.reclaim_cursors = [b"0-0"] * len(self.queues)
        self.paused: set[str] = set()
        self.house = Housekeeper(self)
        self.metrics = Metrics(self)
        # taskName bytes -> (name, default timeout, default result ttl ms, stats): one lookup per job
        self._known: dict[bytes, tuple[str, float | None, int | None, TaskStats]] = {}
        self.metrics_server: MetricsServer | None = None
        self.next_memory = 0.0
        self.next_title = 0.0
        self.reap_due = True  # a child may have exited: waitpid on the next pass
        self.next_reap = 0.0
        self.hooks: list[Callable[[], Any]] = list(app.child_start_hooks)
        self.processed = 0
        self.failed = 0
        self.started = time.time()
        self.sel = selectors.DefaultSelector()
        self._sig_r, self._sig_w = socket.socketpair()

    # -- set-up ----------------------------------------------------------------
    def _install_signals(self) -> None:
        for s in (self._sig_r, self._sig_w):
            s.setblocking(False)
        signal.set_wakeup_fd(self._sig_w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                    signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD):
            # the handler only exists so the signal does not kill us; the
            # wake-up fd carries its number to the loop, which does the work
            signal.signal(sig, _noop)
        self.sel.register(self._sig_r, selectors.EVENT_READ, ("signal", None))

    def _restore_signals(self) -> None:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                    signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)

    # -- main loop -------------------------------------------------------------
    def run(self) -> int:
        try:
            self.broker.check()
        except Exception as exc:  # noqa: BLE001 - translated BrokerError, named endpoint
            log.error("cannot start: %s", exc)
            return EXIT_REDIS
        if self.cfg.metrics_port is not None:
            try:
                self.metrics_server = MetricsServer(self.metrics, self.sel, self.cfg.metrics_host, self.cfg.metrics_port)
            except OSError as exc:
                log.error("cannot serve metrics on %s:%d: %s", self.cfg.metrics_host, self.cfg.metrics_port, exc)
                return EXIT_USAGE
            log.info("metrics on http://%s:%d/metrics", self.cfg.metrics_host, self.metrics_server.port,
                     extra={"event": "start"})
        self._install_signals()
        log.info("master started: consumer=%s queues=%s concurrency=%d redis=%s",
                 self.cfg.consumer, ",".join(self.queues), self.concurrency, self.broker.where,
                 extra={"event": "start"})
        self.house.start()
        try:
            self.top_up()
            while True:
                self.tick()
                if self.fatal is not None or (self.stopping and self._stopped()):
                    break
            return self._shutdown()
        finally:
            self._restore_signals()
            if self.metrics_server is not None:
                self.metrics_server.close()
            self.sel.close()
            self.broker.close()

    def tick(self) -> None:
        """One pass: wait for fds (up to the nearest deadline), then every step."""
        timeout = max(0.0, self._next_deadline() - self.clock())
        for key, mask in self.sel.select(timeout):
            kind, child = key.data
            if kind == "child":
                self.on_child_readable(child)
            elif kind == "write":
                self.flush_child(child)
            elif kind == "exchange":
                if not self.sending:  # nothing asked for: closed by Redis, junk, or TLS bookkeeping
                    if not self.broker.exchange_conn_ok():
                        self._unwatch_exchange()
                    continue
                self.on_exchange_readable()
                while self.sending and self.broker.reply_ready():
                    self.on_exchange_readable()
            elif kind == "wait":
                self.on_wait_readable()
            elif kind == "signal":
                self.on_signals()
            elif kind == "metrics-conn" and self.metrics_server is not None:
                self.metrics_server.on_readable(child)
            elif kind == "metrics-accept" and self.metrics_server is not None:
                self.metrics_server.on_accept()
        now = self.clock()
        if self.reap_due or now >= self.next_reap:
            self.reap_due = False
            self.next_reap = now + 1.0  # a backstop: SIGCHLD and pipe EOF say when to look
            self.reap()
        self.kill_overdue(now)
        self.check_exchange(now)
        self.dispatch()  # children freed just now get buffered work first
        self.start_exchange()
        self.timers(now)
        self.dispatch()
        self.top_up()
        self.title(now)

    def _next_deadline(self) -> float:
        now = self.clock()
        d = min(self.next_promote, self.next_reclaim, self.next_renew, self.next_forget, self.next_memory,
                self.next_title, self.stop_deadline, self.house.deadline(), now + 1.0)
        if self.sending:
            d = min(d, self.sending[0][3])
        if self.redis_down_until > now:
            d = min(d, self.redis_down_until)
        elif self.broker.exchanging < self.MAX_EXCHANGES and (
                self.batch.dirty or self.unsent or (not self.drained and not self.stopping and self._room() > 0)):
            hold = self._hold_until(now)
            if hold <= now:
                return now  # a round trip to start right away
            d = min(d, hold)
        for c in self.children:
            if c.inflight and c.killed is None:
                t = c.inflight[0].timeout
                if t is not None:
                    d = min(d, c.head_started + t)
        return d

    # -- signals ---------------------------------------------------------------
    def on_signals(self) -> None:
        try:
            data = self._sig_r.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        for signum in data:
            if signum == signal.SIGCHLD:
                self.reap_due = True
                continue
            if signum in (signal.SIGTERM, signal.SIGINT) and not self.stopping:
                log.info("%s: stopping gracefully (grace period %.1fs)", signal.Signals(signum).name,
                         self.cfg.grace_period, extra={"event": "stop"})
                self.begin_stop()
            elif signum == signal.SIGQUIT or (signum == signal.SIGINT and self.stopping):
                log.warning("%s: stopping now; running jobs stay pending for recovery",
                            signal.Signals(signum).name, extra={"event": "stop-forced"})
                self.force_stop()
            elif signum == signal.SIGHUP:
                log.info("SIGHUP: replacing children", extra={"event": "reload"})
                for c in self.children:
                    if c.retiring is None and c.killed is None:
                        c.retiring = "reload"
            elif signum == signal.SIGTTIN:
                self.concurrency += 1
                log.info("SIGTTIN: concurrency %d", self.concurrency, extra={"event": "scale"})
            elif signum == signal.SIGTTOU and self.concurrency > 1:
                self.concurrency -= 1
                log.info("SIGTTOU: concurrency %d", self.concurrency, extra={"event": "scale"})
                self._shrink()

    def begin_stop(self) -> None:
        self.stopping = True
        self.stop_deadline = self.clock() + self.cfg.grace_period
        self._stop_waiting()
        # fetched but never started: hand them back so other workers take them now
        while self.buffer:
            job = self.buffer.popleft()
            self.batch.hand_back(job.si, job.id, job.fields)

    def force_stop(self) -> None:
        self.stopping = True
        self.forced = True
        self.exit_code = EXIT_FORCED
        for c in self.children:
            self._kill(c, "forced stop")
            c.inflight.clear()  # their entries stay in the PEL for the reclaimer
        self.buffer.clear()

    def _stopped(self) -> bool:
        if self.forced:
            return True
        busy = any(c.inflight for c in self.children)
        if busy and self.clock() < self.stop_deadline:
            return False
        if busy:
            log.warning("grace period over: killing %d busy children; their jobs go back to the queue",
                        sum(1 for c in self.children if c.inflight), extra={"event": "grace-expired"})
            for c in self.children:
                for job in c.inflight:
                    self.batch.hand_back(job.si, job.id, job.fields)
                c.inflight.clear()
                self._kill(c, "grace period over")
        return True

    # -- children ----------------------------------------------------------------
    def on_message(self, child: Child, msg: list[Any]) -> None:
        tag = msg[0]
        if tag == "ok" or tag == "err":
            if not child.inflight or child.inflight[0].seq != msg[1]:
                raise ValueError(f"outcome for job {msg[1]} but child {child.index} runs "
                                 f"{child.inflight[0].seq if child.inflight else 'nothing'}")
            job = child.inflight.popleft()
            child.head_started = self.clock()
            child.tasks_done += 1
            seconds = msg[2] / 1e9
            job.ran_ns = msg[2]
            self.ewma += 0.1 * (seconds - self.ewma)
            job.stats.observe(seconds)
            if tag == "ok":
                self.processed += 1
                job.stats.processed[job.si] += 1
                if job.result_ttl is not None:
                    self._status(job.si, job.id, job.fields, job.result_ttl, b"done",
                                 b"value", msg[4] if msg[4] is not None else b"null")
                if msg[3] is None:
                    if self.cfg.history:
                        self.batch.ack_recorded(job.si, job.id, job.fields.get(b"jobId", b""), job.task,
                                                job.attempt, job.ran_ns // 1_000_000, wire.now_ms())
                    else:
                        self.batch.ack(job.si, job.id)
                else:
                    self.on_next(job, msg[3])
            else:
                _, _, _, kind, etype, emsg, tb, retry_ms = msg
                self.fail(job, kind, etype, emsg, tb, retry_ms)
            limit = self.cfg.max_tasks_per_child
            if limit is not None and child.tasks_done >= limit and child.retiring is None:
                child.retiring = "max tasks"
        elif tag == "ready":
            child.ready = True
            child.head_started = self.clock()
        elif tag == "boot-failed":
            _, etype, emsg, tb = msg
            self.fatal = f"child {child.index} could not boot: {etype}: {emsg}"
            log.error("%s\n%s", self.fatal, tb, extra={"event": "boot-failed"})
            self.exit_code = EXIT_APP
        else:
            raise ValueError(f"unknown frame {tag!r}")

    # -- jobs --------------------------------------------------------------------
    def _room(self) -> int:
        fast = self.ewma < self.cfg.fast_job_threshold
        per_child = (self.cfg.max_batch * 2) if fast else (1 + self.cfg.prefetch)
        held = len(self.buffer) + sum(len(c.inflight) for c in self.children) + self.batch.count
        for b, fetching, _, _ in self.sending:
            held += fetching + (b.count if b is not None else 0)
        for b in self.unsent:
            held += b.count
        return self.concurrency * per_child - held

    MAX_EXCHANGES = 2  # round trips in flight: Redis works on one while the master handles the other

    #: Outcomes of jobs that take a millisecond or more are held back while
    #: some child still has a job queued behind its running one, up to
    #: HOLD_SHARE of the average job time (at most HOLD_MAX): one round trip
    #: then settles several and refills every child's queue at once. Fewer
    #: round trips and wake-ups leave more of the CPU to the handlers.
    HOLD_SHARE = 0.5
    HOLD_MAX = 0.005

    def _hold_until(self, now: float) -> float:
        """Until when the next exchange may wait for more outcomes (``now``: not at all)."""
        if (not self.batch.dirty or self.ewma < self.cfg.fast_job_threshold or self.unsent
                or self.stopping or self.fatal is not None):
            return now
        if self.batch_since is None:
            self.batch_since = now
        queued = False
        for c in self.children:
            if c.usable:
                n = len(c.inflight)
                if n == 0:
                    return now  # a child has nothing to run: fetch for it now
                queued = queued or n > 1
        if not queued:
            return now  # every child is down to its running job: refill them all
        return self.batch_since + min(self.HOLD_MAX, self.HOLD_SHARE * self.ewma)

    def start_exchange(self) -> None:
        """Send the settle of what finished and a fetch for what there is room
        for, in one round trip; the replies are read when they arrive
        (:meth:`on_exchange_readable`) while the loop goes on serving children."""
        now = self.clock()
        if self.broker.exchanging >= self.MAX_EXCHANGES or now < self.redis_down_until or self._hold_until(now) > now:
            return
        active: list[int]
        if self.unsent:  # batches whose fate is unknown: send them again, alone, first
            batch, room, active = self.unsent.pop(0), 0, []
        else:
            batch = self.batch if self.batch.dirty else None
            room = 0
            active = []
            if not (self.stopping or self.drained or self.fatal):
                active = self.active_streams()
                # entries settled in this same call leave the PEL before the fetch runs
                room = self._room() + self.batch.count if active else 0
            if batch is None and room <= 0:
                return
            if batch is not None:
                self.batch = self.broker.new_batch()
                self.batch_since = None
        try:
            sock = self.broker.send_exchange(batch, room, active)
        except redis.RedisError as exc:
            self._exchange_failed(batch)
            self._redis_error("settle" if batch is not None else "fetch", exc)
            return
        self.sending.append((batch, room, active, self.clock() + self.cfg.redis_timeout))
        if sock is not self.exchange_sock:  # a new connection: watch it (stays watched while it lives)
            self._unwatch_exchange()
            self.sel.register(sock, selectors.EVENT_READ, ("exchange", None))
            self.exchange_sock = sock

    def _unwatch_exchange(self) -> None:
        if self.exchange_sock is not None:
            self.sel.unregister(self.exchange_sock)  # found by identity even once closed
            self.exchange_sock = None

    def _exchange_failed(self, batch: Any = None) -> None:
        """Every exchange in flight is lost: their batches are sent again later."""
        lost = [b for b, _, _, _ in self.sending if b is not None]
        if batch is not None:
            lost.append(batch)
        self.unsent = lost + self.unsent
        self.sending.clear()
        self.broker.abandon_exchange()
        self._unwatch_exchange()

    def check_exchange(self, now: float) -> None:
        """Give up on round trips Redis has not answered within --redis-timeout."""
        if self.sending and now > self.sending[0][3]:
            self._exchange_failed()
            self._redis_error("settle", redis.TimeoutError(f"no reply within {self.cfg.redis_timeout:g}s"))

    def on_exchange_readable(self) -> None:
        batch, _room, active, _deadline = self.sending.popleft()
        try:
            skipped, fetched = self.broker.recv_exchange()
        except redis.RedisError as exc:
            settled = self.broker.last_settled
            self._exchange_failed(None if settled else batch)
            self._redis_error("settle" if batch is not None and not settled else "fetch", exc)
            return
        self._redis_ok()
        if skipped:
            log.warning("%d outcome(s) not applied: their entries were reclaimed by another worker", skipped)
        if fetched is None:
            return
        entries, tails = fetched
        accept = self.accept
        for i in range(0, len(entries), 3):
            accept(entries[i], entries[i + 1], entries[i + 2])
        if tails:
            self.drained = True
            if self.wait_fd is not None:
                return  # an XREAD is already out; at worst it wakes us once for nothing
            try:
                fd = self.broker.start_wait(tails, active, int(self.cfg.block_timeout * 1000))
            except redis.RedisError as exc:
                self._redis_error("wait", exc)
                return
            self.wait_fd = fd
            self.sel.register(fd, selectors.EVENT_READ, ("wait", None))

    def active_streams(self) -> list[int]:
        """Positions of the subscribed streams that are not paused."""
        return [i for i, q in enumerate(self.queues) if q not in self.paused]

    def set_paused(self, paused: set[str]) -> None:
        if paused != self.paused:
            log.info("paused queues: %s", ", ".join(sorted(paused & set(self.queues))) or "none",
                     extra={"event": "pause"})
            self.paused = paused
            self._stop_waiting()  # the outstanding XREAD may name a paused stream
            self.drained = False

    def on_wait_readable(self) -> None:
        self._unregister_wait()
        try:
            self.broker.finish_wait()
        except redis.RedisError as exc:
            self.broker.drop_wait()
            self._redis_error("wait", exc)
        self.drained = False

    def _unregister_wait(self) -> None:
        if self.wait_fd is not None:
            self.sel.unregister(self.wait_fd)
            self.wait_fd = None

    def _stop_waiting(self) -> None:
        self._unregister_wait()
        self.broker.drop_wait()

    def accept(self, si: int, entry_id: bytes, flat: list[bytes], deliveries: int = 1) -> None:
        """Take a fetched (or reclaimed, ``deliveries`` > 1) entry: buffer it, or dead-letter bad input."""
        fields = dict(zip(flat[::2], flat[1::2]))
        raw_task = fields.get(b"taskName")
        known = self._known.get(raw_task)  # type: ignore[arg-type]
        if known is None:
            if not raw_task:
                self.dead_letter(si, entry_id, fields, "malformed", "MalformedEntry", "missing field 'taskName'", 1)
                return
            task_name = raw_task.decode("utf-8", "replace")
            task = self.app.tasks.get(task_name)
            if task is None:
                self.dead_letter(si, entry_id, fields, "unknown-task", "TaskNotFound",
                                 f"no handler for task {task_name!r} in this app", 1)
                return
            known = self._known[raw_task] = (
                task_name, task.timeout or self.cfg.default_timeout, self._result_ttl({}, task_name),
                self.metrics.task(task_name))
        task_name, timeout, result_ttl, stats = known
        payload = fields.get(b"payload", b"null")
        if len(payload) > self.cfg.max_payload_bytes:
            self.dead_letter(si, entry_id, fields, "malformed", "PayloadTooLarge",
                             f"payload of {len(payload)} bytes exceeds the {self.cfg.max_payload_bytes}-byte limit", 1)
            return
        attempt = deliveries
        if b"attempt" in fields or b"timeout" in fields or b"resultTtl" in fields:
            try:
                # a reclaimed entry was already tried by a worker that died with it
                attempt = int(fields.get(b"attempt", b"1")) + deliveries - 1
                raw = fields.get(b"timeout")
                if raw is not None:
                    timeout = int(raw) / 1000.0
                raw = fields.get(b"resultTtl")
                if raw is not None:
                    result_ttl = int(raw) or None
                if attempt < 1 or (timeout is not None and timeout <= 0):
                    raise ValueError("out of range")
            except ValueError:
                self.dead_letter(si, entry_id, fields, "malformed", "MalformedEntry",
                                 "field 'attempt', 'timeout' or 'resultTtl' is not a positive integer", 1)
                return
        self.seq += 1
        jid = fields.get(b"jobId")
        self.buffer.append(Job(self.seq, si, entry_id, fields, task_name, timeout, attempt, result_ttl,
                               stats, payload, jid.decode() if jid else None))

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
        if not self.buffer:
            return
        limit = self.cfg.max_batch
        fast_t = self.cfg.fast_job_threshold
        short_t = self.cfg.short_job_threshold
        free = [c for c in self.children if c.usable and (
            not c.inflight or (c.batchable and len(c.inflight) < limit) or (c.queueable and len(c.inflight) < 2))]
        if not free:
            return
        # the least loaded first and, among equals, the one served longest ago:
        # idle children take turns instead of the first ones getting every job
        free.sort(key=lambda c: (len(c.inflight), c.given))
        share = max(1, -(-len(self.buffer) // len(free)))
        now = self.clock()
        for c in free:
            if not self.buffer:
                break
            meta: list[tuple[Any, ...]] = []
            payloads: list[bytes] = []
            was_idle = not c.inflight
            if was_idle:
                c.batchable = c.queueable = True  # kept up to date job by job below
            take = share
            if self.cfg.max_tasks_per_child is not None:  # never hand a child more than it may run
                take = min(take, self.cfg.max_tasks_per_child - c.tasks_done - len(c.inflight))
            while self.buffer and len(meta) < take:
                job = self.buffer[0]
                avg = job.stats.avg
                n = len(c.inflight)
                if n and not ((avg < fast_t and c.batchable and n < limit)
                              or (avg < short_t and c.queueable and n < 2)):
                    break
                self.buffer.popleft()
                p = job.payload
                meta.append((job.seq, job.task, job.jid, job.attempt, len(p), job.result_ttl is not None))
                payloads.append(p)
                c.inflight.append(job)
                c.batchable = c.batchable and avg < fast_t
                c.queueable = c.queueable and avg < short_t
                if job.result_ttl is not None:
                    self._status(job.si, job.id, job.fields, job.result_ttl, b"running",
                                 b"attempt", b"%d" % job.attempt)
            if not meta:
                continue
            if was_idle:
                c.head_started = now
            self.dispatches += 1
            c.given = self.dispatches
            c.outbuf += ipc.pack_jobs(ipc.JOBS, meta, payloads)
            self.flush_child(c)

    def worker_entry(self, task_name: str, payload_json: bytes | str, job_id: str,
                     now: int) -> dict[str, str | bytes]:
        """Fields of a job the worker creates itself (a workflow step, a cron
        tick), with its task's declared attempts, backoff and time limit."""
        t = self.app.tasks.get(task_name)
        return wire.encode_entry(
            task_name, payload_json, enqueued_at=now, job_id=job_id,
            attempts=t.attempts if t else None, backoff=t.backoff if t else None,
            timeout_ms=math.ceil(t.timeout * 1000) if t and t.timeout else None,
        )

    def on_next(self, job: Job, step: list[Any]) -> None:
        task_name, delay_ms, payload_json, queue = step
        t = self.app.tasks.get(task_name)
        q = queue or (t.queue if t is not None and t.queue else "default")
        now = wire.now_ms()
        wf = job.fields.get(b"workflowId") or job.fields.get(b"jobId")
        fields = self.worker_entry(task_name, payload_json, new_job_id(), now)
        if wf:
            fields["workflowId"] = wf
        stream = self.keys.stream(q)
        if self.cfg.history:
            self._record(job.si, job.id, job.fields, b"ok", job.attempt, job.ran_ns)
        if delay_ms and delay_ms > 0:
            self.batch.schedule(job.si, job.id, now + int(delay_ms), wire.encode_scheduled(stream, q, fields))
        else:
            self.batch.add_next(job.si, job.id, stream, fields)

    def fail(self, job: Job, kind: str, etype: str, emsg: str, tb: str, retry_ms: int | None) -> None:
        self.failed += 1
        job.stats.failed[job.si] += 1
        entry = wire.decode_entry(job.fields)
        if isinstance(entry, wire.Malformed):
            self.dead_letter(job.si, job.id, job.fields, "malformed", "MalformedEntry", entry.reason, job.attempt)
            return
        t = self.app.tasks.get(job.task)
        attempts = entry.attempts or (t.attempts if t else None)
        backoff = entry.backoff or (t.backoff if t else None)
        d = policy.decide(kind, attempt=job.attempt, attempts=attempts, max_deliveries=self.cfg.max_deliveries,
                          backoff=backoff, retry_delay_ms=retry_ms)
        extra = {"event": "job-failed", "job_id": _job_id(job), "task": job.task,
                 "queue": self.queues[job.si]}
        if isinstance(d, policy.Retry):
            log.warning("job %s (%s) attempt %d failed: %s: %s; retry in %.3gs", job.id.decode(), job.task,
                        job.attempt, etype, emsg, d.delay, extra=extra)
            job.stats.retried[job.si] += 1
            fields = dict(job.fields)
            fields[b"attempt"] = b"%d" % (job.attempt + 1)
            stream = self.stream_keys[job.si]
            member = wire.encode_scheduled(stream, self.queues[job.si], fields)
            if job.result_ttl is not None:
                self._status(job.si, job.id, job.fields, job.result_ttl, b"failed", b"errorType", etype,
                             b"errorMessage", emsg, b"traceback", tb, b"attempt", b"%d" % job.attempt)
            if self.cfg.history:
                self._record(job.si, job.id, job.fields, b"failed", job.attempt, job.ran_ns,
                             b"reason", kind, b"errorType", etype, b"errorMessage", emsg)
            self.batch.schedule(job.si, job.id, wire.now_ms() + round(d.delay * 1000), member)
        else:
            log.error("job %s (%s) dead-lettered (%s) after attempt %d: %s: %s", job.id.decode(), job.task,
                      d.reason, job.attempt, etype, emsg, extra=extra)
            self.dead_letter(job.si, job.id, job.fields, d.reason, etype, emsg, job.attempt, tb, log_it=False,
                             ran_ns=job.ran_ns)

    def dead_letter(self, si: int, entry_id: bytes, fields: dict[bytes, bytes], reason: str, etype: str,
                    emsg: str, deliveries: int, tb: str = "", *, log_it: bool = True, ran_ns: int = 0) -> None:
        queue = self.queues[si]
        task = fields.get(b"taskName", b"").decode("utf-8", "replace")
        self.metrics.task(task).dead[si] += 1
        if log_it:
            log.error("entry %s of %s dead-lettered (%s): %s", entry_id.decode(), queue, reason, emsg,
                      extra={"event": "dead-letter", "task": task, "queue": queue})
        ttl = self._result_ttl(fields, task)
        if ttl is not None:
            self._status(si, entry_id, fields, ttl, b"dead", b"reason", reason, b"errorType", etype,
                         b"errorMessage", emsg, b"traceback", tb, b"attempt", b"%d" % deliveries)
        if self.cfg.history:
            self._record(si, entry_id, fields, b"dead", deliveries, ran_ns, b"reason", reason,
                         b"errorType", etype, b"errorMessage", emsg)
        dl = wire.dead_letter_fields(
            fields, original_id=entry_id.decode(), queue_key=self.stream_keys[si], reason=reason,
            delivery_count=deliveries, consumer=self.cfg.consumer, error_type=etype,
            error_message=emsg, traceback=tb,
        )
        self.batch.dead(si, entry_id, self.keys.dead_letter(queue), self.cfg.dead_letter_maxlen, dl)

    def _result_ttl(self, fields: dict[bytes, bytes], task_name: str) -> int | None:
        """Milliseconds to keep this job's status, or None if it did not opt in."""
        raw = fields.get(b"resultTtl")
        if raw is not None:
            try:
                ttl = int(raw)
                return ttl if ttl > 0 else None
            except ValueError:
                return None
        t = self.app.tasks.get(task_name)
        return math.ceil(t.result_ttl * 1000) if t is not None and t.result_ttl else None

    def _status(self, si: int, entry_id: bytes, fields: dict[bytes, bytes], ttl_ms: int, status: bytes,
                *extra: Any) -> None:
        jid = fields.get(b"jobId")
        if jid:
            self.batch.status(si, entry_id, self.keys.result(jid.decode()), ttl_ms,
                              (b"status", status, b"updatedAt", b"%d" % wire.now_ms(), *extra))

    def _record(self, si: int, entry_id: bytes, fields: dict[bytes, bytes], outcome: bytes, attempt: int,
                ran_ns: int, *extra: Any) -> None:
        """Job-history record of an outcome settled by another operation (same fields as settle.lua's 'k')."""
        self.batch.record(si, entry_id, (
            b"entryId", entry_id, b"jobId", fields.get(b"jobId", b""), b"taskName", fields.get(b"taskName", b""),
            b"queue", self.queues[si], b"outcome", outcome, b"attempt", attempt, b"durationMs", ran_ns // 1_000_000,
            b"finishedAt", wire.now_ms(), *extra))

    def _unsettled(self) -> bool:
        return bool(self.sending) or self.batch.dirty or any(b.dirty for b in self.unsent)

    def settle(self) -> None:
        """Commit every pending outcome and wait for it (the shutdown path)."""
        while self.sending:
            self.on_exchange_readable()  # blocking reads: the replies are on their way
        for batch in [*self.unsent, self.batch]:
            if not batch.dirty or self.clock() < self.redis_down_until:
                continue
            try:
                skipped = self.broker.settle(batch)
            except redis.RedisError as exc:
                self._redis_error("settle", exc)
                continue
            self._redis_ok()
            if skipped:
                log.warning("%d outcome(s) not applied: their entries were reclaimed by another worker", skipped)
            batch.clear()
        self.unsent = [b for b in self.unsent if b.dirty]

    # -- timers ------------------------------------------------------------------
    def timers(self, now: float) -> None:
        if now >= self.next_promote and not self.stopping and now >= self.redis_down_until:
            self.next_promote = now + self.cfg.promote_interval
            try:
                moved, parked, next_due = self.broker.promote(wire.now_ms(), self.cfg.promote_batch,
                                                              self.cfg.dead_letter_maxlen)
            except redis.RedisError as exc:
                self._redis_error("promote", exc)
            else:
                self._redis_ok()
                if parked:
                    log.error("%d undecodable scheduled member(s) parked in %s", parked,
                              self.keys.dead_letter("default"), extra={"event": "dead-letter"})
                if moved >= self.cfg.promote_batch:
                    self.next_promote = now  # more are due: go on next pass
                elif next_due >= 0:
                    wait = max(0.0, (next_due - wire.now_ms()) / 1000.0)
                    self.next_promote = now + min(wait, self.cfg.promote_interval)
                if moved:
                    self.drained = False
        if now >= self.next_renew and now >= self.redis_down_until:
            self.next_renew = now + self.cfg.idle_timeout / 3
            self.renew()
        if now >= self.next_reclaim and not self.stopping and now >= self.redis_down_until:
            self.next_reclaim = now + max(self.cfg.idle_timeout / 4, 0.05)
            self.reclaim()
        if now >= self.next_forget and now >= self.redis_down_until:
            self.next_forget = now + self.cfg.idle_timeout
            self.forget_dead_consumers()
        if now >= self.next_memory:
            self.next_memory = now + self.cfg.memory_check_interval
            self.check_memory()
            if self.metrics_server is not None:
                self.metrics_server.sweep(now)
        if now >= self.redis_down_until:
            try:
                self.house.tick(now)
            except redis.RedisError as exc:
                self._redis_error("housekeeping", exc)
            except Exception:  # noqa: BLE001 - presence/cron/broadcast must never take jobs down
                log.exception("housekeeping failed; retrying next pass")

    def title(self, now: float) -> None:
        if now < self.next_title:
            return
        self.next_title = now + 0.5
        busy = sum(1 for c in self.children if c.inflight)
        state = " stopping" if self.stopping else ""
        _set_title(f"backstage-prefork: master [{','.join(self.queues)}] {busy}/{len(self.children)} busy{state}")

    # -- Redis trouble -------------------------------------------------------------
    def _redis_error(self, what: str, exc: Exception) -> None:
        self.metrics.redis_errors[what] += 1
        self.redis_backoff = min(max(self.redis_backoff * 2, 0.1), 5.0)
        self.redis_down_until = self.clock() + self.redis_backoff
        if self.wait_fd is not None or self.broker.waiting:
            self._stop_waiting()
        self.drained = False
        log.warning("Redis error during %s at %s: %s; retrying in %.1fs", what, self.broker.where,
                    type(exc).__name__ + (f": {exc}" if str(exc) else ""), self.redis_backoff,
                    extra={"event": "redis-error"})

    def _redis_ok(self) -> None:
        if self.redis_backoff:
            log.info("Redis at %s is back", self.broker.where, extra={"event": "redis-reconnect"})
            self.redis_backoff = 0.0

    # -- shutdown --------------------------------------------------------------------
    def _shutdown(self) -> int:
        if self.fatal is not None:
            log.error("stopping: %s", self.fatal)
            for c in self.children:
                for job in c.inflight:
                    self.batch.hand_back(job.si, job.id, job.fields)
                c.inflight.clear()
                self._kill(c, "fatal")
            while self.buffer:
                job = self.buffer.popleft()
                self.batch.hand_back(job.si, job.id, job.fields)
        self._stop_waiting()
        # close every pipe: children exit at EOF; then wait for them
        for c in self.children:
            if c.job_w >= 0:
                if c.writing:
                    self.sel.unregister(c.job_w)
                    c.writing = False
                os.close(c.job_w)
                c.job_w = -1
        deadline = self.clock() + 10.0
        while self.children and self.clock() < deadline:
            self.reap()
            if self.children:
                self.sel.select(0.05)
        for c in list(self.children):
            self._kill(c, "shutdown")
        while self.children:
            pid, status = os.waitpid(self.children[0].pid, 0)
            self.on_child_exit(self.children[0], status)
        # commit what finished (and what we hand back), retrying while Redis recovers
        settle_deadline = self.clock() + max(self.cfg.grace_period, 5.0)
        while self._unsettled() and self.clock() < settle_deadline:
            self.redis_down_until = 0.0
            self.settle()
            if self._unsettled():
                time.sleep(min(self.redis_backoff, 0.5))
        if self._unsettled():
            left = self.batch.count + sum(b.count for b in self.unsent)
            log.error("could not commit %d outcome(s): Redis unreachable; their jobs will be redelivered", left)
            return self.exit_code or EXIT_FORCED
        self.house.stop()
        log.info("master stopped: processed=%d failed=%d exit code %d", self.processed, self.failed,
                 self.exit_code, extra={"event": "stopped"})
        return self.exit_code


def _noop(signum: int, frame: Any) -> None:
    pass


def _set_title(text: str) -> None:
    try:
        import setproctitle

        setproctitle.setproctitle(text)
    except Exception:  # noqa: BLE001
        pass
