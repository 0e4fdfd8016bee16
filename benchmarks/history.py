"""What job history (``--history N``) costs on the no-op drain.

Runs the no-op drain of ``e2e.py`` several times with history off (the
baseline) and on, interleaved in the same run (off, on, off, on, ...), and
prints the median jobs/s of each and the overhead. Goal: under 10 %.

    .venv/bin/python benchmarks/history.py                 # 3 rounds x 50,000 jobs
    .venv/bin/python benchmarks/history.py --jobs 100000 --rounds 5 --json history.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for p in (str(HERE.parent), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from backstage.protocol.keys import Keys  # noqa: E402
from harness import Bench, BenchError, wait_drained, wait_quiet  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

GOAL_PCT = 10.0


def drain(b: Bench, n: int, history: int) -> dict[str, Any]:
    prefix = f"bench-hist-{uuid.uuid4().hex[:8]}"
    keys = Keys(prefix)
    r = b.redis()
    client = b.client(prefix)
    try:
        jobs = [("noop", {"i": i}) for i in range(n)]
        for i in range(0, n, 10_000):
            client.enqueue_many(jobs[i:i + 10_000])
        extra = ("--history", str(history)) if history else ()
        w = b.worker(prefix, *extra)
        w.wait_ready()
        t0 = time.perf_counter()  # from children ready: start-up is the same either way
        t_end = wait_drained(r, keys.stream("default"), w, timeout=max(60.0, n / 1000))
        w.stop()
        records = int(r.xlen(keys.history))
        if history and records < min(n, history) * 0.9:
            raise BenchError(f"history on but only {records} records for {n} jobs")
        if not history and r.exists(keys.history):
            raise BenchError("history off but the stream exists")
        return {"history": history, "jobs_per_s": round(n / (t_end - t0)), "records": records}
    finally:
        for key in r.scan_iter(match=f"{prefix}:*"):
            r.delete(key)
        client.close()
        r.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="job history's cost on the no-op drain")
    p.add_argument("--jobs", type=int, default=50_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--history", type=int, default=100_000, help="--history N of the 'on' runs (default 100000)")
    p.add_argument("-c", "--concurrency", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bshist-"))
    server = RedisServer(tmp / "redis", extra=("--unixsocket", str(tmp / "redis.sock"), "--unixsocketperm", "700"))
    b = Bench("tcp", args.concurrency, tmp, server, tmp / "redis.sock")
    try:
        server.start()
        runs: list[dict[str, Any]] = []
        for i in range(args.rounds):
            for history in (0, args.history):
                wait_quiet(20.0)
                run = drain(b, args.jobs, history)
                runs.append(run)
                print(f"round {i + 1}: history {'on ' if history else 'off'} {run['jobs_per_s']:>7,} jobs/s"
                      f"  ({run['records']} records)", flush=True)
        off = statistics.median(x["jobs_per_s"] for x in runs if not x["history"])
        on = statistics.median(x["jobs_per_s"] for x in runs if x["history"])
        cost = 100 * (off - on) / off
        verdict = "meets" if cost < GOAL_PCT else "MISSES"
        print(f"\nno-op drain of {args.jobs:,} jobs, -c {args.concurrency}: history off {off:,.0f} jobs/s, "
              f"on {on:,.0f} jobs/s (median of {args.rounds}): cost {cost:.1f} % ({verdict} the {GOAL_PCT:g} % goal)")
        if args.json:
            args.json.write_text(json.dumps({"runs": runs, "off": off, "on": on, "cost_pct": round(cost, 1),
                                             "params": vars(args) | {"json": str(args.json)}}, indent=2) + "\n")
        return 0
    except BenchError as exc:
        print(f"history: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        b.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
