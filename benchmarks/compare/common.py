"""What every system's handlers share, and what the driver needs from them.

Imported by the task modules of all six systems (in the worker processes) and
by ``driver.py``; it needs only ``redis`` (redis-py) and the standard library,
which every per-system virtualenv has.

The handlers report to a *stats* redis-server of their own (``BENCH_STATS_URL``),
a second private server next to the broker, so the broker only carries the
system's own traffic and its CPU use is the system's alone.

Tasks (the same four in every system, each taking one JSON-able dict):

``noop``   counts the job, nothing else. The count is kept in the process and
           a daemon thread started after the fork sends it (INCRBY) every 5 ms
           together with the wall-clock time of the process's first and of its
           latest job; so a job costs the same ~0.2 us in every system instead
           of a Redis round trip. ``BENCH_STATS_DIRECT=1`` sends it per job
           instead (for workers that run each job in a throw-away fork).
``cpu``    runs ``burn(n)`` (pure Python, ~10 ms once calibrated), then one
           pipelined round trip: count, wall and thread-CPU seconds inside
           the handler, end time.
``stamp``  reads ``time.time()`` as its first statement and pushes it with the
           enqueue time carried in the payload (latency).
``ready``  sleeps 50 ms and records its pid (the driver sends these until every
           worker process has run one, so timing starts with a warm worker).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import redis

STATS_URL = os.environ.get("BENCH_STATS_URL", "redis://127.0.0.1:6379/15")
PREFIX = os.environ.get("BENCH_STATS_PREFIX", "bench")
DIRECT = os.environ.get("BENCH_STATS_DIRECT") == "1"
FLUSH_EVERY_S = 0.005


class K:
    """Stats keys under a prefix (one prefix per worker launch)."""

    def __init__(self, prefix: str = PREFIX) -> None:
        self.noop_count = f"{prefix}:noop:count"
        self.noop_first = f"{prefix}:noop:first"   # hash pid -> time.time() of the process's first no-op job
        self.noop_last = f"{prefix}:noop:last"     # hash pid -> time.time() at the end of its latest no-op job
        self.cpu_count = f"{prefix}:cpu:count"
        self.cpu_busy = f"{prefix}:cpu:busy"       # float: seconds (wall) spent inside cpu handlers
        self.cpu_busy_cpu = f"{prefix}:cpu:busy_cpu"  # float: CPU seconds of the handlers' threads in them
        self.cpu_last = f"{prefix}:cpu:last"       # hash pid -> time.time() at the end of its latest cpu job
        self.stamps = f"{prefix}:stamps"           # list of "enqueue_t start_t"
        self.ready = f"{prefix}:ready"             # set of pids that ran a ready job
        self.ready_count = f"{prefix}:ready:count"


def burn(n: int) -> int:
    """The CPU work of the ``cpu`` task (the same loop as benchmarks/bench_app.py)."""
    x = 0
    for i in range(n):
        x += i * i
    return x


class _Stats:
    def __init__(self) -> None:
        self._pid = -1
        self._setup_lock = threading.Lock()
        self.keys = K()

    # -- per process, after the fork -------------------------------------------------
    def _ensure(self) -> None:
        if self._pid == os.getpid():
            return
        with self._setup_lock:
            if self._pid == os.getpid():
                return
            self.r = redis.Redis.from_url(STATS_URL)
            self.lock = threading.Lock()
            self.count = 0
            self.sent = 0
            self.first: float | None = None
            self.first_sent = False
            self.last = 0.0
            if not DIRECT:
                threading.Thread(target=self._flusher, name="bench-stats", daemon=True).start()
            self._pid = os.getpid()

    def _flusher(self) -> None:
        while True:
            time.sleep(FLUSH_EVERY_S)
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the stats server going away ends the benchmark anyway
                time.sleep(0.1)

    def flush(self) -> None:
        with self.lock:
            delta = self.count - self.sent
            first, last, first_sent = self.first, self.last, self.first_sent
            self.sent = self.count
            if first is not None:
                self.first_sent = True
        if not delta:
            return
        pid = os.getpid()
        p = self.r.pipeline(transaction=False)
        if not first_sent:
            p.hset(self.keys.noop_first, pid, repr(first))
        p.hset(self.keys.noop_last, pid, repr(last))
        p.incrby(self.keys.noop_count, delta)
        p.execute()

    # -- the handlers' bodies --------------------------------------------------------
    def noop(self) -> None:
        self._ensure()
        now = time.time()
        with self.lock:
            self.count += 1
            self.last = now
            if self.first is None:
                self.first = now
        if DIRECT:
            self.flush()

    def cpu(self, payload: dict[str, Any]) -> None:
        self._ensure()
        t0, c0 = time.perf_counter(), time.thread_time()
        burn(payload["n"])
        busy, busy_cpu = time.perf_counter() - t0, time.thread_time() - c0
        end = time.time()
        p = self.r.pipeline(transaction=False)
        p.incrbyfloat(self.keys.cpu_busy, busy)
        p.incrbyfloat(self.keys.cpu_busy_cpu, busy_cpu)
        p.hset(self.keys.cpu_last, os.getpid(), repr(end))
        p.incr(self.keys.cpu_count)
        p.execute()

    def stamp(self, payload: dict[str, Any]) -> None:
        started = time.time()
        self._ensure()
        self.r.rpush(self.keys.stamps, f"{payload['t']!r} {started!r}")

    def ready(self) -> None:
        self._ensure()
        time.sleep(0.05)
        p = self.r.pipeline(transaction=False)
        p.sadd(self.keys.ready, os.getpid())
        p.incr(self.keys.ready_count)
        p.execute()


stats = _Stats()
