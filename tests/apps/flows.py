"""The app of the workflow tests (groups and chords, cancellation, progress,
producer-chosen ids) under the real backstage-prefork. Handlers append JSON
lines to ``P:ledger`` so a test can see what ran."""

from __future__ import annotations

import os
import signal
import time

import orjson

from backstage import Backstage, Chord, Group, Next, current_job

app = Backstage(os.environ.get("BT_REDIS_URL", "redis://127.0.0.1:6379/0"), prefix=os.environ.get("BT_PREFIX", "bt"))


def record(kind: str, payload: object, **extra: object) -> None:
    job = current_job()
    entry = {"kind": kind, "payload": payload, "pid": os.getpid(), "t": time.time(),
             "job": job.job_id if job else None, **extra}
    app.client.redis.rpush(f"{app.prefix}:ledger", orjson.dumps(entry))


@app.task("noop")
def noop(p: object) -> object:
    return p


@app.task("record")
def record_task(p: object) -> None:
    record("record", p)


@app.task("double")
def double(p: dict) -> int:
    return int(p["n"]) * 2


@app.task("boom")
def boom(p: object) -> None:
    raise ValueError(f"boom {p}")


@app.task("kill.master")
def kill_master(p: object) -> None:
    """Takes its whole worker down (a poison job): only the reclaimer can dead-letter it."""
    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(10)


@app.task("hold")
def hold(p: dict) -> None:
    """Runs until its key in Redis is deleted (or ``s`` seconds pass)."""
    record("hold-start", p)
    deadline = time.monotonic() + p.get("s", 30)
    while time.monotonic() < deadline and app.client.redis.exists(f"{app.prefix}:hold:{p['k']}"):
        time.sleep(0.02)
    record("hold-end", p)


@app.task("spin", result_ttl=60)
def spin(p: dict) -> None:
    """CPU-bound, never sleeps: only a kill stops it early."""
    record("spin-start", p)
    deadline = time.monotonic() + p.get("s", 60)
    x = 0
    while time.monotonic() < deadline:
        x += 1
    record("spin-end", p)


@app.task("steps", result_ttl=60)
def steps(p: dict) -> str:
    job = current_job()
    assert job is not None
    record("steps-start", p, task=job.task, queue=job.queue, attempt=job.attempt, deadline=job.deadline)
    for i in range(1, 1001):  # a tight loop: the writes are coalesced
        job.progress(i / 1000, f"step {i}")
    while app.client.redis.exists(f"{app.prefix}:hold:{p['k']}"):
        time.sleep(0.02)
    return "finished"


@app.task("merge", result_ttl=60)
def merge(p: dict) -> dict:
    record("merge", p)
    return {"n": len(p["results"]), "failures": len(p["failures"])}


@app.task("fan.out")
def fan_out(p: dict) -> Chord:
    """A chain step that returns a chord: members written with this job's ack."""
    return Chord([("double", {"n": i}) for i in range(p["n"])], callback=("merge", {"from": "fan.out"}))


@app.task("fan.group")
def fan_group(p: dict) -> Group:
    return Group([("record", {"i": i}) for i in range(p["n"])], group_id=p.get("id"))


@app.task("chain.start")
def chain_start(p: dict) -> Next:
    return Next("fan.out", {"n": p["n"]})
