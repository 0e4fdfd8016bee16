"""App of the TLS/ACL tests, run by backstage-prefork as the least-privilege
worker user. Handlers append "<kind> <job id> <detail>" lines to a ledger
*file*: the worker's Redis user may only touch what a worker needs."""

from __future__ import annotations

import os

from backstage import Backoff, Backstage, Next, Reject
from backstage.prefork.child import current_job

app = Backstage(os.environ["BT_REDIS_URL"], prefix=os.environ["BT_PREFIX"])
LEDGER = os.environ.get("BT_LEDGER", "/dev/null")


def record(kind: str, detail: object = "") -> None:
    job = current_job()
    fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{kind} {job.job_id if job else '-'} {detail}\n".encode())
    finally:
        os.close(fd)


@app.task("acl.ok")
def ok(p: dict) -> None:
    record("ok", p["i"])


@app.task("acl.flaky", attempts=3, backoff=Backoff.fixed(0.05))
def flaky(p: dict) -> None:
    job = current_job()
    record("flaky", job.attempt if job else 0)
    if job is not None and job.attempt < 2:
        raise ValueError("first attempt fails on purpose")


@app.task("acl.fail", attempts=2, backoff=Backoff.fixed(0.05))
def fail(p: dict) -> None:
    record("fail")
    raise ValueError("always fails")


@app.task("acl.reject")
def reject(p: dict) -> None:
    raise Reject("not for us")


@app.task("acl.chain")
def chain(p: dict) -> Next:
    record("chain")
    return Next("acl.ok", {"i": "chained"})


@app.task("acl.result", result_ttl=60)
def result(p: dict) -> dict:
    return {"sum": sum(p["xs"])}


@app.task("acl.enqueue")
def enqueue_more(p: dict) -> None:
    """A handler that produces: the child's own client, as the worker user."""
    app.enqueue("acl.ok", {"i": "from-child"}, dedupe_key=p["key"])


@app.on_broadcast("acl.hello")
def hello(p: dict) -> None:
    record("broadcast", p["n"])


if os.environ.get("BT_CRON"):
    app.cron("* * * * * *", "acl.ok", {"i": "cron"}, name="every-second")
