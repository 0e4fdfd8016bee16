"""The app that ``benchmarks/e2e.py`` runs under the real ``backstage-prefork``.

Settings come from the environment (``BENCH_REDIS_URL``, ``BENCH_PREFIX``);
importing this module opens no connection.

Tasks:
    noop   does nothing (measures the worker's own per-job cost).
    cpu    pure-Python loop of ``n`` iterations; e2e.py calibrates ``n`` to ~10 ms.
           With ``BENCH_TRACE_DIR`` set, each child appends ``start end``
           (time.perf_counter_ns, system-wide monotonic) of every ``cpu`` job
           to ``<dir>/<pid>.txt``: one small write per job.
    stamp  records ``time.time()`` as its first statement, then pushes
           ``[enqueue time from the payload, start time]`` onto ``P:stamps``.
"""

from __future__ import annotations

import os
import time

import orjson

from backstage import Backstage

app = Backstage(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
                prefix=os.environ.get("BENCH_PREFIX", "bench"))

STAMPS_SUFFIX = "stamps"
_TRACE_DIR = os.environ.get("BENCH_TRACE_DIR")
_trace_fd: dict[int, int] = {}


def _trace(start: int, end: int) -> None:
    pid = os.getpid()
    fd = _trace_fd.get(pid)
    if fd is None:  # opened after the fork, once per child
        fd = _trace_fd[pid] = os.open(os.path.join(_TRACE_DIR or ".", f"{pid}.txt"),
                                      os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, b"%d %d\n" % (start, end))


def burn(n: int) -> int:
    """The CPU work of the ``cpu`` task; also timed in-process by e2e.py."""
    x = 0
    for i in range(n):
        x += i * i
    return x


@app.task("noop")
def noop(payload: object) -> None:
    return None


@app.task("cpu")
def cpu(payload: dict) -> None:
    start = time.perf_counter_ns()
    burn(payload["n"])
    if _TRACE_DIR:
        _trace(start, time.perf_counter_ns())


@app.task("stamp")
def stamp(payload: dict) -> None:
    started = time.time()
    app.client.redis.rpush(f"{app.prefix}:{STAMPS_SUFFIX}", orjson.dumps([payload["t"], started]))
