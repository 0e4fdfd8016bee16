"""What the optional parts cost: enqueue and the child's per-job path, tracing off and on.

A plain script (not a test). Two measurements, each the best of several
rounds (on a shared machine the slower rounds measure the neighbours), in this process against a private redis-server on a unix socket:

- **enqueue**: ``app.enqueue("noop", {"i": i})`` one call at a time.
- **child**: the real prefork child (``child_main``, forked here) running
  ``noop`` jobs sent in frames of 32, as the master sends fast jobs; the
  figure is wall time per job, pipe round trips included.

Variants: ``off`` (no tracer: the default) and, when this tree has
``backstage.contrib.otel`` and opentelemetry-sdk is installed, ``on``
(``instrument(app)`` with an SDK TracerProvider that samples every span and
exports none). Run it on another tree to compare the base install, e.g.
``PYTHONPATH=/path/to/other/tree python benchmarks/extras_cost.py``.

    .venv/bin/python benchmarks/extras_cost.py            # --rounds 7 --jobs 5000
    .venv/bin/python benchmarks/extras_cost.py --json cost.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # for tests.redis_server; a PYTHONPATH tree still wins for backstage

import orjson  # noqa: E402

import backstage  # noqa: E402
from backstage import Backstage  # noqa: E402
from backstage.prefork import child, ipc  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

BATCH = 32


def _best_ns(samples: list[float], n: int) -> float:
    # the best round: on a shared machine the other rounds measure the neighbours
    return min(samples) / n * 1e9


def bench_enqueue(app: Backstage, jobs: int, rounds: int) -> float:
    client = app.client
    payloads = [{"i": i} for i in range(jobs)]
    enqueue = app.enqueue  # what producers call: the typed-payload and testing checks included
    enqueue("noop", {"warm": 1})
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for p in payloads:
            enqueue("noop", p)
        times.append(time.perf_counter() - t0)
        client.redis.delete(app.keys.stream("default"))
    return _best_ns(times, jobs)


def bench_child(app: Backstage, jobs: int, rounds: int, traced: bool) -> float:
    job_r, job_w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(job_w)
        os.close(out_r)
        child.child_main(app, 0, job_r, out_w, list(app.child_start_hooks))
    os.close(job_r)
    os.close(out_w)
    reader = ipc.FrameReader()

    def read_until(pred: Callable[[list[Any]], bool]) -> None:
        while True:
            data = os.read(out_r, 1 << 16)
            if not data:
                raise RuntimeError("the child died")
            for msg in reader.feed(data):
                if pred(msg):
                    return

    read_until(lambda m: m[0] == "ready")
    payload = b'{"i":1}'
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    seq = 0
    times = []
    try:
        for _ in range(rounds + 1):  # the first round warms up
            t0 = time.perf_counter()
            for _ in range(jobs // BATCH):
                meta = []
                for _ in range(BATCH):
                    seq += 1
                    meta.append((seq, "noop", f"j{seq}", 1, len(payload), False))
                if traced:  # what the master sends while tracing is on
                    frame = ipc.pack_jobs(ipc.TRACED_JOBS, [meta, [["default", tp]] * BATCH], [payload] * BATCH)
                else:
                    frame = ipc.pack_jobs(ipc.JOBS, meta, [payload] * BATCH)
                ipc.write_all(job_w, frame)
                last = seq
                read_until(lambda msg, last=last: msg[0] in ("ok", "err") and msg[1] == last)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(job_w)
        os.waitpid(pid, 0)
        os.close(out_r)
    return _best_ns(times[1:], (jobs // BATCH) * BATCH)


def make_app(url: str) -> Backstage:
    app = Backstage(url, prefix="cost")

    @app.task("noop")
    def noop(p: Any) -> None:
        return None

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()
    tree = str(Path(backstage.__file__).resolve().parent.parent)
    out: dict[str, Any] = {"tree": tree, "jobs": args.jobs, "rounds": args.rounds}
    with tempfile.TemporaryDirectory() as tmp:
        sock = Path(tmp) / "redis.sock"
        server = RedisServer(Path(tmp) / "redis", extra=("--unixsocket", str(sock))).start()
        url = f"unix://{sock}"
        try:
            app = make_app(url)
            out["enqueue_off_ns"] = bench_enqueue(app, args.jobs, args.rounds)
            out["child_off_ns"] = bench_child(app, args.jobs, args.rounds, traced=False)
            try:
                if not (Path(backstage.__file__).parent / "contrib" / "otel.py").exists():
                    raise ImportError("this tree has no backstage.contrib.otel")
                from opentelemetry.sdk.trace import TracerProvider

                from backstage.contrib import otel
            except ImportError:
                print("tracing variant skipped: no backstage.contrib.otel here or no opentelemetry-sdk")
            else:
                traced_app = make_app(url)
                otel.instrument(traced_app, tracer_provider=TracerProvider())
                try:
                    out["enqueue_on_ns"] = bench_enqueue(traced_app, args.jobs, args.rounds)
                    out["child_on_ns"] = bench_child(traced_app, args.jobs, args.rounds, traced=True)
                finally:
                    otel.uninstrument()
        finally:
            server.stop()
    print(f"backstage from {tree}  ({args.jobs} jobs x {args.rounds} rounds, best round)")
    for key in ("enqueue", "child"):
        line = f"  {key:8s} off {out[key + '_off_ns'] / 1000:7.2f} us/job"
        if key + "_on_ns" in out:
            line += f"   on {out[key + '_on_ns'] / 1000:7.2f} us/job"
        print(line)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
