"""Cancellation through the real worker: queued, scheduled, running (CPU-bound),
on another master, a chord; and the ``backstage cancel`` command."""

from __future__ import annotations

import orjson
import psutil

from backstage.ops.cli import main as cli_main

from .helpers import wait_until


def ledger(r, keys) -> list[dict]:
    return [orjson.loads(x) for x in r.lrange(f"{keys.prefix}:ledger", 0, -1)]


def ran(r, keys, kind: str, **match) -> list[dict]:
    return [e for e in ledger(r, keys)
            if e["kind"] == kind and all(e["payload"].get(k) == v for k, v in match.items())]


def test_cancel_of_a_queued_job_issued_while_no_worker_runs(client, r, keys, start_worker):
    job = client.enqueue("record", {"n": 1}, job_id="q-1", result_ttl=60)
    assert client.cancel(job) == {"status": "queued", "members": 0}
    assert client.status(job) == "cancelled"
    client.enqueue("record", {"n": 2})
    w = start_worker("-c", "1", app="apps.flows")
    wait_until(lambda: ran(r, keys, "record", n=2), 20, message=lambda: w.log()[-2000:])
    wait_until(lambda: r.zcard(keys.cancels) == 0, 10, message="the cancel carried out")  # and dropped
    assert not ran(r, keys, "record", n=1)
    assert client.status(job) == "cancelled" and not r.exists(keys.cancel(job))
    assert r.xpending(keys.stream("default"), "backstage-workers")["pending"] == 0


def test_cancel_of_a_scheduled_job(client, r, keys, start_worker):
    w = start_worker("-c", "1", app="apps.flows")
    w.wait_children(1)
    job = client.enqueue("record", {"n": 3}, delay=0.5, result_ttl=60, unique=True, job_id="s-3")
    assert client.cancel(job)["status"] == "scheduled"
    client.enqueue("record", {"n": 4}, delay=0.6)
    wait_until(lambda: ran(r, keys, "record", n=4), 20, message=lambda: w.log()[-2000:])
    assert not ran(r, keys, "record", n=3)
    assert r.zcard(keys.scheduled) == 0 and r.zcard(keys.cancels) == 0
    assert client.status(job) == "cancelled" and not r.exists(keys.unique(job))


def test_cancel_of_a_running_cpu_bound_job_kills_its_child(client, r, keys, start_worker):
    w = start_worker("-c", "1", app="apps.flows")
    job = client.enqueue("spin", {"s": 60}, attempts=3)
    [start] = wait_until(lambda: ran(r, keys, "spin-start"), 20, message=lambda: w.log()[-2000:])
    assert client.status(job) == "running"
    client.cancel(job)
    # killed as for a time limit, by the master's next housekeeping tick (0.2 s)
    wait_until(lambda: not psutil.pid_exists(start["pid"]) or psutil.Process(start["pid"]).status() == "zombie",
               1.0, message="the child running the cancelled job gone")
    wait_until(lambda: client.status(job) == "cancelled", 5, message=lambda: w.log()[-2000:])
    w.wait_children(1)  # replaced
    client.enqueue("record", {"n": 5})
    wait_until(lambda: ran(r, keys, "record", n=5), 20)
    assert len(ran(r, keys, "spin-start")) == 1  # not retried
    assert r.xlen(keys.dead_letter("default")) == 0 and r.zcard(keys.scheduled) == 0
    assert "cancelled" in w.log()


def test_cancel_reaches_the_master_that_runs_the_job(client, r, keys, redis_url, start_worker):
    wa = start_worker("-c", "1", "-Q", "qa", app="apps.flows")
    wb = start_worker("-c", "1", "-Q", "qb", app="apps.flows")
    r.set(f"{keys.prefix}:hold:a", 1)
    r.set(f"{keys.prefix}:hold:b", 1)
    ja = client.enqueue("hold", {"k": "a"}, queue="qa", result_ttl=60)
    jb = client.enqueue("hold", {"k": "b"}, queue="qb", result_ttl=60)
    wait_until(lambda: len(ran(r, keys, "hold-start")) == 2, 20, message=lambda: wa.log()[-1000:] + wb.log()[-1000:])
    assert cli_main(["cancel", jb, "--redis-url", redis_url, "--prefix", keys.prefix]) == 0
    wait_until(lambda: client.status(jb) == "cancelled", 5, message=lambda: wb.log()[-2000:])
    assert client.status(ja) == "running"
    r.delete(f"{keys.prefix}:hold:a")
    wait_until(lambda: client.status(ja) == "done", 10)
    assert not ran(r, keys, "hold-end", k="b")
    assert "cancelled" in wb.log() and "cancelled" not in wa.log()


def test_cancel_of_a_chord_cancels_its_pending_members(client, r, keys, start_worker):
    r.set(f"{keys.prefix}:hold:c0", 1)
    cid = client.enqueue_chord([("hold", {"k": "c0"}), ("record", {"n": 6}), ("record", {"n": 7})],
                               callback=("merge", {}), queue="chordq")
    out = client.cancel(cid)
    assert out["members"] == 3
    assert client.group_status(cid)["state"] == "cancelled"
    w = start_worker("-c", "2", "-Q", "chordq,default", app="apps.flows")
    client.enqueue("record", {"n": 8})
    wait_until(lambda: ran(r, keys, "record", n=8), 20, message=lambda: w.log()[-2000:])
    wait_until(lambda: client.group_status(cid)["pending"] == 0, 10)
    assert not ran(r, keys, "record", n=6) and not ran(r, keys, "hold-start") and not ran(r, keys, "merge")
    st = client.group_status(cid)
    assert st["failed"] == 3 and st["state"] == "cancelled"
