"""Prometheus metrics of one master, served from the master's own loop.

The hot path only bumps plain counters (a dict increment and a bisect per
job); ``prometheus_client`` builds the text format at scrape time from them,
plus gauges read then: queue depth and PEL size from Redis, children busy
and total. The HTTP endpoint is a non-blocking listening socket in the
master's selector: no thread is started, the master stays single-threaded.
"""

from __future__ import annotations

import bisect
import collections
import logging
import math
import selectors
import socket
import time
from typing import Any, Callable, Collection, Iterator, Sequence

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ..ops.inspect import QueueStats

__all__ = ["Metrics", "MetricsServer", "TaskStats"]

log = logging.getLogger("backstage.prefork")

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
JOB_COUNTERS = {
    "processed": "Jobs whose handler returned",
    "failed": "Job executions that failed (error, timeout, lost worker, bad input)",
    "retried": "Jobs scheduled for another attempt (after a failure, or a handler's raise Retry)",
    "dead_lettered": "Jobs moved to a dead-letter stream",
}


class TaskStats:
    """Everything the master counts about one task, updated in place on the hot path."""

    __slots__ = ("avg", "hist", "total", "processed", "failed", "retried", "dead")

    def __init__(self, nqueues: int) -> None:
        self.avg = math.inf  # moving average run time (s); unknown until the first outcome
        self.hist = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.processed = [0] * nqueues
        self.failed = [0] * nqueues
        self.retried = [0] * nqueues
        self.dead = [0] * nqueues

    def observe(self, seconds: float) -> None:
        self.avg = seconds if self.avg == math.inf else self.avg + 0.2 * (seconds - self.avg)
        self.hist[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds


UNKNOWN_TASK = "(unknown)"  # label for names not in the app: input must not blow up cardinality


class Metrics:
    """Counters of one master; cheap to update, collected on scrape.

    Reads the rest of the master only through what it is given: the task
    names, the recycle and Redis error counters (owned by the supervisor and
    the Redis health record), and two callables for the scrape-time gauges.
    """

    def __init__(self, queues: Sequence[str], task_names: Collection[str], *,
                 recycles: collections.Counter[str], redis_errors: collections.Counter[str],
                 queue_stats: Callable[[], list[QueueStats]], children: Callable[[], tuple[int, int]]) -> None:
        self.queues = list(queues)
        self.nqueues = len(queues)
        self.task_names = task_names
        self.tasks: dict[str, TaskStats] = {name: TaskStats(self.nqueues) for name in task_names}
        self.recycles = recycles
        self.redis_errors = redis_errors
        self.queue_stats = queue_stats  # one reading of every subscribed queue (ops.inspect)
        self.children = children  # (children alive, busy)

    def task(self, name: str) -> TaskStats:
        st = self.tasks.get(name)
        if st is None:
            if name not in self.task_names:
                name = UNKNOWN_TASK
            st = self.tasks.get(name)
            if st is None:
                st = self.tasks[name] = TaskStats(self.nqueues)
        return st

    # -- prometheus_client collector protocol ---------------------------------------------
    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        queues = self.queues
        for kind, doc in JOB_COUNTERS.items():
            fam = CounterMetricFamily(f"backstage_jobs_{kind}", doc, labels=["task", "queue"])
            for task, st in sorted(self.tasks.items()):
                counts = {"processed": st.processed, "failed": st.failed, "retried": st.retried,
                          "dead_lettered": st.dead}[kind]
                for qi, n in enumerate(counts):
                    if n:
                        fam.add_metric([task, queues[qi]], n)
            yield fam
        hist = HistogramMetricFamily("backstage_job_duration_seconds", "Handler run time", labels=["task"])
        for task, st in sorted(self.tasks.items()):
            if not any(st.hist):
                continue
            cumulative, buckets = 0, []
            for bound, n in zip((*BUCKETS, math.inf), st.hist):
                cumulative += n
                buckets.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
            hist.add_metric([task], buckets, st.total)
        yield hist
        depth = GaugeMetricFamily("backstage_queue_length", "Entries in the ready stream", labels=["queue"])
        pel = GaugeMetricFamily("backstage_queue_pending", "Entries delivered and not yet acked (PEL)",
                                labels=["queue"])
        try:
            for row in self.queue_stats():
                depth.add_metric([row.queue], row.length)
                pel.add_metric([row.queue], row.pending)
        except redis.RedisError:
            self.redis_errors["scrape"] += 1
        yield depth
        yield pel
        alive, busy = self.children()
        yield GaugeMetricFamily("backstage_children", "Child processes", value=alive)
        yield GaugeMetricFamily("backstage_children_busy", "Children running a job", value=busy)
        rec = CounterMetricFamily("backstage_child_recycles", "Children replaced, by cause", labels=["cause"])
        for cause, n in sorted(self.recycles.items()):
            rec.add_metric([cause], n)
        yield rec
        err = CounterMetricFamily("backstage_redis_errors", "Failed Redis operations", labels=["operation"])
        for op, n in sorted(self.redis_errors.items()):
            err.add_metric([op], n)
        yield err


class MetricsServer:
    """``GET /metrics`` over a non-blocking socket in the master's selector."""

    def __init__(self, metrics: Metrics, sel: selectors.BaseSelector, host: str, port: int) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(metrics)
        self.sel = sel
        self.sock = socket.create_server((host, port), reuse_port=False)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        sel.register(self.sock, selectors.EVENT_READ, ("metrics-accept", None))
        self.conns: dict[socket.socket, tuple[bytearray, float]] = {}

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            self.conns[conn] = (bytearray(), time.monotonic() + 5.0)
            self.sel.register(conn, selectors.EVENT_READ, ("metrics-conn", conn))

    def on_readable(self, conn: socket.socket) -> None:
        buf, deadline = self.conns[conn]
        try:
            data = conn.recv(8192)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        buf += data
        if b"\r\n\r\n" not in buf and len(buf) < 16384:
            return
        line = bytes(buf.split(b"\r\n", 1)[0]).split()
        if len(line) >= 2 and line[0] == b"GET" and line[1].split(b"?")[0] in (b"/metrics", b"/"):
            body = generate_latest(self.registry)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
        else:
            body = b"not found: try /metrics\n"
            head = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
        response = head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
        try:
            conn.setblocking(True)
            conn.settimeout(1.0)  # bounded: a scraper that stops reading cannot stall the master
            conn.sendall(response)
        except OSError:
            pass
        self._close(conn)

    def sweep(self, now: float) -> None:
        """Drop connections that sent no complete request in time."""
        for conn, (_, deadline) in list(self.conns.items()):
            if now > deadline:
                self._close(conn)

    def _close(self, conn: socket.socket) -> None:
        self.conns.pop(conn, None)
        try:
            self.sel.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

    def close(self) -> None:
        for conn in list(self.conns):
            self._close(conn)
        try:
            self.sel.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self.sock.close()
