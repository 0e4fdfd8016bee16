"""What the optional parts cost: enqueue and the child's per-job path, tracing off and on.

A plain script (not a test). Two measurements, each the best of several
rounds (on a shared machine the slower rounds measure the neighbours), in this process against a private redis-server on a unix socket:

- **enqueue**: ``app.enqueue("noop", {"i": i})`` one call at a time.
- **child**: the real prefork child (``child_main``, forked here) running
  ``noop`` jobs sent in frames of 32, as the master sends fast jobs; the
  figure is wall time per job, pipe round trips included.

Variants: ``off`` (no tracer: the default) and, when opentelemetry-sdk
is installed, ``on`` (``instrument(app)`` with an SDK TracerProvider that
samples every span and exports none). ``--against TREE`` also loads
``client.py`` and ``prefork/child.py`` of another checkout (e.g. the commit
before these extras) next to this tree's and interleaves their rounds with
ours in the same process, so both see the same machine: ``base`` is that
tree's ``Client.enqueue`` and child.

    .venv/bin/python benchmarks/extras_cost.py            # --rounds 7 --jobs 5000
    .venv/bin/python benchmarks/extras_cost.py --against ../main --json cost.json
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


def bench_enqueue_client(client: Any, app: Backstage, jobs: int) -> float:
    """One round of another tree's ``Client.enqueue``, called as its ``app.enqueue`` did
    (``self.client.enqueue(task, payload, **options)``: no checks of its own)."""
    payloads = [{"i": i} for i in range(jobs)]

    def enqueue(task: str, payload: Any = None, **options: Any) -> Any:
        return app.client.enqueue(task, payload, **options)

    enqueue("noop", {"warm": 1})
    t0 = time.perf_counter()
    for p in payloads:
        enqueue("noop", p)
    took = time.perf_counter() - t0
    client.redis.delete(app.keys.stream("default"))
    return took / jobs * 1e9


def bench_child(app: Backstage, jobs: int, rounds: int, traced: bool, child_mod: Any = child) -> float:
    job_r, job_w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(job_w)
        os.close(out_r)
        child_mod.child_main(app, 0, job_r, out_w, list(app.child_start_hooks))
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


def load_other(tree: str, rel: str, name: str) -> Any:
    """Another tree's module, loaded inside this ``backstage`` package (its
    relative imports resolve to this tree's siblings, which keep their API)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"backstage.{name}", Path(tree) / "backstage" / rel)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


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
    ap.add_argument("--against", metavar="TREE", help="another checkout to interleave with (base install)")
    args = ap.parse_args()
    tree = str(Path(backstage.__file__).resolve().parent.parent)
    out: dict[str, Any] = {"tree": tree, "jobs": args.jobs, "rounds": args.rounds}
    with tempfile.TemporaryDirectory() as tmp:
        sock = Path(tmp) / "redis.sock"
        server = RedisServer(Path(tmp) / "redis", extra=("--unixsocket", str(sock))).start()
        url = f"unix://{sock}"
        try:
            app = make_app(url)
            if args.against:
                other_client = load_other(args.against, "client.py", "_base_client")
                other_child = load_other(args.against, "prefork/child.py", "prefork._base_child")
                base_app = make_app(url)
                base_app._client = other_client.Client(url, prefix=base_app.prefix)
                base_enq: list[float] = []
                base_child: list[float] = []
                ours_enq: list[float] = []
                ours_ch: list[float] = []
                for _ in range(args.rounds):  # interleaved: each pair sees the same machine
                    base_enq.append(bench_enqueue_client(base_app._client, base_app, args.jobs))
                    ours_enq.append(bench_enqueue(app, args.jobs, 1))
                    base_child.append(bench_child(base_app, args.jobs, 1, traced=False, child_mod=other_child))
                    ours_ch.append(bench_child(app, args.jobs, 1, traced=False))
                out.update(enqueue_base_ns=min(base_enq), enqueue_off_ns=min(ours_enq),
                           child_base_ns=min(base_child), child_off_ns=min(ours_ch), against=args.against)
            else:
                out["enqueue_off_ns"] = bench_enqueue(app, args.jobs, args.rounds)
                out["child_off_ns"] = bench_child(app, args.jobs, args.rounds, traced=False)
            try:
                from opentelemetry.sdk.trace import TracerProvider

                from backstage.contrib import otel
            except ImportError:
                print("tracing variant skipped: opentelemetry-sdk is not installed")
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
        line = f"  {key:8s}"
        if key + "_base_ns" in out:
            line += f" base {out[key + '_base_ns'] / 1000:7.2f} us/job  "
        line += f" off {out[key + '_off_ns'] / 1000:7.2f} us/job"
        if key + "_on_ns" in out:
            line += f"   on {out[key + '_on_ns'] / 1000:7.2f} us/job"
        print(line)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
