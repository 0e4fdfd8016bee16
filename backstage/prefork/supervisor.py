"""The supervisor: the master's children. Fork, read, reap, kill overdue, recycle.

Owns the children (:class:`Child`: pid, pipes, the deliveries it holds,
its counters) and how many there should be. Each duty is an idempotent
step the loop runs every pass. What the children report goes back through
callbacks given at construction: outcome frames, jobs lost with a child,
jobs a lost child never started, a child that could not boot.

Runs in the master, on its one thread.
"""

from __future__ import annotations

import collections
import errno
import logging
import math
import os
import selectors
import signal
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Deque

import psutil

from . import ipc
from .child import CHILD_BOOT_FAILED, child_main
from .config import WorkerConfig
from .entries import Delivery

if TYPE_CHECKING:
    from ..app import Backstage

__all__ = ["Child", "Supervisor"]

log = logging.getLogger("backstage.prefork")

_READ = 1 << 18


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
        self.inflight: Deque[Delivery] = collections.deque()  # its running job first, then those queued
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
        self.given = 0  # when it was last handed jobs (the dispatcher's count)

    @property
    def usable(self) -> bool:
        return self.ready and self.retiring is None and self.killed is None and not self.eof


OnOutcome = Callable[[Child, ipc.Outcome], None]
OnLost = Callable[[Delivery, str, str, str], None]  # (delivery, kind, error type, message)


class Supervisor:
    """The children of one master."""

    def __init__(self, app: "Backstage", cfg: WorkerConfig, sel: selectors.BaseSelector,
                 clock: Callable[[], float], *, on_outcome: OnOutcome, on_lost: OnLost,
                 put_back: Callable[[list[Delivery]], None], on_boot_failed: Callable[[str], None],
                 fds_to_close: Callable[[], list[int]]) -> None:
        self.app = app
        self.cfg = cfg
        self.sel = sel
        self.clock = clock
        self.on_outcome = on_outcome
        self.on_lost = on_lost
        self.put_back = put_back
        self.on_boot_failed = on_boot_failed
        self.fds_to_close = fds_to_close  # the master's fds a forked child must not keep
        self.hooks: list[Callable[[], Any]] = list(app.child_start_hooks)
        self.children: list[Child] = []
        self.concurrency = cfg.concurrency
        self.stopping = False  # the master stops: exits are expected
        self.spawning = True  # False once the master stops or must stop
        self.forced = False  # killed on purpose: the master hands their jobs back itself
        self.reap_due = True  # a child may have exited: waitpid on the next pass
        self.recycles: collections.Counter[str] = collections.Counter()

    # -- counts ---------------------------------------------------------------------------
    def busy(self) -> int:
        return sum(1 for c in self.children if c.inflight)

    def pids(self) -> list[int]:
        return [c.pid for c in self.children]

    def running(self, queues: list[str]) -> list[dict[str, Any]]:
        """The job each busy child runs now (``backstage workers --jobs``), times in epoch seconds."""
        wall_minus_mono = time.time() - self.clock()
        out = []
        for c in self.children:
            if c.inflight and c.killed is None:
                d = c.inflight[0]
                started = c.head_started + wall_minus_mono
                out.append({"child": c.index, "pid": c.pid, "job_id": d.job_id, "entry_id": d.id.decode(),
                            "task": d.task, "queue": queues[d.si], "attempt": d.attempt,
                            "started_at": round(started, 3),
                            "deadline": round(started + d.timeout, 3) if d.timeout is not None else None})
        return out

    def deadline(self) -> float:
        """The nearest time limit of a running job."""
        d = math.inf
        for c in self.children:
            if c.inflight and c.killed is None:
                t = c.inflight[0].timeout
                if t is not None:
                    d = min(d, c.head_started + t)
        return d

    # -- how many -------------------------------------------------------------------------
    def top_up(self) -> None:
        if not self.spawning:
            return
        active = {c.index for c in self.children if c.retiring is None and c.killed is None}
        index = 0
        while len(active) < self.concurrency:
            while index in active:
                index += 1
            self.spawn(index)
            active.add(index)

    def scale(self, n: int) -> None:
        """Run ``n`` children: more are spawned by :meth:`top_up`, the least busy extra ones retire."""
        self.concurrency = n
        active = [c for c in self.children if c.retiring is None and c.killed is None]
        extra = len(active) - self.concurrency
        for c in sorted(active, key=lambda c: (len(c.inflight), -c.index))[:max(extra, 0)]:
            c.retiring = "scale down"

    def reload(self) -> None:
        """Replace every child, each after its current job."""
        for c in self.children:
            if c.retiring is None and c.killed is None:
                c.retiring = "reload"

    def spawn(self, index: int) -> None:
        job_r, job_w = os.pipe()
        out_r, out_w = os.pipe()
        ipc.set_pipe_size(job_w)
        ipc.set_pipe_size(out_w)
        _flush_std()
        close_in_child = [job_w, out_r, *self.fds_to_close()]
        for c in self.children:
            close_in_child += [c.job_w, c.out_r]
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which ends in os._exit
            try:
                # its own process group: killing a child kills what its job started (an ffmpeg…)
                try:
                    os.setpgid(0, 0)
                except OSError:
                    pass
                signal.set_wakeup_fd(-1)
                for fd in close_in_child:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            finally:
                limit = self.cfg.max_memory_per_child
                child_main(self.app, index, job_r, out_w, self.hooks,
                           max_rss=None if limit is None else int(limit * 1024 * 1024))
        try:
            os.setpgid(pid, pid)  # also here: whichever runs first, the group exists before any kill
        except OSError:
            pass  # the child did it already (or is gone)
        os.close(job_r)
        os.close(out_w)
        os.set_blocking(job_w, False)
        os.set_blocking(out_r, False)
        child = Child(index, pid, job_w, out_r)
        self.children.append(child)
        self.sel.register(out_r, selectors.EVENT_READ, ("child", child))

    # -- talking to a child ------------------------------------------------------------------
    def on_readable(self, child: Child) -> None:
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
                for msg in child.reader.outcomes(data):
                    if type(msg) is ipc.Memory:
                        self.on_memory(child, msg)
                    else:
                        self.on_outcome(child, msg)
            except (ValueError, TypeError) as exc:
                log.error("child %d sent a corrupt frame (%s); replacing it", child.index, exc)
                self.kill(child, "corrupt frame")
                return
            if len(data) < _READ:
                return

    def started(self, child: Child) -> None:
        """The child said it is ready."""
        child.ready = True
        child.head_started = self.clock()

    def send(self, child: Child, frame: bytes) -> None:
        child.outbuf += frame
        self.flush(child)

    def broadcast(self, frame: bytes) -> None:
        """Send ``frame`` to every live child."""
        for c in self.children:
            if c.killed is None and c.job_w >= 0:
                self.send(c, frame)

    def flush(self, child: Child) -> None:
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

    # -- ends ------------------------------------------------------------------------------------
    def kill(self, child: Child, why: str) -> None:
        """SIGKILL the child and its process group: subprocesses its job started die with it.

        The child is not reaped yet (a zombie keeps its pid and group), so
        the group cannot be someone else's.
        """
        if child.killed is None:
            child.killed = why
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except OSError:  # no such group (setpgid failed): the child alone
                try:
                    os.kill(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def kill_all(self, why: str) -> list[Delivery]:
        """Kill every child now; returns the deliveries they held (not failed)."""
        held: list[Delivery] = []
        for c in self.children:
            held += c.inflight
            c.inflight.clear()
            self.kill(c, why)
        return held

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
                self.on_exit(child, status)

    def on_exit(self, child: Child, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        if not child.eof:
            if not self.forced:  # (a forced stop read them already, and handed the rest back)
                self.on_readable(child)  # outcomes written before it died still count
            if not child.eof:
                self.sel.unregister(child.out_r)
        if child.writing:
            self.sel.unregister(child.job_w)
        os.close(child.out_r)
        if child.job_w >= 0:
            os.close(child.job_w)
        self.children.remove(child)
        if not child.ready and code == CHILD_BOOT_FAILED:
            self.on_boot_failed(f"child {child.index} could not boot (exit code {code})")
        if child.inflight:
            head = child.inflight.popleft()
            if child.killed and child.killed.startswith("timeout"):
                kind, msg = "timeout", f"job ran longer than its {head.timeout:g}s time limit; its child was killed"
            elif child.killed and child.killed.startswith("cancel"):
                kind, msg = "cancelled", "job cancelled while running; its child was killed"
            else:
                kind = "worker-lost"
                msg = f"child {child.index} (pid {child.pid}) died: {_describe_exit(code)}"
            if not self.forced:
                etype = {"worker-lost": "WorkerLost", "timeout": "TimeLimitExceeded"}.get(kind, "Cancelled")
                self.on_lost(head, kind, etype, msg)
            # the rest of its batch never started: run them elsewhere
            self.put_back(list(child.inflight))
            child.inflight.clear()
        why = child.killed or child.retiring
        cause = (child.retiring or ("timeout" if child.killed and child.killed.startswith("timeout") else child.killed)
                 or ("shutdown" if self.stopping else "lost"))
        self.recycles[cause] += 1
        if why is None and not self.stopping:
            why = _describe_exit(code)
            log.warning("child %d (pid %d) exited unexpectedly: %s", child.index, child.pid, why,
                        extra={"event": "child-lost"})
        elif self.stopping and child.retiring is None:
            # the worker is stopping: nothing replaces it
            log.info("child %d (pid %d) stopped%s", child.index, child.pid, f" ({why})" if why else "",
                     extra={"event": "child-stopped"})
        else:
            log.info("child %d (pid %d) replaced: %s", child.index, child.pid, why,
                     extra={"event": "child-replaced"})

    def kill_cancelled(self, cancelled: set[str]) -> None:
        """Kill children running a cancelled job (as for a time limit); one queued
        behind another in a child is killed when it starts running."""
        for c in self.children:
            if c.inflight and c.killed is None:
                head = c.inflight[0]
                if head.job_id in cancelled:
                    log.info("job %s (%s) cancelled: killing child %d", head.log_id, head.task, c.index,
                             extra={"event": "cancel", "job_id": head.log_id, "task": head.task})
                    self.kill(c, f"cancel of job {head.log_id}")

    def kill_overdue(self, now: float) -> None:
        """Kill children whose job passed its time limit; let retiring idle ones go."""
        for c in self.children:
            if c.inflight and c.killed is None:
                head = c.inflight[0]
                if head.timeout is not None and now - c.head_started > head.timeout:
                    log.warning("job %s (%s) passed its %gs time limit: killing child %d",
                                head.id.decode(), head.task, head.timeout, c.index,
                                extra={"event": "timeout", "job_id": head.log_id, "task": head.task})
                    self.kill(c, f"timeout of job {head.id.decode()}")
        for c in self.children:
            if c.retiring and not c.inflight and c.job_w >= 0 and not c.outbuf:
                self._close_pipe(c)  # the stop request: it exits when it reads EOF

    def _close_pipe(self, c: Child) -> None:
        if c.writing:
            self.sel.unregister(c.job_w)
            c.writing = False
        os.close(c.job_w)
        c.job_w = -1

    def on_memory(self, child: Child, mem: ipc.Memory) -> None:
        """The RSS a child reported after a job: past the limit it runs no other job; when
        ``full`` it has stopped already, and what it held never started: run it elsewhere."""
        limit = self.cfg.max_memory_per_child
        if limit is not None and mem.rss > limit * 1024 * 1024 and child.retiring is None:
            log.info("child %d uses %.0f MB (limit %.0f MB): recycling it after its job", child.index,
                     mem.rss / 1048576, limit, extra={"event": "recycle"})
            child.retiring = "memory"
        if mem.full:
            child.retiring = child.retiring or "memory"
            if child.inflight:
                self.put_back(list(child.inflight))
                child.inflight.clear()

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

    def stop_all(self, wait: float = 10.0) -> None:
        """Close every pipe (children exit at EOF), wait up to ``wait`` s, then kill the rest."""
        for c in self.children:
            if c.job_w >= 0:
                self._close_pipe(c)
        deadline = self.clock() + wait
        while self.children and self.clock() < deadline:
            self.reap()
            if self.children:
                self.sel.select(0.05)
        for c in list(self.children):
            self.kill(c, "shutdown")
        while self.children:
            pid, status = os.waitpid(self.children[0].pid, 0)
            self.on_exit(self.children[0], status)


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
