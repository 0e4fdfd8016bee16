#!/usr/bin/env python3
"""CPU-bound jobs scale with children: a benchmark that reports, not a test.

    .venv/bin/python benchmarks/scaling.py [--jobs 24] [--loops 800000]

Moved out of ``tests/test_prefork.py`` (speed is not a pass/fail test): runs
the same batch of pure-Python ``cpu`` jobs (``tests/apps/jobs.py``) through
the real ``backstage-prefork`` with ``-c 1`` and then ``-c 2``, against a
private redis-server, and prints the wall time of each batch (first job
start to last job end, from the handlers' own clocks), the CPU seconds the
handlers used, and the ratio of wall time per CPU-second of work,
``-c 2`` over ``-c 1``. A virtual CPU's speed can change between the two
runs; dividing by CPU-seconds cancels that out. On two free cores the ratio
is near 0.5; above ~0.8 the children did not run in parallel (or the
machine was busy: the script prints how much CPU other processes used).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from backstage import Client  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from tests.workers import Worker, ledger  # noqa: E402


def batch(url: str, tmp: Path, concurrency: int, n: int, loops: int) -> tuple[float, float]:
    """(wall time of the batch, CPU seconds its handlers used)."""
    prefix = f"scale{uuid.uuid4().hex[:8]}"
    with Client(url, prefix=prefix) as client:
        client.enqueue_many([("cpu", {"i": i, "loops": loops}) for i in range(n)])
        w = Worker(url, prefix, tmp / f"worker-c{concurrency}.log", "-c", str(concurrency))
        r = client.redis
        try:
            deadline = time.monotonic() + 120
            while len([e for e in ledger(r, prefix) if e["kind"] == "cpu"]) < n:
                if time.monotonic() > deadline or w.proc.poll() is not None:
                    raise SystemExit(f"worker did not finish; log:\n{w.log()[-2000:]}")
                time.sleep(0.02)
            done = [e for e in ledger(r, prefix) if e["kind"] == "cpu"]
            w.stop()
        finally:
            w.cleanup()
    first_start = min(e["t"] - e["cpu_s"] for e in done)
    return max(e["t"] for e in done) - first_start, sum(e["cpu_s"] for e in done)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=24)
    p.add_argument("--loops", type=int, default=800_000)
    args = p.parse_args()
    if (psutil.cpu_count() or 1) < 2:
        print("needs two cores")
        return 0
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        server = RedisServer(tmp / "redis").start()
        try:
            busy0 = psutil.cpu_times()
            wall1, cpu1 = batch(server.url, tmp, 1, args.jobs, args.loops)
            wall2, cpu2 = batch(server.url, tmp, 2, args.jobs, args.loops)
            busy1 = psutil.cpu_times()
        finally:
            server.stop()
    ratio = (wall2 / cpu2) / (wall1 / cpu1)
    used = (busy1.user + busy1.system) - (busy0.user + busy0.system)
    print(f"-c 1: {wall1:.2f} s wall for {cpu1:.2f} CPU-s of handlers")
    print(f"-c 2: {wall2:.2f} s wall for {cpu2:.2f} CPU-s of handlers")
    print(f"-c 2 / -c 1 wall time per CPU-second: {ratio:.2f} (ideal 0.50; machine CPU used meanwhile "
          f"{used:.1f} s, handlers {cpu1 + cpu2:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
