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
from typing import TYPE_CHECKING, Any, Iterator

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

if TYPE_CHECKING:
    from .master import Master

__all__ = ["Metrics", "MetricsServer"]

log = logging.getLogger("backstage.prefork")

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
JOB_COUNTERS = {
    "processed": "Jobs whose handler returned",
    "failed": "Job executions that failed (error, timeout, lost worker, bad input)",
    "retried": "Failed jobs scheduled for another attempt",
    "dead_lettered": "Jobs moved to a dead-letter stream",
}


class Metrics:
    """Counters of one master; cheap to update, collected on scrape."""

    def __init__(self, master: "Master") -> None:
        self.m = master
        self.jobs: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.hist: dict[str, list[float]] = {}  # task -> [bucket counts..., +Inf count, sum]
        self.recycles: collections.Counter[str] = collections.Counter()
        self.redis_errors: collections.Counter[str] = collections.Counter()

    def job(self, kind: str, task: str, queue: str) -> None:
        self.jobs[(kind, task, queue)] += 1

    def duration(self, task: str, seconds: float) -> None:
        h = self.hist.get(task)
        if h is None:
            h = self.hist[task] = [0.0] * (len(BUCKETS) + 2)
        h[bisect.bisect_left(BUCKETS, seconds)] += 1
        h[-1] += seconds

    # -- prometheus_client collector protocol ---------------------------------------------
    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        for kind, doc in JOB_COUNTERS.items():
            fam = CounterMetricFamily(f"backstage_jobs_{kind}", doc, labels=["task", "queue"])
            for (k, task, queue), n in sorted(self.jobs.items()):
                if k == kind:
                    fam.add_metric([task, queue], n)
            yield fam
        hist = HistogramMetricFamily("backstage_job_duration_seconds", "Handler run time", labels=["task"])
        for task, h in sorted(self.hist.items()):
            cumulative, buckets = 0.0, []
            for bound, n in zip((*BUCKETS, math.inf), h[:-1]):
                cumulative += n
                buckets.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
            hist.add_metric([task], buckets, h[-1])
        yield hist
        depth = GaugeMetricFamily("backstage_queue_length", "Entries in the ready stream", labels=["queue"])
        pel = GaugeMetricFamily("backstage_queue_pending", "Entries delivered and not yet acked (PEL)",
                                labels=["queue"])
        try:
            for queue, length, pending in self.m.broker.queue_sizes():
                depth.add_metric([queue], length)
                pel.add_metric([queue], pending)
        except redis.RedisError:
            self.redis_errors["scrape"] += 1
        yield depth
        yield pel
        children = [c for c in self.m.children if c.killed is None]
        yield GaugeMetricFamily("backstage_children", "Child processes", value=len(children))
        yield GaugeMetricFamily("backstage_children_busy", "Children running a job",
                                value=sum(1 for c in children if c.inflight))
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
        self.registry.register(metrics)  # type: ignore[arg-type]
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
