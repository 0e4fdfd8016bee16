"""The master's loop: one process, one thread, one selector.

Owns the signals, the selector, the timers, shutdown and the exit code,
and wires the parts that own everything else:

- :class:`~.supervisor.Supervisor`: the children (fork, reap, kill overdue, recycle);
- :class:`~.dispatch.Dispatcher`: fetched jobs not yet handed out, and to whom they go;
- :class:`~.exchange.Exchange`: round trips with Redis (settle + fetch), the blocking wait;
- :class:`~.outcomes.Outcomes`: what a finished (or refused) job commits;
- :class:`~.entries.Decoder`: each entry decoded and validated once, at fetch;
- :class:`~.recovery.Recovery`, :class:`~.housekeeping.Housekeeper`,
  :class:`~.metrics.Metrics`: timers, each given only what it needs;
- :class:`~.health.RedisHealth`: the one record of Redis trouble.

Every duty other than reading fds is a step the loop runs each pass (reap,
kill overdue, timers, settle, fetch, dispatch, top up), each idempotent and
bounded.
"""

from __future__ import annotations

import logging
import math
import selectors
import signal
import socket
import time
from typing import Any, Callable, Iterator

import redis

from ..app import Backstage
from ..errors import RedisVersionError
from ..ops import durability, inspect
from ..protocol import wire
from ..protocol.keys import Keys
from . import ipc
from .broker import MasterBroker
from .config import WorkerConfig
from .dispatch import Dispatcher
from .entries import Decoder, Delivery
from .exchange import Exchange
from .health import RedisHealth
from .housekeeping import Housekeeper
from .metrics import Metrics, MetricsServer
from .outcomes import Outcomes
from .recovery import Recovery
from .supervisor import Child, Supervisor

__all__ = ["Master", "EXIT_OK", "EXIT_FORCED", "EXIT_USAGE", "EXIT_APP", "EXIT_REDIS"]

log = logging.getLogger("backstage.prefork")

EXIT_OK = 0
EXIT_FORCED = 1
EXIT_USAGE = 2
EXIT_APP = 3  # the app could not be loaded, or a child could not boot
EXIT_REDIS = 4  # Redis unreachable or too old at start-up

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU,
            signal.SIGCHLD)


class Master:
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
        self.sel = selectors.DefaultSelector()
        self._sig_r, self._sig_w = socket.socketpair()
        self.health = RedisHealth(self.broker.where, clock)
        self.health.on_back(self._reload_functions)
        self.supervisor = Supervisor(app, config, self.sel, clock, on_outcome=self.on_outcome,
                                     on_lost=self._lost_with_child, put_back=self._put_back,
                                     on_boot_failed=self._boot_failed, fds_to_close=self._fds_to_close)
        self.dispatcher = Dispatcher(config, self.supervisor, clock, running=self._running, queues=config.queues,
                                     skip=self._skip_cancelled)
        self.exchange = Exchange(self.broker, self.sel, self.health, clock, self.dispatcher, self.accept,
                                 queues=self.queues, redis_timeout=config.redis_timeout,
                                 block_timeout=config.block_timeout, fast_job_threshold=config.fast_job_threshold,
                                 on_lost_fetch=self._lost_fetch)
        self.metrics = Metrics(self.queues, app.tasks, recycles=self.supervisor.recycles,
                               redis_errors=self.health.errors, queue_stats=self._queue_stats,
                               children=self._children_counts)
        self.decoder = Decoder(app, config.default_timeout, config.max_payload_bytes, self.metrics.task)
        self.outcomes = Outcomes(app, self.keys, self.queues, self.exchange, self.metrics.task,
                                 consumer=config.consumer, max_deliveries=config.max_deliveries,
                                 dead_letter_maxlen=config.dead_letter_maxlen, history=config.history > 0,
                                 unknown_task=config.unknown_task, unknown_task_hops=config.unknown_task_hops)
        self.exchange.on_refused = self.outcomes.refused  # what Redis refused is settled otherwise
        self.recovery = Recovery(self.broker, config, self.health, self.queues, held=self.held_entries,
                                 room=self.exchange.room, active=self.exchange.active_streams, accept=self.accept,
                                 take_back=self._take_back, children=lambda: self.supervisor.concurrency,
                                 buffered=lambda: len(self.dispatcher.buffer), to_front=self.dispatcher.to_front)
        self.house = Housekeeper(self.broker, self.keys, config, self.health, app, clock, self)
        self.metrics_server: MetricsServer | None = None
        # hot path: one fetched entry costs one decode and one append
        self._decode = self.decoder.decode
        self._buffer = self.dispatcher.buffer.append
        now = clock()
        self.next_promote = 0.0
        self.next_reclaim = 0.0
        self.next_renew = now + config.idle_timeout / 3
        self.next_forget = now + config.idle_timeout
        self.next_memory = 0.0
        self.next_title = 0.0
        self.next_reap = 0.0
        self.stopping = False
        self.forced = False
        self.stop_deadline = math.inf
        self.exit_code = EXIT_OK
        self.fatal: str | None = None
        self.started = time.time()

    # -- set-up ----------------------------------------------------------------
    def _install_signals(self) -> None:
        for s in (self._sig_r, self._sig_w):
            s.setblocking(False)
        signal.set_wakeup_fd(self._sig_w.fileno(), warn_on_full_buffer=False)
        for sig in _SIGNALS:
            # the handler only exists so the signal does not kill us; the
            # wake-up fd carries its number to the loop, which does the work
            signal.signal(sig, _noop)
        self.sel.register(self._sig_r, selectors.EVENT_READ, ("signal", None))

    def _restore_signals(self) -> None:
        signal.set_wakeup_fd(-1)
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_DFL)

    def _fds_to_close(self) -> list[int]:
        """The master's fds a forked child must close (it never talks to Redis or scrapers)."""
        fds = [self._sig_r.fileno(), self._sig_w.fileno(), *self.broker.fds()]
        if hasattr(self.sel, "fileno"):
            fds.append(self.sel.fileno())
        if self.metrics_server is not None:
            fds += [self.metrics_server.fileno(), *(c.fileno() for c in self.metrics_server.conns)]
        return fds

    def close(self) -> None:
        """Release the selector, the signal pipe and the Redis connections."""
        if self.metrics_server is not None:
            self.metrics_server.close()
        self.sel.close()
        self.broker.close()
        self._sig_r.close()
        self._sig_w.close()

    # -- main loop -------------------------------------------------------------
    def _connect(self) -> bool:
        """Check Redis at start, waiting up to --wait-for-redis seconds for it to answer;
        then say once what would lose jobs (no AOF, cron entries of undefined tasks)."""
        deadline = self.clock() + self.cfg.wait_for_redis
        told = False
        while True:
            try:
                self.broker.check()
                break
            except Exception as exc:  # noqa: BLE001 - translated BrokerError, named endpoint
                left = deadline - self.clock()
                if left <= 0 or isinstance(exc, RedisVersionError):
                    log.error("cannot start: %s", exc)
                    return False
                if not told:
                    log.warning("waiting up to %gs for Redis: %s", self.cfg.wait_for_redis, exc,
                                extra={"event": "redis-wait"})
                    told = True
                time.sleep(min(0.25, left))  # before the loop exists: nothing else to serve yet
        if told:
            log.info("Redis at %s answers", self.broker.where, extra={"event": "redis-reconnect"})
        try:
            for text in durability.warnings(durability.read(self.broker.redis), self.broker.where):
                log.warning("%s", text, extra={"event": "durability"})
        except redis.RedisError as exc:
            log.debug("could not read Redis persistence settings: %s", exc)
        for entry in self.app.cron_entries:
            if entry.task not in self.app.tasks and not self.app.serves_elsewhere(entry.task):
                log.warning("cron %s enqueues task %r, which this app does not define: each tick will be "
                            "dead-lettered as unknown-task unless another worker serves it (list it in "
                            "Backstage(external_tasks=...) to silence this)", entry.name, entry.task,
                            extra={"event": "cron"})
        return True

    def run(self) -> int:
        if not self._connect():
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
                 self.cfg.consumer, ",".join(self.queues), self.supervisor.concurrency, self.broker.where,
                 extra={"event": "start"})
        self.house.start()
        try:
            self.supervisor.top_up()
            while True:
                self.tick()
                if self.fatal is not None or (self.stopping and self._stopped()):
                    break
            return self._shutdown()
        finally:
            self._restore_signals()
            if self.metrics_server is not None:
                self.metrics_server.close()
                self.metrics_server = None
            self.sel.close()
            self.broker.close()

    def tick(self) -> None:
        """One pass: wait for fds (up to the nearest deadline), then every step."""
        timeout = max(0.0, self._next_deadline() - self.clock())
        sup = self.supervisor
        ex = self.exchange
        for key, mask in self.sel.select(timeout):
            kind, obj = key.data
            if kind == "child":
                sup.on_readable(obj)
            elif kind == "write":
                sup.flush(obj)
            elif kind == "exchange":
                ex.on_readable()
            elif kind == "wait":
                ex.on_wait_readable()
            elif kind == "signal":
                self.on_signals()
            elif kind == "metrics-conn" and self.metrics_server is not None:
                self.metrics_server.on_readable(obj)
            elif kind == "metrics-accept" and self.metrics_server is not None:
                self.metrics_server.on_accept()
        now = self.clock()
        if sup.reap_due or now >= self.next_reap:
            sup.reap_due = False
            self.next_reap = now + 1.0  # a backstop: SIGCHLD and pipe EOF say when to look
            sup.reap()
        sup.kill_overdue(now)
        ex.check(now)
        self.dispatcher.dispatch()  # children freed just now get buffered work first
        ex.start(now)
        self.timers(now)
        self.dispatcher.dispatch()
        if self.house.live > 1 and not self.stopping:
            for d in self.dispatcher.take_long():  # no idle child here: maybe at another master
                self.outcomes.hand_back(d)
        sup.top_up()
        self.title(now)

    def _next_deadline(self) -> float:
        """The nearest real deadline. One rule for work that is due but blocked:
        work skipped while the master stops (promotion, reclaim) is not due
        then, and work that needs Redis is due no earlier than the end of the
        Redis back-off (:meth:`RedisHealth.due`). :meth:`timers` runs a timer
        by the same rule, so a skipped timer never leaves the selector a
        deadline in the past (which made the master busy-loop)."""
        now = self.clock()
        d = min(self.next_renew, self.next_forget, self.house.deadline())
        if not self.exchange.fetch_in_flight():  # a reconcile waits for the fetches in flight
            d = min(d, self.recovery.reconcile_at)
        if not self.stopping:
            d = min(d, self.next_promote, self.next_reclaim)
        d = min(self.health.due(d), self.next_memory, self.next_title, self.stop_deadline, now + 1.0)
        return min(d, self.exchange.deadline(now), self.supervisor.deadline())

    # -- what the parts report ------------------------------------------------------
    def accept(self, si: int, entry_id: bytes, flat: list[bytes], deliveries: int = 1) -> None:
        """Take a fetched (or reclaimed, ``deliveries`` > 1) entry: buffer it, or dead-letter bad input."""
        d = self._decode(si, entry_id, flat, deliveries)
        if type(d) is Delivery:
            self._buffer(d)
        else:
            self.outcomes.rejected(si, entry_id, d)  # type: ignore[arg-type]

    def _take_back(self, si: int, entry_id: bytes, flat: list[bytes], deliveries: int) -> None:
        """An entry a lost reply left pending for us (reconcile): run it, or hand it
        back for other workers when stopping."""
        d = self._decode(si, entry_id, flat, deliveries)
        if type(d) is not Delivery:
            self.outcomes.rejected(si, entry_id, d)  # type: ignore[arg-type]
        elif self.stopping:
            self.outcomes.hand_back(d)
        else:
            self._buffer(d)

    def _lost_fetch(self) -> None:
        if not self.forced:
            self.recovery.suspect()

    def on_outcome(self, child: Child, msg: ipc.Outcome) -> None:
        """A frame from ``child`` (the supervisor read it)."""
        t = type(msg)
        if t is ipc.Ok:
            ok: ipc.Ok = msg  # type: ignore[assignment]
            seq, duration_ns, step, value = ok  # one unpack: cheaper than four attributes (once per job)
            self.outcomes.succeeded(self.dispatcher.finished(child, seq, duration_ns), step, value)
        elif t is ipc.Err:
            e: ipc.Err = msg  # type: ignore[assignment]
            d = self.dispatcher.finished(child, e.seq, e.duration_ns)
            self.outcomes.failed_run(d, e.kind, e.error_type, e.message, e.traceback, e.retry_delay_ms)
        elif t is ipc.Progress:
            p: ipc.Progress = msg  # type: ignore[assignment]
            if child.inflight and child.inflight[0].seq == p.seq:
                self.outcomes.progress(child.inflight[0], p.fraction, p.message)
        elif t is ipc.Ready:
            self.supervisor.started(child)
        else:
            b: ipc.BootFailed = msg  # type: ignore[assignment]
            self.fatal = f"child {child.index} could not boot: {b.error_type}: {b.message}"
            log.error("%s\n%s", self.fatal, b.traceback, extra={"event": "boot-failed"})
            self.exit_code = EXIT_APP
            self._freeze()

    def _reload_functions(self) -> None:
        """Redis may have come back empty (a restart without persistence, a failover to a
        node that never had them): producers need our functions and may not load them."""
        try:
            self.broker.load_functions()
        except redis.RedisError as exc:
            log.warning("could not load the producer functions: %s", exc, extra={"event": "redis-error"})

    def _lost_with_child(self, d: Delivery, kind: str, etype: str, message: str) -> None:
        if kind == "cancelled":
            self.outcomes.cancelled(d)
        else:
            self.outcomes.failed_run(d, kind, etype, message, "", None)

    def _skip_cancelled(self, d: Delivery) -> None:
        self.outcomes.cancelled(d)

    def _put_back(self, deliveries: list[Delivery]) -> None:
        self.dispatcher.put_back(deliveries)

    def _boot_failed(self, message: str) -> None:
        if self.fatal is None:
            self.fatal = message
            self.exit_code = EXIT_APP
            self._freeze()

    def _freeze(self) -> None:
        """A fatal error: no more children, no more fetching."""
        self.supervisor.spawning = False
        self.exchange.stop_fetching()

    def _running(self, d: Delivery) -> None:
        self.outcomes.running(d)

    def held_entries(self) -> Iterator[tuple[int, bytes]]:
        """(si, entry id) of everything pending for us: buffered, running, or waiting to be settled."""
        for d in self.dispatcher.held():
            yield d.si, d.id
        yield from self.exchange.held_entries()

    def _queue_stats(self) -> list[inspect.QueueStats]:
        return inspect.queue_stats(self.broker.redis, self.keys, self.cfg.group, self.queues, oldest=False)

    def _children_counts(self) -> tuple[int, int]:
        alive = [c for c in self.supervisor.children if c.killed is None]
        return len(alive), sum(1 for c in alive if c.inflight)

    # -- housekeeping.Worker: what presence and remote control may see and do ---------
    def status(self) -> dict[str, Any]:
        sup = self.supervisor
        return {"queues": self.queues, "paused": sorted(self.exchange.paused & set(self.queues)),
                "concurrency": sup.concurrency, "children": len(sup.children), "busy": sup.busy(),
                "processed": self.outcomes.processed, "failed": self.outcomes.failed, "started_at": self.started,
                "stopping": self.stopping,
                # what runs now (backstage workers --jobs), and what this worker can run (dlq requeue)
                "jobs": sup.running(self.queues), "tasks": sorted(self.app.tasks)[:1000],
                "max_payload_bytes": self.cfg.max_payload_bytes}

    def child_pids(self) -> list[int]:
        return self.supervisor.pids()

    def set_paused(self, paused: set[str]) -> None:
        self.exchange.set_paused(paused)

    def stop(self) -> None:
        self.begin_stop()

    def set_concurrency(self, n: int) -> None:
        self.supervisor.scale(n)

    def broadcast_to_children(self, frame: bytes) -> None:
        self.supervisor.broadcast(frame)

    def cancel(self, job_ids: set[str]) -> None:
        """The cancelled job ids now (P:cancels): buffered ones never start, running ones are killed."""
        self.dispatcher.cancelled = job_ids
        if job_ids:
            self.supervisor.kill_cancelled(job_ids)

    # -- signals ---------------------------------------------------------------
    def on_signals(self) -> None:
        try:
            data = self._sig_r.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        sup = self.supervisor
        for signum in data:
            if signum == signal.SIGCHLD:
                sup.reap_due = True
                continue
            if signum in (signal.SIGTERM, signal.SIGINT) and not self.stopping:
                log.info("%s: stopping gracefully (grace period %.1fs)", signal.Signals(signum).name,
                         self.cfg.grace_period, extra={"event": "stop"})
                self.begin_stop()
            elif signum == signal.SIGQUIT or (signum == signal.SIGINT and self.stopping):
                log.warning("%s: stopping now; running jobs go back to their queues",
                            signal.Signals(signum).name, extra={"event": "stop-forced"})
                self.force_stop()
            elif signum == signal.SIGHUP:
                log.info("SIGHUP: replacing children", extra={"event": "reload"})
                sup.reload()
            elif signum == signal.SIGTTIN:
                sup.concurrency += 1
                log.info("SIGTTIN: concurrency %d", sup.concurrency, extra={"event": "scale"})
            elif signum == signal.SIGTTOU and sup.concurrency > 1:
                sup.scale(sup.concurrency - 1)
                log.info("SIGTTOU: concurrency %d", sup.concurrency, extra={"event": "scale"})

    def begin_stop(self) -> None:
        self.stopping = True
        self.supervisor.stopping = True
        self.supervisor.spawning = False
        self.stop_deadline = self.clock() + self.cfg.grace_period
        self.exchange.stop_fetching()
        # fetched but never started: hand them back so other workers take them now
        for d in self.dispatcher.take_all():
            self.outcomes.hand_back(d)

    def force_stop(self) -> None:
        self.stopping = self.forced = True
        sup = self.supervisor
        sup.stopping = sup.forced = True
        sup.spawning = False
        self.exit_code = EXIT_FORCED
        self.exchange.stop_fetching()
        # We know these did not finish: hand them back to their streams now (committed on the
        # way out, when Redis answers) rather than leave them to a reclaimer that waits
        # --idle-timeout. As at the end of the grace period, that uses no attempt.
        for c in sup.children:
            sup.kill(c, "forced stop")
        for c in list(sup.children):
            if not c.eof:
                sup.on_readable(c)  # outcomes written before the kill still count
        for d in sup.kill_all("forced stop"):
            self.outcomes.hand_back(d)
        for d in self.dispatcher.take_all():
            self.outcomes.hand_back(d)

    def _stopped(self) -> bool:
        if self.forced:
            return True
        busy = self.supervisor.busy()
        if busy and self.clock() < self.stop_deadline:
            return False
        if busy:
            log.warning("grace period over: killing %d busy children; their jobs go back to the queue",
                        busy, extra={"event": "grace-expired"})
            for d in self.supervisor.kill_all("grace period over"):
                self.outcomes.hand_back(d)
        return True

    # -- timers ------------------------------------------------------------------
    def timers(self, now: float) -> None:
        # the rule of _next_deadline: Redis work runs once its deadline and the back-off are both past
        # (checked again after each step: a step's Redis error blocks the ones after it)
        health = self.health
        running = not self.stopping
        if running and now >= self.next_promote and health.up(now):
            self.next_promote = now + self.cfg.promote_interval
            self.promote(now)
        rec = self.recovery
        if now >= rec.reconcile_at and health.up(now) and not self.forced:
            # our pending list is checked with no fetch in flight (its entries would look
            # stranded): hold new fetches until the pass is over (one round trip at most)
            ex = self.exchange
            ex.fetch_held = True
            if not ex.fetch_in_flight() and rec.reconcile(now):
                ex.fetch_held = False
        if now >= self.next_renew and health.up(now):
            self.next_renew = now + self.cfg.idle_timeout / 3
            self.recovery.renew()
        if running and now >= self.next_reclaim and health.up(now):
            self.next_reclaim = now + max(self.cfg.idle_timeout / 4, 0.05)
            if self.recovery.reclaim():
                self.next_reclaim = self.clock()  # more may be waiting
        if now >= self.next_forget and health.up(now):
            self.next_forget = now + self.cfg.idle_timeout
            self.recovery.forget_dead_consumers()
        if now >= self.next_memory:
            self.next_memory = now + self.cfg.memory_check_interval
            self.supervisor.check_memory()
            if self.metrics_server is not None:
                self.metrics_server.sweep(now)
        if now >= self.house.deadline() and health.up(now):
            try:
                self.house.tick(now)
            except redis.RedisError as exc:
                health.failed("housekeeping", exc)
            except Exception:  # noqa: BLE001 - presence/cron/broadcast must never take jobs down
                log.exception("housekeeping failed; retrying next pass")

    def promote(self, now: float) -> None:
        """Move due delayed jobs and retries to their streams (bounded per call)."""
        try:
            moved, parked, next_due = self.broker.promote(wire.now_ms(), self.cfg.promote_batch,
                                                          self.cfg.dead_letter_maxlen)
        except redis.RedisError as exc:
            self.health.failed("promote", exc)
            return
        self.health.ok()
        if parked:
            log.error("%d undecodable scheduled member(s) parked in %s", parked,
                      self.keys.dead_letter("default"), extra={"event": "dead-letter"})
        if moved >= self.cfg.promote_batch:
            self.next_promote = now  # more are due: go on next pass
        elif next_due >= 0:
            wait = max(0.0, (next_due - wire.now_ms()) / 1000.0)
            self.next_promote = now + min(wait, self.cfg.promote_interval)
        if moved:
            self.exchange.drained = False

    def title(self, now: float) -> None:
        if now < self.next_title:
            return
        self.next_title = now + 0.5
        sup = self.supervisor
        state = " stopping" if self.stopping else ""
        _set_title(f"backstage-prefork: master [{','.join(self.queues)}] {sup.busy()}/{len(sup.children)} busy{state}")

    # -- shutdown --------------------------------------------------------------------
    def _shutdown(self) -> int:
        if self.fatal is not None:
            log.error("stopping: %s", self.fatal)
            for d in self.supervisor.kill_all("fatal"):
                self.outcomes.hand_back(d)
            for d in self.dispatcher.take_all():
                self.outcomes.hand_back(d)
        self.exchange.stop_waiting()
        self.supervisor.stop_all()  # close every pipe: children exit at EOF; then wait for them
        # commit what finished (and what we hand back), retrying while Redis recovers
        ex = self.exchange
        # a forced stop was asked to be quick: give Redis a moment, not the grace period
        settle_deadline = self.clock() + (min(self.cfg.redis_timeout, 5.0) if self.forced
                                          else max(self.cfg.grace_period, 5.0))
        while ex.unsettled() and self.clock() < settle_deadline:
            self.health.down_until = 0.0
            ex.settle_now()
            if ex.unsettled():
                time.sleep(min(self.health.backoff, 0.5))
        if ex.unsettled():
            log.error("could not commit %d outcome(s): %s; their jobs will be redelivered",
                      ex.outcomes_left(), self.health.last_problem())
            return self.exit_code or EXIT_FORCED
        self.house.stop()
        log.info("master stopped: processed=%d failed=%d exit code %d", self.outcomes.processed,
                 self.outcomes.failed, self.exit_code, extra={"event": "stopped"})
        return self.exit_code


def _noop(signum: int, frame: Any) -> None:
    pass


def _set_title(text: str) -> None:
    try:
        import setproctitle

        setproctitle.setproctitle(text)
    except Exception:  # noqa: BLE001
        pass
