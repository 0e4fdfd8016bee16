"""The app the process tests run under the real backstage-prefork.

Every handler appends a JSON line to the list ``P:ledger`` so a test can
check what ran, where and when. Settings come from the environment.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import time

import orjson

from backstage import Backoff, Backstage, Next, Reject, Retry
from backstage.prefork.child import current_job

app = Backstage(os.environ.get("BT_REDIS_URL", "redis://127.0.0.1:6379/0"), prefix=os.environ.get("BT_PREFIX", "bt"))
_hog: list[bytes] = []


def record(kind: str, payload: object, **extra: object) -> None:
    job = current_job()
    entry = {"kind": kind, "payload": payload, "pid": os.getpid(), "t": time.time(),
             "job": job.job_id if job else None, "attempt": job.attempt if job else None, **extra}
    app.client.redis.rpush(f"{app.prefix}:ledger", orjson.dumps(entry))


@app.task("record")
def record_task(p: dict) -> None:
    record("record", p)


@app.task("square")
def square(p: dict) -> None:
    record("square", p, result=p["n"] * p["n"])


@app.task("cpu")
def cpu(p: dict) -> None:
    t0 = time.process_time()
    x = 0
    for i in range(p.get("loops", 300_000)):
        x += i * i
    record("cpu", p, cpu_s=time.process_time() - t0)


@app.task("slow")
def slow(p: dict) -> None:
    record("slow-start", p)
    time.sleep(p.get("s", 0.3))
    record("slow", p)


@app.task("aio")
async def aio(p: dict) -> None:
    await asyncio.sleep(0.01)
    record("aio", p)


@app.task("chain.a")
def chain_a(p: dict) -> Next:
    record("chain.a", p)
    return Next("chain.b", {"step": 2, "id": p["id"]}, delay=p.get("delay", 0.0))


@app.task("chain.b")
def chain_b(p: dict) -> dict:
    record("chain.b", p)
    return {"next": "chain.c", "payload": {"step": 3, "id": p["id"]}, "delay": 0}


@app.task("chain.c")
def chain_c(p: dict) -> None:
    record("chain.c", p)


@app.task("fail", attempts=3, backoff=Backoff.fixed(0.05))
def fail(p: dict) -> None:
    record("fail", p)
    raise ValueError(f"failing on purpose: {p}")


@app.task("retry-once")
def retry_once(p: dict) -> None:
    job = current_job()
    record("retry-once", p)
    if job is not None and job.attempt < 2:
        raise Retry(delay=0.05)


@app.task("reject")
def reject(p: dict) -> None:
    raise Reject("not for us")


@app.task("exit")
def hard_exit(p: dict) -> None:
    record("exit", p)
    os._exit(7)


@app.task("segfault")
def segfault(p: dict) -> None:
    record("segfault", p)
    ctypes.string_at(0)


@app.task("forever", timeout=0.5)
def forever(p: dict) -> None:
    record("forever", p)
    while True:
        pass


@app.task("hog")
def hog(p: dict) -> None:
    _hog.append(b"x" * (p.get("mb", 100) * 1024 * 1024))
    record("hog", p)


@app.task("die-once")
def die_once(p: dict) -> None:
    """Killed with SIGKILL on its first attempt (by the test), fine on the next."""
    job = current_job()
    record("die-once", p)
    if job is not None and job.attempt == 1:
        time.sleep(30)


@app.on_broadcast("cache.clear")
def clear_cache(p: dict) -> None:
    record("broadcast", p)


if os.environ.get("BT_CRON_EVERY_SECOND"):
    app.cron("* * * * * *", "record", {"cron": "second"}, name="every-second")

if os.environ.get("BT_CRON_MINUTELY"):
    app.cron("* * * * *", "record", {"cron": "minute"}, name="minutely")

if os.environ.get("BT_CRON_UNDEFINED"):
    app.cron("@hourly", "report.undefined", name="undefined")

if os.environ.get("BT_BOOT_FAIL"):
    @app.on_child_start
    def broken_boot() -> None:
        raise RuntimeError("database is not reachable (on purpose)")


@app.task("compute", result_ttl=60)
def compute(p: dict) -> dict:
    return {"sum": sum(p["xs"]), "by": os.getpid()}


@app.task("compute.fail", result_ttl=60, attempts=2, backoff=Backoff.fixed(0.05))
def compute_fail(p: dict) -> None:
    raise KeyError(f"missing {p['key']}")


@app.task("compute.slow", result_ttl=60, timeout=0.3)
def compute_slow(p: dict) -> None:
    time.sleep(p.get("s", 5))


@app.task("hop")
def hop(p: dict) -> Next:
    """The next step goes to the queue the payload names."""
    record("hop", p)
    return Next("record", {"from": "hop"}, queue=p["queue"])


@app.task("fuzz")
def fuzz(p: object) -> None:
    """Takes any payload (the fuzz test sends whatever is valid JSON)."""
    record("fuzz", p)


@app.task("gate", timeout=60)
def gate(p: dict) -> dict:
    """Runs until the test sets ``P:gate:<name>`` (at most 30 s): a job that is running for sure."""
    record("gate-start", p)
    key = f"{app.prefix}:gate:{p['name']}"
    deadline = time.monotonic() + 30
    while not app.client.redis.exists(key) and time.monotonic() < deadline:
        time.sleep(0.01)
    record("gate", p)
    return {"opened": p["name"]}
