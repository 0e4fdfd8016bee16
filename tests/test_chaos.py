"""Chaos suite: a known set of job ids through a running backstage-prefork,
a fault injected while jobs are in flight, then the ledger is checked:

- every id executed at least once,
- every id acked (gone from its stream) or dead-lettered,
- duplicates only among jobs that were in flight (pending) at the fault,
- nothing left in the PEL, nothing left scheduled.

Redis runs with AOF (appendfsync always) in a server of the test's own, so
it can be SIGKILLed and restarted from its AOF.
"""

from __future__ import annotations

import collections
import signal
import time
from pathlib import Path

import psutil
import pytest
import redis

from backstage import Client
from backstage.protocol.keys import Keys

from .helpers import wait_until
from .redis_server import RedisServer

GROUP = b"backstage-workers"
FAST = ("--idle-timeout", "1", "--grace-period", "10")


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path

    def runs(self, task: str | None = None) -> collections.Counter[str]:
        """How many times each job id started."""
        out: collections.Counter[str] = collections.Counter()
        for job, _pid, name, event in self._lines():
            if event == "start" and (task is None or name == task):
                out[job] += 1
        return out

    def unfinished(self) -> set[str]:
        """Job ids with a run that started and has not ended (yet, or ever)."""
        balance: collections.Counter[str] = collections.Counter()
        for job, _pid, _name, event in self._lines():
            balance[job] += 1 if event == "start" else -1
        return {job for job, n in balance.items() if n > 0}

    def _lines(self) -> list[list[str]]:
        if not self.path.exists():
            return []
        return [line.split() for line in self.path.read_text().splitlines() if line.count(" ") == 3]


def in_flight(r: redis.Redis, keys: Keys, queue: str = "default") -> set[str]:
    """Job ids of every entry pending in the group right now (any consumer)."""
    stream = keys.stream(queue)
    try:
        rows = r.xpending_range(stream, GROUP, min="-", max="+", count=100_000)
    except redis.ResponseError:
        return set()
    ids: set[str] = set()
    for row in rows:
        entry = r.xrange(stream, row["message_id"], row["message_id"])
        if entry:
            ids.add(entry[0][1][b"jobId"].decode())
    return ids


def dead_ids(r: redis.Redis, keys: Keys, queue: str = "default") -> dict[str, bytes]:
    return {f[b"jobId"].decode(): f[b"reason"] for _, f in r.xrange(keys.dead_letter(queue)) if b"jobId" in f}


def quiet(r: redis.Redis, keys: Keys, queue: str = "default") -> bool:
    stream = keys.stream(queue)
    try:
        pel = r.xpending(stream, GROUP)["pending"]
    except redis.ResponseError:
        pel = 0
    return r.xlen(stream) == 0 and pel == 0 and r.zcard(keys.scheduled) == 0


def check_ledger(r: redis.Redis, keys: Keys, ledger: Ledger, ids: list[str], flight: set[str],
                 *, timeout: float = 60, task: str = "chaos.job") -> collections.Counter[str]:
    wait_until(lambda: set(ledger.runs(task)) >= set(ids) and quiet(r, keys), timeout,
               message=lambda: f"all ids run and settled; missing {len(set(ids) - set(ledger.runs(task)))} "
                               f"runs, stream {r.xlen(keys.stream('default'))}, scheduled {r.zcard(keys.scheduled)}")
    runs = ledger.runs(task)
    assert set(runs) == set(ids), "ran something that was never enqueued"
    dupes = {j for j, n in runs.items() if n > 1}
    assert dupes <= flight, f"duplicates outside the in-flight set: {sorted(dupes - flight)[:10]}"
    dead = dead_ids(r, keys)
    assert not (set(dead) & set(ids)), f"healthy jobs dead-lettered: {dead}"
    return runs


@pytest.fixture
def chaos(aof_server: RedisServer, prefix: str, tmp_path: Path, start_worker):
    """(client, r, keys, ledger, start) for a chaos run on the AOF server."""
    c = Client(aof_server.url, prefix=prefix)
    r = aof_server.client()
    ledger = Ledger(tmp_path / "ledger.txt")

    def start(*args: str):
        return start_worker(*FAST, *args, url=aof_server.url, app="apps.chaos", env={"BT_LEDGER": str(ledger.path)})

    yield c, r, Keys(prefix), ledger, start
    r.close()
    c.close()


def enqueue_jobs(c: Client, n: int, s: float = 0.005) -> list[str]:
    return [j for j in c.enqueue_many([("chaos.job", {"i": i, "s": s}) for i in range(n)]) if j]


def test_kill_9_children_repeatedly(chaos):
    c, r, keys, ledger, start = chaos
    ids = enqueue_jobs(c, 600, s=0.01)
    w = start("-c", "2")
    flight: set[str] = set()
    killed = 0
    for round_ in range(5):
        wait_until(lambda: len(ledger.runs()) >= 60 * (round_ + 1), 30)
        flight |= in_flight(r, keys)
        for child in w.children():
            try:
                child.kill()
                killed += 1
            except psutil.NoSuchProcess:
                pass
        # running in a killed child = started and never finished; the PEL alone can miss a job
        # dispatched and already re-settled between two snapshots
        flight |= ledger.unfinished() | in_flight(r, keys)
    check_ledger(r, keys, ledger, ids, flight)
    assert w.proc.poll() is None
    assert killed >= 5
    assert w.log().count("exited unexpectedly: killed by SIGKILL") == killed


def test_kill_9_master_then_another_takes_over(chaos):
    c, r, keys, ledger, start = chaos
    ids = enqueue_jobs(c, 400, s=0.01)
    first = start("-c", "2")
    wait_until(lambda: len(ledger.runs()) >= 100, 30)
    kids = first.children()
    first.kill()  # SIGKILL: no settling, its PEL stays behind
    flight = in_flight(r, keys)
    assert flight, "the dead master left nothing pending"
    for k in kids:  # its children notice the closed pipe and exit
        wait_until(lambda: not k.is_running() or k.status() == psutil.STATUS_ZOMBIE, 10)
    second = start("-c", "2")
    check_ledger(r, keys, ledger, ids, flight)
    assert "reclaimed" in second.log()
    # the dead master's consumer is removed once its entries were reclaimed
    wait_until(lambda: len(r.xinfo_consumers(keys.stream("default"), GROUP)) == 1, 15)


def test_sigterm_then_restart(chaos):
    c, r, keys, ledger, start = chaos
    ids = enqueue_jobs(c, 400, s=0.01)
    w = start("-c", "2")
    wait_until(lambda: len(ledger.runs()) >= 100, 30)
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0
    runs = ledger.runs()
    assert len(runs) < len(ids)
    assert r.xpending(keys.stream("default"), GROUP)["pending"] == 0  # nothing stranded
    start("-c", "2")
    runs = check_ledger(r, keys, ledger, ids, flight=set())
    assert max(runs.values()) == 1  # a graceful stop duplicates nothing


def test_redis_killed_and_restarted_from_aof(chaos, aof_server: RedisServer):
    c, r, keys, ledger, start = chaos
    ids = enqueue_jobs(c, 500, s=0.01)
    w = start("-c", "2")
    wait_until(lambda: len(ledger.runs()) >= 100, 30)
    flight = in_flight(r, keys)
    aof_server.kill()
    time.sleep(0.5)  # the outage itself: jobs keep running, outcomes wait (not a wait-for-condition)
    aof_server.start()
    r2 = aof_server.client()
    flight |= in_flight(r2, keys)
    check_ledger(r2, keys, ledger, ids, flight)
    assert "Redis error" in w.log() and "is back" in w.log()
    assert w.proc.poll() is None
    r2.close()


def test_redis_hangs_past_the_command_timeout(chaos, aof_server: RedisServer):
    c, r, keys, ledger, start = chaos
    ids = enqueue_jobs(c, 300, s=0.01)
    w = start("-c", "2", "--redis-timeout", "0.3")
    wait_until(lambda: len(ledger.runs()) >= 60, 30)
    flight = in_flight(r, keys)
    server = psutil.Process(aof_server.proc.pid)
    server.suspend()  # SIGSTOP: connections stay open, nothing answers
    try:
        wait_until(lambda: "TimeoutError" in w.log(), 10)
    finally:
        server.resume()
    check_ledger(r, keys, ledger, ids, flight)
    assert w.proc.poll() is None


def test_poison_job_dead_letters_after_max_deliveries(chaos):
    c, r, keys, ledger, start = chaos
    poison = c.enqueue("chaos.poison", {})
    ids = enqueue_jobs(c, 200)
    w = start("-c", "2", "--max-deliveries", "3")
    wait_until(lambda: poison in dead_ids(r, keys), 30, message=lambda: w.log()[-2000:])
    assert dead_ids(r, keys)[poison] == b"worker-lost"
    assert ledger.runs("chaos.poison")[poison] == 3
    check_ledger(r, keys, ledger, ids, flight=set())


def test_long_job_is_renewed_and_runs_once(chaos):
    c, r, keys, ledger, start = chaos
    job = c.enqueue("chaos.long", {"s": 3.5})  # 3.5 x the 1 s idle timeout
    a = start("-c", "1")
    b = start("-c", "1")  # a second master whose reclaimer would steal it without renewal
    wait_until(lambda: ledger.runs("chaos.long"), 10)
    wait_until(lambda: quiet(r, keys), 20)
    assert ledger.runs("chaos.long") == {job: 1}
    assert "reclaimed" not in a.log() + b.log()


def test_malformed_entries_mixed_with_good_ones(chaos):
    c, r, keys, ledger, start = chaos
    stream = keys.stream("default")
    ids: list[str] = []
    pipe = r.pipeline(transaction=False)
    bad = 0
    for i in range(1000):
        kind = i % 4
        if kind == 0:
            pipe.xadd(stream, {"payload": "{}", "enqueuedAt": "1"})  # no taskName
        elif kind == 1:
            pipe.xadd(stream, {"taskName": "chaos.job", "payload": "{not json", "enqueuedAt": "1", "jobId": f"bad{i}"})
        elif kind == 2:
            pipe.xadd(stream, {"taskName": "no.such.task", "payload": "{}", "enqueuedAt": "1"})
        else:
            pipe.xadd(stream, {"taskName": "chaos.job", "payload": "{}", "attempt": "zero", "enqueuedAt": "1"})
        bad += 1
        if i % 2:
            ids += enqueue_jobs(c, 1, s=0)
    pipe.execute()
    w = start("-c", "2")
    wait_until(lambda: r.xlen(keys.dead_letter("default")) == bad, 30)
    check_ledger(r, keys, ledger, ids, flight=set())
    reasons = collections.Counter(f[b"reason"] for _, f in r.xrange(keys.dead_letter("default")))
    assert reasons == {b"malformed": 750, b"unknown-task": 250}
    messages = {f[b"errorMessage"] for _, f in r.xrange(keys.dead_letter("default"))}
    assert b"missing field 'taskName'" in messages
    assert any(m.startswith(b"payload is not valid JSON") for m in messages)
    assert w.proc.poll() is None
    assert w.log().count("dead-lettered") >= 1000  # one line per bad entry


def test_two_masters_promote_each_delayed_job_once(chaos):
    c, r, keys, ledger, start = chaos
    due = time.time() + 1.5
    ids = [j for j in c.enqueue_many([("chaos.job", {"i": i, "s": 0}) for i in range(500)], at=due) if j]
    assert r.zcard(keys.scheduled) == 500
    start("-c", "1")
    start("-c", "1")
    runs = check_ledger(r, keys, ledger, ids, flight=set())
    assert max(runs.values()) == 1


def test_group_lost_in_failover_is_recreated(chaos):
    c, r, keys, ledger, start = chaos
    ids = enqueue_jobs(c, 200, s=0.005)
    w = start("-c", "2")
    wait_until(lambda: len(ledger.runs()) >= 50, 30)
    flight = in_flight(r, keys)
    r.xgroup_destroy(keys.stream("default"), GROUP)  # what a failover to a lagging replica can do
    check_ledger(r, keys, ledger, ids, flight | set(ids))  # re-delivery from the start is allowed
    assert w.proc.poll() is None


def test_go_and_ts_entries_run(aof_server: RedisServer, start_worker, tmp_path: Path):
    """The SDK test vectors, written raw into Redis, decode, route and run."""
    import orjson

    vectors = orjson.loads((Path(__file__).parent / "data" / "seed-sdk-entries.json").read_bytes())
    r = aof_server.client()
    for v in vectors["stream_entries"]:
        r.xadd(v["key"], v["fields"])
    past = int(time.time() * 1000) - 1000
    for v in vectors["scheduled_members"]:
        r.zadd("backstage:scheduled", {v["member"]: past})
    w = start_worker("-c", "2", "--queues", "urgent,default,low,reports", url=aof_server.url, app="apps.interop")
    expected = len(vectors["stream_entries"]) + len(vectors["scheduled_members"]) - 1
    wait_until(lambda: r.llen("backstage:ledger") == expected, 20, message=lambda: w.log()[-2000:])
    ran = [orjson.loads(x) for x in r.lrange("backstage:ledger", 0, -1)]
    assert {"task": "report.build", "payload": {"kind": "weekly"}} in ran  # routed to backstage:reports
    assert {"task": "cleanup", "payload": None} in ran
    assert {"task": "payment.charge", "payload": {"id": 7}} in ran
    (_, parked), = r.xrange("backstage:default:dead-letter")
    assert parked[b"reason"] == b"malformed" and parked[b"member"] == b"{this is not json"
    assert r.zcard("backstage:scheduled") == 0
    r.close()



# -- a delivery whose reply is lost (issue 20, issue 13 item 4) ------------------------------
# --idle-timeout 60 throughout: an entry stranded in our pending list would wait a minute for
# the reclaimer, so only the reconcile can explain it running within seconds.
RECONCILE = ("--idle-timeout", "60", "--redis-timeout", "0.3")


def test_fetch_whose_reply_is_lost_in_a_stall_runs_within_seconds(chaos, aof_server: RedisServer):
    """A job stops redis-server (SIGSTOP) as it ends, so the master's next round trip
    (its settle and a fetch) reaches a server that runs it only after the master gave up
    on the reply: the fetched entries are pending for us, unseen. After SIGCONT they run
    within seconds, each exactly once."""
    c, r, keys, ledger, start = chaos
    stall = c.enqueue("chaos.stall", {"redis_pid": aof_server.proc.pid})
    ids = enqueue_jobs(c, 20)
    w = start("-c", "1", *RECONCILE)
    server = psutil.Process(aof_server.proc.pid)
    try:
        wait_until(lambda: server.status() == psutil.STATUS_STOPPED, 20, message=lambda: w.log()[-2000:])
        wait_until(lambda: "TimeoutError" in w.log(), 10, message=lambda: w.log()[-2000:])
    finally:
        server.resume()
    resumed = time.monotonic()
    runs = check_ledger(r, keys, ledger, ids, flight=set(), timeout=15)
    took = time.monotonic() - resumed
    assert max(runs.values()) == 1, "a job ran twice"
    assert ledger.runs("chaos.stall") == {stall: 1}
    assert "whose delivery reply was lost" in w.log(), w.log()[-3000:]
    assert w.proc.poll() is None
    print(f"every entry settled {took:.2f}s after Redis resumed (idle timeout 60s)")


def test_redis_killed_under_load_ten_times_leaves_nothing_pending(chaos, aof_server: RedisServer):
    """SIGKILL of redis-server and a restart from its AOF, ten times under load: a fetch
    that ran (and reached the AOF) but whose reply died with the connection leaves its
    entries pending for us; each round they are taken back and nothing stays pending."""
    c, r, keys, ledger, start = chaos
    w = start("-c", "2", *RECONCILE)
    flight: set[str] = set()
    ids: list[str] = []
    for round_ in range(10):
        batch = enqueue_jobs(c, 30, s=0.002)
        ids += batch
        wait_until(lambda: len(set(ledger.runs()) & set(batch)) >= 5, 20, message=lambda: w.log()[-2000:])
        flight |= in_flight(r, keys) | ledger.unfinished()
        r.close()
        aof_server.kill()
        aof_server.start()
        r = aof_server.client()
        flight |= in_flight(r, keys)
        check_ledger(r, keys, ledger, ids, flight, timeout=15)
        c.close()
        c = Client(aof_server.url, prefix=keys.prefix)
    assert w.proc.poll() is None
    r.close()
    c.close()
