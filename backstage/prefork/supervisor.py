"""Supervision of the children: spawn, read, reap, kill, recycle.

Part of the master (one process, one thread): :class:`ChildrenMixin` holds
the master's child-process duties, each an idempotent step the loop runs
every pass; :class:`Child` and :class:`Job` are the per-child and per-job
state, keyed by object, never by fd number.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import selectors
import signal
import sys
from typing import TYPE_CHECKING, Any, Deque

import psutil

from . import ipc
from .child import CHILD_BOOT_FAILED, child_main
from .metrics import TaskStats

if TYPE_CHECKING:
    import socket
    from typing import Callable

    from ..app import Backstage
    from .broker import MasterBroker
    from .config import WorkerConfig
    from .metrics import Metrics, MetricsServer

__all__ = ["Job", "Child", "ChildrenMixin", "EXIT_APP"]

log = logging.getLogger("backstage.prefork")

EXIT_APP = 3  # the app could not be loaded, or a child could not boot
_READ = 1 << 18


class Job:
    """One fetched entry the master holds until its outcome is settled."""

    __slots__ = ("seq", "si", "id", "fields", "task", "timeout", "attempt", "result_ttl", "stats", "payload", "jid",
                 "ran_ns")

    def __init__(self, seq: int, si: int, entry_id: bytes, fields: dict[bytes, bytes], task: str,
                 timeout: float | None, attempt: int, result_ttl: int | None, stats: TaskStats,
                 payload: bytes, jid: str | None) -> None:
        self.seq = seq
        self.si = si
        self.id = entry_id
        self.fields = fields
        self.task = task
        self.timeout = timeout
        self.attempt = attempt
        self.result_ttl = result_ttl  # ms; None: the job keeps no status
        self.stats = stats
        self.payload = payload  # raw JSON text, never decoded here
        self.jid = jid
        self.ran_ns = 0  # how long the handler ran (its outcome frame says)


class Child:
    """Per-child state, keyed by this object (never by fd number)."""

    __slots__ = ("index", "pid", "job_w", "out_r", "reader", "inflight", "head_started", "tasks_done",
                 "ready", "retiring", "outbuf", "eof", "killed", "writing", "batchable", "queueable", "given")

    def __init__(self, index: int, pid: int, job_w: int, out_r: int) -> None:
        self.index = index
        self.pid = pid
        self.job_w = job_w
        self.out_r = out_r
        self.reader = ipc.FrameReader()
        self.inflight: Deque[Job] = collections.deque()
        self.head_started = 0.0
        self.tasks_done = 0
        self.ready = False
        self.retiring: str | None = None  # why it is being replaced
        self.outbuf = bytearray()
        self.eof = False
        self.killed: str | None = None
        self.writing = False
        self.batchable = False  # every job it holds is of a known-fast task
        self.queueable = False  # every job it holds is of a known-short task
        self.given = 0  # when it was last handed jobs (the master's dispatch count)

    @property
    def usable(self) -> bool:
        return self.ready and self.retiring is None and self.killed is None and not self.eof


class ChildrenMixin:
    """The master's duties towards its children (methods of :class:`Master`)."""

    if TYPE_CHECKING:  # state and steps of Master that these methods use
        app: Backstage
        cfg: WorkerConfig
        broker: MasterBroker
        children: list[Child]
        buffer: Deque[Job]
        concurrency: int
        sel: selectors.BaseSelector
        _sig_r: socket.socket
        _sig_w: socket.socket
        metrics: Metrics
        metrics_server: MetricsServer | None
        hooks: list[Callable[[], Any]]
        stopping: bool
        reap_due: bool
        forced: bool
        fatal: str | None
        exit_code: int

        def fail(self, job: Job, kind: str, etype: str, emsg: str, tb: str, retry_ms: int | None) -> None: ...

        def on_message(self, child: Child, msg: list[Any]) -> None: ...

    def top_up(self) -> None:
        if self.stopping or self.fatal is not None:
            return
        active = {c.index for c in self.children if c.retiring is None and c.killed is None}
        index = 0
        while len(active) < self.concurrency:
            while index in active:
                index += 1
            self.spawn(index)
            active.add(index)

    def _shrink(self) -> None:
        active = [c for c in self.children if c.retiring is None and c.killed is None]
        extra = len(active) - self.concurrency
        for c in sorted(active, key=lambda c: (len(c.inflight), -c.index))[:max(extra, 0)]:
            c.retiring = "scale down"

    def spawn(self, index: int) -> None:
        job_r, job_w = os.pipe()
        out_r, out_w = os.pipe()
        ipc.set_pipe_size(job_w)
        ipc.set_pipe_size(out_w)
        _flush_std()
        close_in_child = [job_w, out_r, self._sig_r.fileno(), self._sig_w.fileno(), *self.broker.fds()]
        if hasattr(self.sel, "fileno"):
            close_in_child.append(self.sel.fileno())
        if self.metrics_server is not None:
            close_in_child += [self.metrics_server.fileno(), *(c.fileno() for c in self.metrics_server.conns)]
        for c in self.children:
            close_in_child += [c.job_w, c.out_r]
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which ends in os._exit
            try:
                signal.set_wakeup_fd(-1)
                for fd in close_in_child:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            finally:
                child_main(self.app, index, job_r, out_w, self.hooks)
        os.close(job_r)
        os.close(out_w)
        os.set_blocking(job_w, False)
        os.set_blocking(out_r, False)
        child = Child(index, pid, job_w, out_r)
        self.children.append(child)
        self.sel.register(out_r, selectors.EVENT_READ, ("child", child))

    def on_child_readable(self, child: Child) -> None:
        while True:
            try:
                data = os.read(child.out_r, _READ)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                data = b""
            if not data:
                child.eof = True
                self.reap_due = True
                self.sel.unregister(child.out_r)
                return
            try:
                for msg in child.reader.feed(data):
                    self.on_message(child, msg)
            except (ValueError, TypeError) as exc:
                log.error("child %d sent a corrupt frame (%s); replacing it", child.index, exc)
                self._kill(child, "corrupt frame")
                return
            if len(data) < _READ:
                return

    def flush_child(self, child: Child) -> None:
        """Write as much of the child's pending frames as its pipe takes."""
        if child.outbuf and child.killed is None:
            try:
                n = os.write(child.job_w, child.outbuf)
                del child.outbuf[:n]
            except BlockingIOError:
                pass
            except OSError:
                child.outbuf.clear()  # the child is gone; reap() accounts for its jobs
        want = bool(child.outbuf) and child.killed is None
        if want != child.writing:
            if want:
                self.sel.register(child.job_w, selectors.EVENT_WRITE, ("write", child))
            else:
                self.sel.unregister(child.job_w)
            child.writing = want

    def _kill(self, child: Child, why: str) -> None:
        if child.killed is None:
            child.killed = why
            try:
                os.kill(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = next((c for c in self.children if c.pid == pid), None)
            if child is not None:
                self.on_child_exit(child, status)

    def on_child_exit(self, child: Child, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        if not child.eof:
            self.on_child_readable(child)  # outcomes written before it died still count
            if not child.eof:
                self.sel.unregister(child.out_r)
        if child.writing:
            self.sel.unregister(child.job_w)
        os.close(child.out_r)
        if child.job_w >= 0:
            os.close(child.job_w)
        self.children.remove(child)
        if not child.ready and code == CHILD_BOOT_FAILED and self.fatal is None:
            self.fatal = f"child {child.index} could not boot (exit code {code})"
            self.exit_code = EXIT_APP
        if child.inflight:
            head = child.inflight.popleft()
            if child.killed and child.killed.startswith("timeout"):
                kind, msg = "timeout", f"job ran longer than its {head.timeout:g}s time limit; its child was killed"
            else:
                kind = "worker-lost"
                msg = f"child {child.index} (pid {child.pid}) died: {_describe_exit(code)}"
            if not self.forced:
                self.fail(head, kind, "WorkerLost" if kind == "worker-lost" else "TimeLimitExceeded", msg, "", None)
            # the rest of its batch never started: run them elsewhere
            self.buffer.extendleft(reversed(child.inflight))
            child.inflight.clear()
        why = child.killed or child.retiring
        cause = (child.retiring or ("timeout" if child.killed and child.killed.startswith("timeout") else child.killed)
                 or ("shutdown" if self.stopping else "lost"))
        self.metrics.recycles[cause] += 1
        if why is None and not self.stopping:
            why = _describe_exit(code)
            log.warning("child %d (pid %d) exited unexpectedly: %s", child.index, child.pid, why,
                        extra={"event": "child-lost"})
        else:
            log.info("child %d (pid %d) replaced: %s", child.index, child.pid, why or "stopped",
                     extra={"event": "child-replaced"})

    def kill_overdue(self, now: float) -> None:
        for c in self.children:
            if c.inflight and c.killed is None:
                head = c.inflight[0]
                if head.timeout is not None and now - c.head_started > head.timeout:
                    log.warning("job %s (%s) passed its %gs time limit: killing child %d",
                                head.id.decode(), head.task, head.timeout, c.index,
                                extra={"event": "timeout", "job_id": _job_id(head), "task": head.task})
                    self._kill(c, f"timeout of job {head.id.decode()}")
        for c in self.children:
            if c.retiring and not c.inflight and c.job_w >= 0 and not c.outbuf:
                # closing its pipe is the stop request: it exits when it reads EOF
                if c.writing:
                    self.sel.unregister(c.job_w)
                    c.writing = False
                os.close(c.job_w)
                c.job_w = -1

    def check_memory(self) -> None:
        limit = self.cfg.max_memory_per_child
        if limit is None:
            return
        for c in self.children:
            if c.retiring or c.killed or not c.ready:
                continue
            try:
                rss = psutil.Process(c.pid).memory_info().rss
            except psutil.Error:
                continue
            if rss > limit * 1024 * 1024:
                log.info("child %d uses %.0f MB (limit %.0f MB): recycling it after its job", c.index,
                         rss / 1048576, limit, extra={"event": "recycle"})
                c.retiring = "memory"


def _job_id(job: Job) -> str:
    jid = job.fields.get(b"jobId")
    return jid.decode() if jid else job.id.decode()


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    for h in logging.getLogger().handlers + log.handlers:
        try:
            h.flush()
        except Exception:  # noqa: BLE001
            pass
