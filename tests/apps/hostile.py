"""App of the heavy-load and mixed-fleet tests (issue 13): handlers that sleep,
grow, spawn subprocesses or fork. Each appends a JSON line to ``P:ledger``."""

from __future__ import annotations

import os
import subprocess
import time

import orjson
import psutil

from backstage import Backstage
from backstage.prefork.child import current_job

app = Backstage(os.environ.get("BT_REDIS_URL", "redis://127.0.0.1:6379/0"), prefix=os.environ.get("BT_PREFIX", "bt"))
_hog: list[bytearray] = []


def record(kind: str, payload: object, **extra: object) -> None:
    job = current_job()
    entry = {"kind": kind, "payload": payload, "pid": os.getpid(), "t": time.time(),
             "attempt": job.attempt if job else None, **extra}
    app.client.redis.rpush(f"{app.prefix}:ledger", orjson.dumps(entry))


@app.task("h.noop")
def noop(p: object) -> None:
    pass


@app.task("h.sleep")
def sleep(p: dict) -> None:
    """Sleeps ``s`` seconds on its first attempt, ``then`` seconds after (a recovered orphan)."""
    job = current_job()
    s = p.get("s", 0.05) if job is None or job.attempt == 1 else p.get("then", 0.01)
    record("start", p)
    time.sleep(s)
    record("done", p)


@app.task("h.long", timeout=30)
def long(p: dict) -> None:
    """A job with a long time limit: the master fetches it only for idle children."""
    record("start", p, master=os.getppid())
    time.sleep(p.get("s", 1.0))
    record("done", p, master=os.getppid())


@app.task("h.grow")
def grow(p: dict) -> None:
    """Keeps ``mb`` more megabytes each job (touched, so they count in the RSS)."""
    record("start", p, rss=psutil.Process().memory_info().rss)
    block = bytearray(p.get("mb", 50) * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    _hog.append(block)
    record("done", p, rss=psutil.Process().memory_info().rss)


@app.task("h.spawn", timeout=0.5)
def spawn(p: dict) -> None:
    """Starts a subprocess (an ffmpeg stand-in), then runs past its time limit."""
    proc = subprocess.Popen(["sleep", "60"])
    record("spawned", p, sub=proc.pid)
    time.sleep(60)


@app.task("h.fork")
def fork(p: dict) -> None:
    """Forks without exec (multiprocessing-style): what title does the grandchild carry?"""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        title = " ".join(psutil.Process().cmdline())
        os.write(w, title.encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r, "rb") as f:
        title = f.read().decode()
    record("fork", p, grandchild_title=title, child_title=" ".join(psutil.Process().cmdline()))
