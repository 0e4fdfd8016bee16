"""Heavy load and mixed fleets (issue 13, items 3, 5, 6, 7, 8, 11, 12, 13).

Every test runs the real ``backstage-prefork`` (app ``apps.hostile``) against
the session's redis-server, with small job counts and short jobs.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import orjson
import psutil
import redis

from backstage import Client
from backstage.protocol.keys import Keys

from .helpers import wait_until
from .workers import pending

APP = "apps.hostile"


def ledger(r: redis.Redis, prefix: str, kind: str | None = None) -> list[dict[str, Any]]:
    out = [orjson.loads(x) for x in r.lrange(f"{prefix}:ledger", 0, -1)]
    return [e for e in out if kind is None or e["kind"] == kind]


def drained(r: redis.Redis, keys: Keys, queue: str = "default") -> bool:
    return r.xlen(keys.stream(queue)) == 0 and pending(r, keys.stream(queue)) == 0


# -- 8: no false alarm ------------------------------------------------------------------------------

def test_a_single_worker_under_load_raises_no_reclaim_alarm(client: Client, r, keys, prefix, start_worker) -> None:
    """Renewal ran while settles were in flight: entries acked a moment ago looked
    "reclaimed by another worker"."""
    w = start_worker("-c", "2", "--idle-timeout", "0.3", app=APP)
    for _ in range(4):
        client.enqueue_many([("h.noop", i) for i in range(5000)])
    wait_until(lambda: drained(r, keys), 60, message=lambda: w.log()[-2000:])
    assert w.stop() == 0
    log = w.log()
    assert "no longer pending for us" not in log and "reclaimed by another worker" not in log, log[-3000:]


# -- 3: orphans do not wait for the backlog ---------------------------------------------------------

def test_a_dead_masters_jobs_jump_the_backlog(client: Client, r, keys, prefix, start_worker) -> None:
    """reclaim() returned while no child was free: a dead master's jobs waited for the whole backlog."""
    dead = start_worker("-c", "1", "--heartbeat-interval", "0.3", app=APP)
    client.enqueue("h.sleep", {"tag": "orphan", "s": 60, "then": 0.01})
    wait_until(lambda: ledger(r, prefix, "start"), 10, message=dead.log)
    dead.cleanup()  # kill -9 of the master and its child: the job stays pending for a dead consumer
    assert pending(r, keys.stream("default")) == 1
    client.enqueue_many([("h.sleep", {"tag": "backlog", "i": i, "s": 0.05}) for i in range(80)])
    w = start_worker("-c", "1", "--idle-timeout", "1", app=APP)
    wait_until(lambda: any(e["payload"]["tag"] == "orphan" for e in ledger(r, prefix, "done")), 30,
               message=lambda: w.log()[-2000:])
    done = [e["payload"].get("i") for e in ledger(r, prefix, "done")]
    # the orphan ran while most of the backlog (4 s of it) still waited
    assert len([i for i in done if i is not None]) < 40, done
    wait_until(lambda: drained(r, keys), 30)
    assert sorted(i for i in (e["payload"].get("i") for e in ledger(r, prefix, "done")) if i is not None) == \
        list(range(80))
    assert w.stop() == 0


# -- 13: other SDKs' running jobs are not taken at our idle timeout ------------------------------------

def test_foreign_consumers_entries_wait_for_the_foreign_idle_timeout(client: Client, r, keys, prefix,
                                                                   start_worker) -> None:
    """A TypeScript worker never renews its running job: reclaiming it after our idle
    timeout ran it twice. Our dead master's job is still recovered at the idle timeout."""
    stream = keys.stream("default")
    dead = start_worker("-c", "1", "--heartbeat-interval", "0.3", app=APP)
    client.enqueue("h.sleep", {"tag": "ours", "s": 60, "then": 0.01})
    wait_until(lambda: ledger(r, prefix, "start"), 10, message=dead.log)
    dead.cleanup()  # our master, dead: its job is recovered after --idle-timeout
    client.enqueue("h.sleep", {"tag": "ts", "s": 0.01})
    got = r.xreadgroup("backstage-workers", "ts-worker-1", {stream: ">"}, count=1)  # a live TS worker's job
    assert got and len(got[0][1]) == 1
    ts_id = got[0][1][0][0]
    w = start_worker("-c", "1", "--idle-timeout", "0.3", "--foreign-idle-timeout", "3", app=APP)

    def done(tag: str) -> list[dict[str, Any]]:
        return [e for e in ledger(r, prefix, "done") if e["payload"]["tag"] == tag]

    wait_until(lambda: done("ours"), 15, message=lambda: w.log()[-2000:])
    owner = r.xpending_range(stream, "backstage-workers", min=ts_id, max=ts_id, count=1)
    idle_ms = owner[0]["time_since_delivered"]
    if idle_ms < 2500:  # (a very slow machine may already be past the foreign timeout: nothing to see then)
        assert owner[0]["consumer"] == b"ts-worker-1" and not done("ts")
    wait_until(lambda: done("ts"), 15, message=lambda: w.log()[-2000:])  # ... and taken once past it
    assert done("ts")[0]["attempt"] == 2 and len(done("ts")) == 1
    wait_until(lambda: drained(r, keys), 10)
    assert w.stop() == 0


# -- 11: other SDKs' broadcast groups are left alone ------------------------------------------------

def test_only_broadcast_groups_of_our_dead_masters_are_removed(client: Client, r, keys, prefix,
                                                             start_worker) -> None:
    r.xgroup_create(keys.broadcast, "broadcast-ts-host-77", id="$", mkstream=True)  # a live TS worker's group
    dead = start_worker("-c", "1", "--heartbeat-interval", "0.3", "--consumer", "ours-dead", app=APP)
    wait_until(lambda: any(g["name"] == b"broadcast-ours-dead" for g in r.xinfo_groups(keys.broadcast)), 10,
               message=dead.log)
    dead.cleanup()  # kill -9: its group stays behind, its heartbeat expires
    w = start_worker("-c", "1", "--heartbeat-interval", "0.3", "--idle-timeout", "0.5", app=APP)

    def groups() -> set[bytes]:
        return {g["name"] for g in r.xinfo_groups(keys.broadcast)}

    wait_until(lambda: b"broadcast-ours-dead" not in groups(), 20, message=lambda: w.log()[-2000:])
    assert b"broadcast-ts-host-77" in groups()
    assert w.stop() == 0
    assert groups() == {b"broadcast-ts-host-77"}  # ours withdrawn on a clean stop, theirs kept


# -- 7: a killed child takes its subprocesses with it --------------------------------------------------

def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_timed_out_childs_subprocesses_die_with_it(client: Client, r, keys, prefix, start_worker) -> None:
    w = start_worker("-c", "1", app=APP)
    client.enqueue("h.fork", {})
    client.enqueue("h.spawn", {})  # runs past its 0.5 s limit; its `sleep 60` must not outlive it
    spawned = wait_until(lambda: ledger(r, prefix, "spawned"), 15, message=lambda: w.log()[-2000:])
    sub = spawned[0]["sub"]
    child = spawned[0]["pid"]
    assert os.getpgid(child) == child != os.getpgid(w.pid)  # the child leads its own process group
    assert psutil.Process(sub).ppid() == child and os.getpgid(sub) == child
    wait_until(lambda: "passed its 0.5s time limit" in w.log(), 10, message=w.log)
    wait_until(lambda: _gone(sub), 10, message=lambda: f"sleep {sub} still runs: {w.log()[-2000:]}")
    fork = ledger(r, prefix, "fork")[0]
    assert "backstage-prefork: child 0" in fork["child_title"]
    assert "backstage-prefork: child" not in fork["grandchild_title"], fork
    assert w.stop() == 0


# -- 5: the memory limit holds after every job ---------------------------------------------------------

def test_memory_limit_is_checked_after_every_job(client: Client, r, keys, prefix, start_worker) -> None:
    """RSS was sampled once a second: a child growing 50 MB per job ran several jobs past the limit."""
    w = start_worker("-c", "1", "--max-memory-per-child", "150", "--prefetch", "3", app=APP)
    client.enqueue_many([("h.grow", {"i": i, "mb": 50}) for i in range(8)])
    wait_until(lambda: drained(r, keys) and len(ledger(r, prefix, "done")) == 8, 30, message=lambda: w.log()[-2000:])
    starts = ledger(r, prefix, "start")
    assert sorted(e["payload"]["i"] for e in starts) == list(range(8))  # each ran once
    limit = 150 * 1024 * 1024
    assert all(e["rss"] <= limit for e in starts), [(e["pid"], e["rss"] >> 20) for e in starts]
    assert len({e["pid"] for e in starts}) >= 3  # replaced again and again
    assert "recycling it after its job" in w.log()
    assert w.stop() == 0


# -- 6: long jobs are not hoarded ------------------------------------------------------------------------

def test_long_jobs_go_to_idle_children_of_any_master(client: Client, r, keys, prefix, start_worker) -> None:
    """Two masters of two children and four long jobs: one master took all four (two running,
    two prefetched) while the other idled. Jobs of h.long have a 30 s time limit: long."""
    masters = [start_worker("-c", "2", "--heartbeat-interval", "0.2", app=APP)
               for _ in range(2)]
    for m in masters:
        m.wait_children(2)
    wait_until(lambda: len(client.workers()) == 2, 10)  # each knows the other is alive
    client.enqueue_many([("h.long", {"i": i, "s": 1.5}) for i in range(4)])
    wait_until(lambda: len(ledger(r, prefix, "done")) == 4, 20, message=lambda: masters[0].log()[-1500:])
    by_master: dict[int, int] = {}
    for e in ledger(r, prefix, "start"):
        by_master[e["master"]] = by_master.get(e["master"], 0) + 1
    assert sorted(by_master.values()) == [2, 2], by_master
    assert sorted(by_master) == sorted(m.pid for m in masters)
    wait_until(lambda: drained(r, keys), 10)
    for m in masters:
        assert m.stop() == 0


# -- 12: unknown tasks in a mixed fleet --------------------------------------------------------------------

def test_unknown_tasks_are_requeued_for_other_workers_then_dead_lettered(client: Client, r, keys, prefix,
                                                                        start_worker) -> None:
    stream = keys.stream("default")
    w = start_worker("-c", "1", "--unknown-task", "requeue", "--unknown-task-hops", "3", app=APP)
    client.enqueue("go.only", {"n": 1})  # no Go worker in this fleet: it hops 3 times, then dead-letters
    wait_until(lambda: r.xlen(keys.dead_letter("default")) == 1, 15, message=lambda: w.log()[-2000:])
    (_, dead), = r.xrange(keys.dead_letter("default"))
    assert dead[b"reason"] == b"unknown-task" and dead[b"unknownTaskHops"] == b"3"
    assert b"requeued 3 times" in dead[b"errorMessage"] and b"go.only" in dead[b"errorMessage"]
    assert dead[b"payload"] == b'{"n":1}'
    # with a Go worker in the fleet (this test, as consumer "go-1") the job reaches it
    client.enqueue("go.only", {"n": 2})
    got = None
    for _ in range(20):
        for _s, entries in r.xreadgroup("backstage-workers", "go-1", {stream: ">"}, count=1, block=500) or []:
            for entry_id, fields in entries:
                r.xack(stream, "backstage-workers", entry_id)
                if fields[b"taskName"] == b"go.only":
                    got = fields
        if got:
            break
    assert got is not None and got[b"payload"] == b'{"n":2}'
    assert r.xlen(keys.dead_letter("default")) == 1
    assert w.stop() == 0
    # the default is unchanged: dead-letter at once
    w2 = start_worker("-c", "1", app=APP)
    client.enqueue("go.only", {"n": 3})
    wait_until(lambda: r.xlen(keys.dead_letter("default")) == 2, 15, message=lambda: w2.log()[-2000:])
    assert b"unknownTaskHops" not in r.xrevrange(keys.dead_letter("default"), count=1)[0][1]
    assert w2.stop() == 0
