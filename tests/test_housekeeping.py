"""Cron, broadcast, presence and remote control, with real masters."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import zoneinfo
from pathlib import Path

import orjson
import pytest
from croniter import croniter

from backstage import Backstage, Client, ConfigError
from backstage.cron import CronEntry

from .helpers import wait_until
from .workers import ledger

FAST = ("--heartbeat-interval", "0.3")


def runs(r, prefix, kind):
    return [e for e in ledger(r, prefix) if e["kind"] == kind]


# -- cron ---------------------------------------------------------------------------------

def test_three_masters_fire_each_tick_exactly_once(client, r, prefix, start_worker):
    env = {"BT_CRON_EVERY_SECOND": "1"}
    masters = [start_worker("-c", "1", *FAST, env=env) for _ in range(3)]
    wait_until(lambda: len({e["job"] for e in runs(r, prefix, "record")}) >= 11, 30,
               message=lambda: masters[0].log()[-1500:])
    for m in masters:
        assert m.stop() == 0
    jobs = [e["job"] for e in runs(r, prefix, "record")]
    ticks = sorted(int(j.rsplit(":", 1)[1]) for j in jobs)
    assert len(jobs) == len(set(jobs)), "a tick fired twice"
    first_ten = ticks[:10]
    assert first_ten == list(range(first_ten[0], first_ten[0] + 10_000, 1000)), "a tick was skipped"
    assert all(j.startswith("cron:every-second:") for j in jobs)


def test_missed_tick_fires_once_on_start(client, r, prefix, start_worker):
    entry = CronEntry("* * * * *", "record", b"{}", name="minutely")
    now = int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)
    latest = entry.latest_at_or_before(now)
    r.set(f"{prefix}:cron:minutely:last", latest - 5 * 60_000)  # a previous run 5 minutes ago
    env = {"BT_CRON_MINUTELY": "1"}
    a = start_worker("-c", "1", env=env)
    wait_until(lambda: runs(r, prefix, "record"), 20, message=lambda: a.log()[-1500:])
    b = start_worker("-c", "1", env=env)  # a second master must not fire it again
    wait_until(lambda: len(client.workers()) == 2, 10)
    client.enqueue("record", {"barrier": True})
    wait_until(lambda: len(runs(r, prefix, "record")) >= 2, 20)
    assert b.stop() == 0 and a.stop() == 0
    fired = [e for e in runs(r, prefix, "record") if e["payload"] == {"cron": "minute"}]
    ticks = {int(e["job"].rsplit(":", 1)[1]) for e in fired}
    # one catch-up (the latest missed tick), not a burst of five; a new minute may add one more
    assert latest in ticks and len(fired) == len(ticks) <= 2


def test_bad_cron_expression_names_it():
    app = Backstage("redis://127.0.0.1:1/0")
    with pytest.raises(ConfigError, match=r"'61 \* \* \* \*'"):
        app.cron("61 * * * *", "t")
    with pytest.raises(ConfigError, match="time zone"):
        app.cron("* * * * *", "t", tz="Mars/Olympus")
    with pytest.raises(ConfigError, match="catch_up"):
        app.cron("* * * * *", "t", catch_up="all")
    app.cron("@hourly", "t")
    with pytest.raises(ConfigError, match="exists"):
        app.cron("@hourly", "t")


@pytest.mark.parametrize("expr,start", [
    ("30 2 * * *", dt.datetime(2026, 3, 7, 12)),   # 02:30 does not exist on 2026-03-08 in New York
    ("30 1 * * *", dt.datetime(2026, 10, 31, 12)),  # 01:30 happens twice on 2026-11-01
    ("0 * * * *", dt.datetime(2026, 11, 1, 0)),
])
def test_dst_transitions_follow_croniter(expr, start):
    tz = zoneinfo.ZoneInfo("America/New_York")
    entry = CronEntry(expr, "t", b"{}", tz="America/New_York", name="dst")
    ours = []
    t = int(start.replace(tzinfo=tz).timestamp() * 1000)
    it = croniter(expr, start.replace(tzinfo=tz))
    for _ in range(6):
        t = entry.next_after(t)
        ours.append(t)
    theirs = [round(it.get_next(float) * 1000) for _ in range(6)]
    assert ours == theirs
    assert all(entry.latest_at_or_before(x) == x for x in ours)


# -- broadcast ----------------------------------------------------------------------------

def test_broadcast_reaches_every_child_and_not_newcomers_history(client, r, prefix, start_worker):
    a = start_worker("-c", "2", *FAST, "--consumer", "m-a")
    b = start_worker("-c", "2", *FAST, "--consumer", "m-b")
    wait_until(lambda: len(client.workers()) == 2, 10)
    pids = {p.pid for w in (a, b) for p in w.wait_children(2)}
    client.broadcast("cache.clear", {"n": 1})
    wait_until(lambda: len(runs(r, prefix, "broadcast")) == 4, 10)
    assert {e["pid"] for e in runs(r, prefix, "broadcast")} == pids
    c = start_worker("-c", "2", *FAST, "--consumer", "m-c")
    wait_until(lambda: len(client.workers()) == 3, 10)
    c.wait_children(2)
    client.broadcast("cache.clear", {"n": 2})
    wait_until(lambda: len([e for e in runs(r, prefix, "broadcast") if e["payload"]["n"] == 2]) == 6, 10)
    assert len([e for e in runs(r, prefix, "broadcast") if e["payload"]["n"] == 1]) == 4  # no replay


def test_broadcast_groups_of_dead_workers_are_removed(client, r, keys, start_worker):
    a = start_worker("-c", "1", *FAST, "--consumer", "m-dead", "--idle-timeout", "1")
    wait_until(lambda: len(client.workers()) == 1, 10)
    a.kill()
    b = start_worker("-c", "1", *FAST, "--consumer", "m-live", "--idle-timeout", "1")
    wait_until(lambda: [g["name"] for g in r.xinfo_groups(keys.broadcast)] == [b"broadcast-m-live"], 15)
    assert b.stop() == 0
    assert r.xinfo_groups(keys.broadcast) == []  # a clean exit removes its own group


# -- presence and remote control -------------------------------------------------------------

def test_ping_workers_and_expiry(client, r, start_worker):
    a = start_worker("-c", "2", *FAST, "--consumer", "m-a")
    b = start_worker("-c", "1", *FAST, "--consumer", "m-b")
    wait_until(lambda: len(client.workers()) == 2, 10)
    answers = client.control("ping")
    assert sorted(x["consumer"] for x in answers) == ["m-a", "m-b"]
    by = {x["consumer"]: x for x in answers}
    assert by["m-a"]["concurrency"] == 2 and by["m-a"]["pid"] == a.pid
    assert by["m-a"]["queues"] == ["urgent", "default", "low"] and by["m-a"]["rss"] > 0
    b.kill()
    wait_until(lambda: [w["consumer"] for w in client.workers()] == ["m-a"], 5)  # heartbeat expired
    assert [x["consumer"] for x in client.control("ping", timeout=1)] == ["m-a"]


def test_remote_shutdown_is_graceful(client, start_worker):
    a = start_worker("-c", "1", *FAST, "--consumer", "m-a")
    b = start_worker("-c", "1", *FAST, "--consumer", "m-b")
    wait_until(lambda: len(client.workers()) == 2, 10)
    answers = client.control("shutdown", target="m-a")
    assert [x["consumer"] for x in answers] == ["m-a"]
    assert a.wait(20) == 0
    assert b.proc.poll() is None
    assert [w["consumer"] for w in client.workers()] == ["m-b"]  # withdrew its presence


def test_pause_stops_fetching_that_queue_only(client, r, keys, prefix, start_worker):
    w = start_worker("-c", "2", *FAST, "--consumer", "m-a")
    wait_until(lambda: len(client.workers()) == 1, 10)
    assert client.control("pause", "low")[0]["paused"] == ["low"]
    client.enqueue_many([("record", {"q": "low"})] * 5, priority="low")
    client.enqueue_many([("record", {"q": "default"})] * 5)
    wait_until(lambda: len(runs(r, prefix, "record")) == 5, 10)
    client.enqueue("record", {"q": "barrier"})  # a later default job runs while low still waits
    wait_until(lambda: len(runs(r, prefix, "record")) == 6, 10)
    assert {e["payload"]["q"] for e in runs(r, prefix, "record")} == {"default", "barrier"}
    assert r.xlen(keys.stream("low")) == 5
    # a master started now honours the pause too (it is kept in Redis)
    late = start_worker("-c", "1", *FAST, "--consumer", "m-late")
    wait_until(lambda: len(client.workers()) == 2, 10)
    wait_until(lambda: all(x["paused"] == ["low"] for x in client.workers()), 5)
    assert r.xlen(keys.stream("low")) == 5
    client.control("resume", "low")
    wait_until(lambda: len(runs(r, prefix, "record")) == 11, 10)
    assert w.stop() == 0 and late.stop() == 0


def answered_ping(client, consumer):
    """Wait until ``consumer`` answers control messages: its presence is written just
    before it joins the broadcast stream, so a command sent in between would be missed."""
    wait_until(lambda: consumer in {w["consumer"] for w in client.workers()}, 20)
    wait_until(lambda: client.control("ping", target=consumer, timeout=1.0), 20,
               message=f"{consumer} to answer a ping")


def test_remote_concurrency(client, start_worker):
    w = start_worker("-c", "1", *FAST, "--consumer", "m-a")
    w.wait_children(1)
    answered_ping(client, "m-a")
    answers = client.control("concurrency", 3, timeout=10)  # a loaded machine may take its time
    assert [a["concurrency"] for a in answers] == [3]
    w.wait_children(3)
    client.control("concurrency", 2, timeout=10)
    w.wait_children(2)


def test_workers_jobs_and_job_status(client, r, redis_url, prefix, start_worker):
    w = start_worker("-c", "2", *FAST, "--consumer", "m-jobs")
    job = client.enqueue("gate", {"name": "one"}, result_ttl=60)
    exe = str(Path(sys.executable).with_name("backstage"))
    common = ["--redis-url", redis_url, "--prefix", prefix]

    def listed():
        return [j for wk in client.workers() for j in wk.get("jobs", []) if j["job_id"] == job]

    [running] = wait_until(listed, 20, message=lambda: w.log()[-2000:])
    assert running["task"] == "gate" and running["queue"] == "default" and running["attempt"] == 1
    assert running["deadline"] - running["started_at"] == pytest.approx(60, abs=0.01)
    out = subprocess.run([exe, "workers", "--jobs", *common], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    [row] = [line for line in out.stdout.splitlines() if job in line]
    assert row.split()[:6] == ["m-jobs", str(running["child"]), str(running["pid"]), job, "gate", "default"]
    out = subprocess.run([exe, "job", job, *common], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "status   running" in out.stdout and "on m-jobs child" in out.stdout

    r.set(f"{prefix}:gate:one", 1)
    assert client.result(job, timeout=20) == {"opened": "one"}
    out = subprocess.run([exe, "job", job, *common], capture_output=True, text=True, timeout=30)
    assert "status   done" in out.stdout and 'result   {"opened":"one"}' in out.stdout
    data = orjson.loads(subprocess.run([exe, "job", job, "--json", *common], capture_output=True, text=True,
                                       timeout=30).stdout)
    assert data["status"]["status"] == "done" and data["result"] == {"opened": "one"} and data["running"] == []
    wait_until(lambda: not listed(), 10)
    out = subprocess.run([exe, "workers", "--jobs", *common], capture_output=True, text=True, timeout=30)
    assert "no job running" in out.stdout
    assert w.stop() == 0


def test_cli_workers_and_control(client, redis_url, prefix, start_worker):
    start_worker("-c", "1", *FAST, "--consumer", "m-cli")
    wait_until(lambda: len(client.workers()) == 1, 10)
    exe = str(Path(sys.executable).with_name("backstage"))
    common = ["--redis-url", redis_url, "--prefix", prefix]
    out = subprocess.run([exe, "workers", *common], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "m-cli" in out.stdout and "CONSUMER" in out.stdout
    out = subprocess.run([exe, "control", "ping", "--json", *common], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and orjson.loads(out.stdout)[0]["consumer"] == "m-cli"
    out = subprocess.run([exe, "control", "pause", *common], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "name the queue" in out.stderr
    out = subprocess.run([exe, "control", "ping", "--worker", "nobody", "--timeout", "0.3", *common],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "no live worker named 'nobody'; live workers: m-cli" in out.stderr


def test_control_rejects_bad_commands(client: Client):
    with pytest.raises(ValueError, match="control command"):
        client.control("reboot")
    with pytest.raises(ValueError, match="queue name"):
        client.control("pause", "a:b")
    with pytest.raises(ValueError, match="concurrency"):
        client.control("concurrency", 0)


