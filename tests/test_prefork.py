"""The real backstage-prefork, as a subprocess, against a real redis-server."""

from __future__ import annotations

import re
import signal
import time

import psutil
import pytest

from backstage import Client
from backstage.protocol.keys import Keys

from .helpers import wait_until
from .workers import ledger, pending

GROUP = "backstage-workers"


def kinds(r, prefix, kind):
    return [e for e in ledger(r, prefix) if e["kind"] == kind]


def settled(r, keys: Keys, queues=("urgent", "default", "low")) -> bool:
    return all(r.xlen(keys.stream(q)) == 0 and pending(r, keys.stream(q)) == 0 for q in queues)


def test_n_jobs_in_n_executions_out(client: Client, r, keys, prefix, start_worker):
    ids = client.enqueue_many([("square", {"n": i}) for i in range(500)])
    w = start_worker("-c", "2")
    wait_until(lambda: len(kinds(r, prefix, "square")) == 500, 30, message=lambda: w.log()[-2000:])
    done = kinds(r, prefix, "square")
    assert sorted(e["job"] for e in done) == sorted(ids)
    assert all(e["result"] == e["payload"]["n"] ** 2 for e in done)
    wait_until(lambda: settled(r, keys), 10)
    assert len({e["pid"] for e in done}) == 2  # both children worked
    assert w.stop() == 0
    assert "master stopped: processed=500 failed=0 exit code 0" in w.log()


def test_connections_dropped_by_redis_while_idle_are_replaced(client, r, keys, prefix, start_worker):
    """CLIENT KILL of every worker connection while nothing is in flight: the
    master notices the closed sockets, reconnects, and neither dies nor spins."""
    client.enqueue("record", {"i": 0})
    w = start_worker("-c", "1")
    wait_until(lambda: len(kinds(r, prefix, "record")) == 1 and settled(r, keys), 20, message=lambda: w.log()[-2000:])
    killed = r.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 2  # at least the master's exchange and XREAD connections
    master = psutil.Process(w.pid)
    cpu0 = sum(master.cpu_times()[:2])
    time.sleep(1.0)  # measuring, not waiting: a master spinning on a dead socket burns this whole second
    assert sum(master.cpu_times()[:2]) - cpu0 < 0.5
    client.enqueue("record", {"i": 1})
    wait_until(lambda: len(kinds(r, prefix, "record")) == 2 and settled(r, keys), 20, message=lambda: w.log()[-2000:])
    assert w.stop() == 0
    assert "Traceback" not in w.log()


def test_idle_children_take_turns(client, r, keys, prefix, start_worker):
    """Jobs that arrive one at a time go to the child served longest ago,
    not always to the first idle one."""
    w = start_worker("-c", "3")
    w.wait_children(3)
    for i in range(6):
        client.enqueue("record", {"i": i})
        wait_until(lambda: len(kinds(r, prefix, "record")) == i + 1, 20, message=lambda: w.log()[-2000:])
    pids = [e["pid"] for e in kinds(r, prefix, "record")]
    assert len(set(pids[:3])) == 3 and len(set(pids[3:])) == 3, pids


def test_async_handlers_run(client, r, prefix, start_worker):
    client.enqueue_many([("aio", {"i": i}) for i in range(20)])
    start_worker("-c", "2")
    wait_until(lambda: len(kinds(r, prefix, "aio")) == 20, 20)


# CPU scaling (-c 2 against -c 1) is a speed figure, not a pass/fail test:
# benchmarks/scaling.py reports it.


def test_strict_priority_urgent_before_low(client, r, prefix, start_worker):
    client.enqueue_many([("record", {"q": "low", "i": i}) for i in range(30)], priority="low")
    client.enqueue_many([("record", {"q": "default", "i": i}) for i in range(30)])
    client.enqueue_many([("record", {"q": "urgent", "i": i}) for i in range(30)], priority="urgent")
    start_worker("-c", "1")
    wait_until(lambda: len(kinds(r, prefix, "record")) == 90, 20)
    order = [e["payload"]["q"] for e in kinds(r, prefix, "record")]
    assert order == ["urgent"] * 30 + ["default"] * 30 + ["low"] * 30


def test_backpressure_bounds_the_pel(client, r, keys, prefix, start_worker):
    client.enqueue_many([("slow", {"i": i, "s": 0.2}) for i in range(16)])
    w = start_worker("-c", "2", "--prefetch", "1")
    stream = keys.stream("default")
    seen = []
    deadline = time.monotonic() + 30
    while len(kinds(r, prefix, "slow")) < 16 and time.monotonic() < deadline:
        seen.append(pending(r, stream))
        time.sleep(0.02)
    assert len(kinds(r, prefix, "slow")) == 16, w.log()
    assert max(seen) <= 2 * (1 + 1), seen  # concurrency x (running + prefetch)
    assert max(seen) >= 2  # both children were busy


def test_chain_survives_master_kill_between_steps(client, r, keys, prefix, start_worker):
    ids = [f"c{i}" for i in range(5)]
    for i in ids:
        client.enqueue("chain.a", {"id": i, "delay": 1.0})
    w = start_worker("-c", "2")
    wait_until(lambda: len(kinds(r, prefix, "chain.a")) == 5, 20)
    wait_until(lambda: r.zcard(keys.scheduled) == 5, 10)  # step A settled, B scheduled
    w.kill()
    assert kinds(r, prefix, "chain.b") == []
    start_worker("-c", "2")
    wait_until(lambda: len(kinds(r, prefix, "chain.c")) == 5, 20)
    for step in ("chain.a", "chain.b", "chain.c"):
        assert sorted(e["payload"]["id"] for e in kinds(r, prefix, step)) == ids, step
    wait_until(lambda: settled(r, keys), 10)


def test_failures_retry_then_dead_letter(client, r, keys, prefix, start_worker):
    client.enqueue("fail", {"x": 1})
    client.enqueue("retry-once", {"x": 2})
    client.enqueue("reject", {"x": 3})
    w = start_worker("-c", "2")
    dlq = keys.dead_letter("default")
    wait_until(lambda: r.xlen(dlq) == 2, 20, message=lambda: w.log()[-2000:])
    wait_until(lambda: len(kinds(r, prefix, "retry-once")) == 2, 10)
    assert len(kinds(r, prefix, "fail")) == 3  # attempts=3
    dead = {f[b"taskName"]: f for _, f in r.xrange(dlq)}
    assert dead[b"fail"][b"reason"] == b"failed"
    assert dead[b"fail"][b"errorType"] == b"ValueError"
    assert b"failing on purpose" in dead[b"fail"][b"errorMessage"]
    assert b"Traceback" in dead[b"fail"][b"traceback"]
    assert dead[b"fail"][b"deliveryCount"] == b"3"
    assert dead[b"reject"][b"errorMessage"] == b"not for us"
    assert dead[b"reject"][b"queue"] == keys.stream("default").encode()
    wait_until(lambda: settled(r, keys), 10)


@pytest.mark.parametrize("task", ["exit", "segfault"])
def test_crashing_child_is_replaced_and_job_dead_lettered(task, client, r, keys, prefix, start_worker):
    client.enqueue(task, {"t": task})
    client.enqueue_many([("record", {"i": i}) for i in range(20)])
    w = start_worker("-c", "2", "--max-deliveries", "3")
    dlq = keys.dead_letter("default")
    wait_until(lambda: r.xlen(dlq) == 1, 30, message=lambda: w.log()[-3000:])
    (_, f), = r.xrange(dlq)
    assert f[b"reason"] == b"worker-lost"
    assert f[b"deliveryCount"] == b"3"
    assert len(kinds(r, prefix, task)) == 3
    wait_until(lambda: len(kinds(r, prefix, "record")) == 20, 10)
    assert w.proc.poll() is None
    w.wait_children(2)
    wait_until(lambda: settled(r, keys), 10)


def test_sigkill_of_child_mid_job_retries_it(client, r, keys, prefix, start_worker):
    client.enqueue("die-once", {"x": 1})
    w = start_worker("-c", "1")
    wait_until(lambda: kinds(r, prefix, "die-once"), 20)
    victim = kinds(r, prefix, "die-once")[0]["pid"]
    psutil.Process(victim).kill()
    wait_until(lambda: len(kinds(r, prefix, "die-once")) == 2, 20, message=lambda: w.log()[-2000:])
    second = kinds(r, prefix, "die-once")[1]
    assert second["attempt"] == 2 and second["pid"] != victim
    wait_until(lambda: settled(r, keys), 10)
    assert "worker-lost" not in {f[b"reason"].decode() for _, f in r.xrange(keys.dead_letter("default"))}


def test_infinite_loop_past_timeout_is_killed(client, r, keys, prefix, start_worker):
    client.enqueue("forever", {})
    client.enqueue_many([("record", {"i": i}) for i in range(5)])
    w = start_worker("-c", "1")
    dlq = keys.dead_letter("default")
    wait_until(lambda: r.xlen(dlq) == 1, 20, message=lambda: w.log()[-2000:])
    (_, f), = r.xrange(dlq)
    assert f[b"reason"] == b"timeout"
    assert "passed its 0.5s time limit" in w.log()
    wait_until(lambda: len(kinds(r, prefix, "record")) == 5, 10)
    assert w.proc.poll() is None


def test_memory_hog_is_recycled_between_jobs(client, r, keys, prefix, start_worker):
    client.enqueue("hog", {"mb": 150})
    w = start_worker("-c", "1", "--max-memory-per-child", "100")
    wait_until(lambda: kinds(r, prefix, "hog"), 20)
    hog_pid = kinds(r, prefix, "hog")[0]["pid"]
    wait_until(lambda: "recycling it after its job" in w.log(), 10)
    client.enqueue("record", {"after": True})
    wait_until(lambda: kinds(r, prefix, "record"), 10)
    assert kinds(r, prefix, "record")[0]["pid"] != hog_pid
    wait_until(lambda: not psutil.pid_exists(hog_pid), 10)  # exited and reaped
    wait_until(lambda: settled(r, keys), 10)


def test_max_tasks_per_child_recycles(client, r, prefix, start_worker):
    client.enqueue_many([("record", {"i": i}) for i in range(12)])
    start_worker("-c", "1", "--max-tasks-per-child", "5")
    wait_until(lambda: len(kinds(r, prefix, "record")) == 12, 20)
    pids = [e["pid"] for e in kinds(r, prefix, "record")]
    assert len(set(pids)) == 3  # 5 + 5 + 2


def test_sigterm_under_load_loses_nothing(client, r, keys, prefix, start_worker):
    ids = client.enqueue_many([("slow", {"i": i, "s": 0.05}) for i in range(200)])
    w = start_worker("-c", "2")
    wait_until(lambda: len(kinds(r, prefix, "slow")) >= 10, 20)
    kids = w.children()
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0, w.log()
    for k in kids:
        assert not k.is_running() or k.status() == psutil.STATUS_ZOMBIE
    done = {e["job"] for e in kinds(r, prefix, "slow")}
    started = {e["job"] for e in kinds(r, prefix, "slow-start")}
    assert started == done  # nothing was left half-run
    stream = keys.stream("default")
    assert pending(r, stream) == 0
    left = {f[b"jobId"].decode() for _, f in r.xrange(stream)}
    assert done | left == set(ids)
    assert not done & left


@pytest.mark.parametrize("how", ["second SIGINT", "SIGQUIT"])
def test_forced_stop_hands_running_jobs_back(client, r, keys, prefix, start_worker, how):
    ids = client.enqueue_many([("slow", {"i": i, "s": 20}) for i in range(2)])
    tracked = client.enqueue("slow", {"i": 2, "s": 20}, result_ttl=60)
    w = start_worker("-c", "2", "--idle-timeout", "600")
    wait_until(lambda: len(kinds(r, prefix, "slow-start")) == 2, 20)
    if how == "SIGQUIT":
        w.signal(signal.SIGQUIT)
    else:
        w.signal(signal.SIGINT)
        wait_until(lambda: "stopping gracefully" in w.log(), 10)
        w.signal(signal.SIGINT)
    assert w.wait(10) == 1
    stream = keys.stream("default")
    # back in the stream, not left pending for a reclaimer that would wait --idle-timeout (600 s)
    assert pending(r, stream) == 0
    back = [f for _, f in r.xrange(stream)]
    assert sorted(f[b"jobId"].decode() for f in back) == sorted([*ids, tracked])
    assert all(b"attempt" not in f for f in back)  # handed back as they were: no attempt used
    assert client.status(tracked) == "queued"
    assert "running jobs go back to their queues" in w.log()
    # so the next worker runs them at once
    client.enqueue("record", {"after": 1})
    w2 = start_worker("-c", "3", "--idle-timeout", "600")
    wait_until(lambda: len(kinds(r, prefix, "slow-start")) == 2 + 3, 20, message=lambda: w2.log()[-2000:])
    assert sorted(e["job"] for e in kinds(r, prefix, "slow-start")[2:]) == sorted([*ids, tracked])
    w2.kill()


def test_sighup_replaces_children_and_ttin_ttou_scale(client, r, prefix, start_worker):
    w = start_worker("-c", "2")
    before = {p.pid for p in w.wait_children(2)}
    w.signal(signal.SIGHUP)
    wait_until(lambda: len(w.children()) == 2 and not ({p.pid for p in w.children()} & before), 10)
    w.signal(signal.SIGTTIN)
    w.wait_children(3)
    w.signal(signal.SIGTTOU)  # (two same signals sent at once may merge into one)
    w.wait_children(2)
    w.signal(signal.SIGTTOU)
    w.wait_children(1)
    client.enqueue("record", {"ok": 1})
    wait_until(lambda: kinds(r, prefix, "record"), 10)
    assert w.stop() == 0


def test_process_titles(client, r, prefix, start_worker):
    w = start_worker("-c", "2", "--queues", "urgent,default")
    kids = w.wait_children(2)
    wait_until(lambda: "master [urgent,default] 0/2 busy" in " ".join(psutil.Process(w.pid).cmdline()), 10)
    wait_until(lambda: all("idle" in " ".join(k.cmdline()) for k in kids), 10)
    client.enqueue("slow", {"s": 2})
    wait_until(lambda: any("running slow" in " ".join(k.cmdline()) for k in kids), 10)
    wait_until(lambda: "1/2 busy" in " ".join(psutil.Process(w.pid).cmdline()), 10)


def test_json_logs_carry_job_fields(client, r, prefix, start_worker):
    import orjson

    job = client.enqueue("fail", {"x": 1})
    w = start_worker("-c", "1", "--log-format", "json")
    wait_until(lambda: "dead-lettered" in w.log(), 20)
    assert w.stop() == 0
    lines = [orjson.loads(line) for line in w.log().splitlines() if line.strip()]
    assert all({"ts", "level", "msg", "pid", "logger"} <= set(x) for x in lines)
    events = {x.get("event") for x in lines}
    assert {"start", "job-failed", "stop", "stopped"} <= events
    failed = [x for x in lines if x.get("event") == "job-failed"]
    assert failed[0]["job_id"] == job and failed[0]["task"] == "fail" and failed[0]["queue"] == "default"
    assert failed[-1]["level"] == "error" and "dead-lettered" in failed[-1]["msg"]


def test_bad_fields_are_dead_lettered_and_the_master_goes_on(client, r, keys, prefix, start_worker):
    """Entries that used to stop the master (a non-UTF-8 jobId), crash the
    frame to a child (an attempt beyond 64 bits) or wedge every settle batch
    (a resultTtl PEXPIRE refuses) are dead-lettered as malformed, naming the field."""
    stream = keys.stream("default")
    base = {"taskName": "record", "payload": "{}", "enqueuedAt": "1"}
    r.xadd(stream, {**base, "jobId": b"\xff\xfe"})
    r.xadd(stream, {**base, "attempt": str(2**70)})
    r.xadd(stream, {**base, "jobId": "ttl", "resultTtl": "9223372036854775000"})
    client.enqueue_many([("record", {"i": i}) for i in range(5)])
    w = start_worker("-c", "1")
    dlq = keys.dead_letter("default")
    wait_until(lambda: r.xlen(dlq) == 3 and len(kinds(r, prefix, "record")) == 5, 20,
               message=lambda: w.log()[-2000:])
    dead = [f for _, f in r.xrange(dlq)]
    assert {f[b"reason"] for f in dead} == {b"malformed"}
    messages = b" | ".join(f[b"errorMessage"] for f in dead)
    for name in (b"'jobId'", b"'attempt'", b"'resultTtl'"):
        assert name in messages, messages
    wait_until(lambda: settled(r, keys), 10)
    assert w.proc.poll() is None
    assert w.stop() == 0
    assert "Traceback" not in w.log()


def test_a_redis_outage_is_one_warning_and_one_recovery_line(tmp_path, prefix, start_worker):
    from .redis_server import RedisServer

    srv = RedisServer(tmp_path / "flaky", aof=True).start()  # (with AOF: no durability warning)
    c = Client(srv.url, prefix=prefix)
    try:
        w = start_worker("-c", "1", "--log-level", "debug", url=srv.url)
        wait_until(lambda: "master started" in w.log(), 20)
        srv.kill()
        # several calls fail while it is away (each shows at debug level only)
        wait_until(lambda: w.log().count("Redis error during") >= 4, 20, message=lambda: w.log()[-2000:])
        srv.start()
        wait_until(lambda: "is back" in w.log(), 20, message=lambda: w.log()[-2000:])
        c.enqueue("record", {"after": 1})
        r2 = srv.client()
        wait_until(lambda: ledger(r2, prefix), 20)
        r2.close()
        assert w.stop() == 0
        lines = w.log().splitlines()
        warnings = [line for line in lines if "WARNING" in line and "Redis" in line]
        assert len(warnings) == 1 and "Redis error during" in warnings[0], warnings
        [back] = [line for line in lines if "is back" in line]
        assert re.search(r"is back \(after [0-9.]+s, [0-9]+ failed calls?\)", back), back
        assert "without AOF" not in w.log()
    finally:
        c.close()
        srv.kill()


def test_start_up_warns_once_about_persistence_and_undefined_cron_tasks(client, r, prefix, start_worker):
    w = start_worker("-c", "1", env={"BT_CRON_UNDEFINED": "1"})  # the session's Redis: --appendonly no
    client.enqueue("record", {"i": 1})
    wait_until(lambda: kinds(r, prefix, "record"), 20)
    assert w.stop() == 0
    log = w.log()
    assert log.count("runs without AOF (appendonly no): a Redis restart loses every job") == 1
    assert "Running Redis for Backstage" in log
    assert log.count("cron undefined enqueues task 'report.undefined', which this app does not define") == 1
