"""End-to-end demo: enqueue a CPU-heavy batch, run it through backstage-prefork,
print a summary.

Uses $BACKSTAGE_REDIS_URL (or redis://localhost:6379/0) when a Redis answers
there; otherwise starts a throwaway redis-server in a temporary directory.
Keys live under a fresh prefix and are removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent


def reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except (redis.RedisError, ValueError):
        return False


def throwaway_redis(tmp: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit(
            "demo: no Redis answers and redis-server is not installed.\n"
            "  Debian/Ubuntu: sudo apt-get install redis-server\n"
            "  macOS:         brew install redis\n"
            "  Docker:        docker compose up -d"
        )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # AOF on, as the README recommends (and so the worker has no durability warning to give)
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp, "--save", "",
                             "--appendonly", "yes"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not reachable(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit("demo: the throwaway redis-server did not start")
        time.sleep(0.05)
    return proc, url


def bar(done: int, total: int, width: int = 30) -> str:
    filled = int(width * done / max(total, 1))
    return "[" + "#" * filled + "." * (width - filled) + f"] {done}/{total}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=200, help="CPU-heavy jobs in the batch (default 200)")
    ap.add_argument("--span", type=int, default=4000, help="numbers each job tests for primality")
    ap.add_argument("-c", "--concurrency", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()

    server = None
    tmp = tempfile.mkdtemp(prefix="backstage-demo-")
    url = os.environ.get("BACKSTAGE_REDIS_URL", "redis://localhost:6379/0")
    if reachable(url):
        print(f"demo: using the Redis at {url.split('@')[-1]}")
    else:
        server, url = throwaway_redis(tmp)
        print(f"demo: no Redis answered; started a throwaway redis-server at {url}")
    prefix = f"backstage-demo-{uuid.uuid4().hex[:8]}"
    os.environ["DEMO_REDIS_URL"] = url
    os.environ["DEMO_PREFIX"] = prefix
    sys.path.insert(0, str(HERE))
    from demo_app import app  # noqa: E402 - needs the environment above

    worker = None
    r = app.client.redis
    try:
        jobs = [("primes.count", {"lo": i * args.span, "hi": (i + 1) * args.span}) for i in range(args.jobs)]
        t0 = time.perf_counter()
        app.enqueue_many(jobs)
        print(f"demo: enqueued {args.jobs} jobs in {1000 * (time.perf_counter() - t0):.1f} ms "
              f"(queue length {r.xlen(app.keys.stream('default'))})")
        bin_ = Path(sys.executable).with_name("backstage-prefork")
        env = dict(os.environ, PYTHONPATH=str(HERE), BACKSTAGE_REDIS_URL=url)  # the worker must use the same Redis
        start = time.perf_counter()
        worker = subprocess.Popen([str(bin_), "-c", str(args.concurrency), "--log-level", "warning", "demo_app"],
                                  env=env, cwd=str(HERE))
        results = f"{prefix}:results"
        while (done := r.hlen(results)) < args.jobs:
            if worker.poll() is not None:
                print(f"\ndemo: the worker exited with code {worker.returncode}", file=sys.stderr)
                return 1
            print("\r" + bar(done, args.jobs), end="", flush=True)
            time.sleep(0.1)
        wall = time.perf_counter() - start
        print("\r" + bar(args.jobs, args.jobs))
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(30)
        primes = sum(int(v) for v in r.hvals(results))
        print(f"\n  {'jobs':<22}{args.jobs} (+ {args.jobs} chained store steps)")
        print(f"  {'children':<22}{args.concurrency}")
        print(f"  {'wall time':<22}{wall:.2f} s")
        print(f"  {'throughput':<22}{args.jobs / wall:.1f} jobs/s")
        print(f"  {'primes found':<22}{primes} below {args.jobs * args.span}")
        print(f"  {'worker exit code':<22}{code}")
        return 0 if code == 0 else 1
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        keys = list(r.scan_iter(f"{prefix}:*"))
        if keys:
            r.delete(*keys)
        if server is not None:
            server.terminate()
            server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
