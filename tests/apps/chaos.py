"""App of the chaos suite. Handlers append "<job id> <pid> <task>" to a
ledger *file* (not Redis: Redis is what the tests break)."""

from __future__ import annotations

import os
import signal
import time

from backstage import Backoff, Backstage
from backstage.prefork.child import current_job

app = Backstage(os.environ.get("BT_REDIS_URL", "redis://127.0.0.1:6379/0"), prefix=os.environ.get("BT_PREFIX", "bt"))
LEDGER = os.environ.get("BT_LEDGER", "/dev/null")


def record(task: str, event: str = "start") -> None:
    job = current_job()
    fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{job.job_id if job else '?'} {os.getpid()} {task} {event}\n".encode())
    finally:
        os.close(fd)


@app.task("chaos.job", attempts=20, backoff=Backoff.fixed(0.1))
def chaos_job(p: dict) -> None:
    record("chaos.job")
    time.sleep(p.get("s", 0.005))
    record("chaos.job", "done")


@app.task("chaos.poison")
def poison(p: dict) -> None:
    record("chaos.poison")
    os.kill(os.getpid(), signal.SIGKILL)


@app.task("chaos.long")
def long_job(p: dict) -> None:
    record("chaos.long")
    time.sleep(p["s"])


@app.task("chaos.stall")
def stall(p: dict) -> None:
    """Stop redis-server (SIGSTOP) the moment this job ends: the master's next
    round trip (this job's settle and a fetch) reaches a server that runs it
    only once the test resumes it, after the master has given up on the reply."""
    record("chaos.stall")
    os.kill(int(p["redis_pid"]), signal.SIGSTOP)
