"""Job history (--history N): one record per settled attempt, written by
settle.lua in the call that acks the entry; nothing when it is off."""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from backstage import Client
from backstage.ops.history import History, HistoryFilter
from backstage.protocol.keys import Keys

from .helpers import wait_until

BACKSTAGE = str(Path(sys.executable).with_name("backstage"))


def _records(r: redis.Redis, prefix: str) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in r.xrange(f"{prefix}:history")]


def _jobs_cli(url: str, prefix: str, *args: str) -> Any:
    out = subprocess.run([BACKSTAGE, "jobs", "--redis-url", url, "--prefix", prefix, "--json", *args],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return orjson.loads(out.stdout)


def test_history_records_each_outcome(start_worker: Any, client: Client, r: redis.Redis, redis_url: str,
                                      prefix: str) -> None:
    w = start_worker("-c", "2", "--history", "1000")
    ok_id = client.enqueue("record", {"n": 1})
    fail_id = client.enqueue("fail", {"n": 2})  # attempts=3: failed, failed, dead
    chain_id = client.enqueue("chain.a", {"id": 3})
    wait_until(lambda: len(_records(r, prefix)) >= 7 and any(x["outcome"] == "dead" for x in _records(r, prefix)),
               20, message=lambda: f"7 records {_records(r, prefix)}; log:\n{w.log()}")
    recs = _records(r, prefix)
    by_task = collections.defaultdict(list)
    for rec in recs:
        by_task[rec["taskName"]].append(rec)
    assert [x["outcome"] for x in by_task["record"]] == ["ok"]
    ok = by_task["record"][0]
    assert ok["jobId"] == ok_id and ok["queue"] == "default" and ok["attempt"] == "1"
    assert int(ok["durationMs"]) >= 0 and int(ok["finishedAt"]) > 0 and ok["entryId"]
    fails = by_task["fail"]
    assert [(x["outcome"], x["attempt"]) for x in fails] == [("failed", "1"), ("failed", "2"), ("dead", "3")]
    assert all(x["jobId"] == fail_id and x["errorType"] == "ValueError" for x in fails)
    assert "failing on purpose" in fails[-1]["errorMessage"] and fails[-1]["reason"] == "failed"
    assert by_task["chain.a"][0]["jobId"] == chain_id and by_task["chain.a"][0]["outcome"] == "ok"
    assert len(by_task["chain.b"]) == len(by_task["chain.c"]) == 1

    # the CLI searches the same records
    assert [x["attempt"] for x in _jobs_cli(redis_url, prefix, "--task", "fail")] == ["3", "2", "1"]
    assert [x["outcome"] for x in _jobs_cli(redis_url, prefix, "--outcome", "dead")] == ["dead"]
    assert len(_jobs_cli(redis_url, prefix, "--outcome", "failed,dead", "--since", "1h")) == 3
    assert [x["taskName"] for x in _jobs_cli(redis_url, prefix, "--id", ok_id)] == ["record"]
    table = subprocess.run([BACKSTAGE, "jobs", "--redis-url", redis_url, "--prefix", prefix, "--task", "fail"],
                           capture_output=True, text=True, timeout=30)
    assert table.returncode == 0 and "ValueError: failing on purpose" in table.stdout
    bad = subprocess.run([BACKSTAGE, "jobs", "--redis-url", redis_url, "--prefix", prefix, "--outcome", "meh"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "outcome meh" in bad.stderr


def test_history_off_writes_nothing(start_worker: Any, client: Client, r: redis.Redis, prefix: str) -> None:
    w = start_worker("-c", "1")
    client.enqueue("record", {"n": 1})
    client.enqueue("fail", {"n": 2})
    wait_until(lambda: r.exists(f"{prefix}:default:dead-letter"), 20, message=lambda: w.log())
    assert not r.exists(f"{prefix}:history")


def test_history_paging(r: redis.Redis, keys: Keys) -> None:
    for i in range(1200):
        r.xadd(keys.history, {"entryId": f"{i}-0", "jobId": f"j{i}", "taskName": "t" if i % 2 else "u",
                              "queue": "default", "outcome": "ok", "attempt": "1", "durationMs": "1",
                              "finishedAt": "1"})
    h = History(r, keys)
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = h.search(HistoryFilter(task="t"), before=cursor, limit=250)
        seen += [p.job_id for p in page]
        if cursor is None:
            break
    assert seen == [f"j{i}" for i in range(1199, 0, -2)]
    page, cursor = h.search(HistoryFilter(job_id="j3"), limit=10, budget=300)
    assert page == [] and cursor is not None  # the budget ran out before the old record
    page, _ = h.search(HistoryFilter(job_id="j3"), before=cursor, limit=10)
    assert [p.job_id for p in page] == ["j3"]


@pytest.mark.timeout(90)
def test_history_exactly_for_acked_jobs_across_kill(start_worker: Any, client: Client, r: redis.Redis,
                                                     prefix: str) -> None:
    """SIGKILL the worker mid-run: a record exists for exactly the entries
    whose ack committed (the ack deleted the entry), none for the rest; the
    next worker reclaims and runs those, and every entry ends with one record."""
    stream = f"{prefix}:default"
    ids = [r.xadd(stream, {"taskName": "record", "payload": orjson.dumps({"i": i}), "enqueuedAt": "1"}).decode()
           for i in range(600)]
    w = start_worker("-c", "2", "--history", "100000")
    wait_until(lambda: r.xlen(f"{prefix}:history") >= 100, 30, message=lambda: w.log())
    kids = w.children()
    w.signal(signal.SIGKILL)
    w.wait(10)
    for k in kids:
        k.kill()
    left = {e.decode() for e, _ in r.xrange(stream)}
    assert left, "the worker finished everything before the kill: raise the job count"
    acked = set(ids) - left
    recorded = [rec["entryId"] for rec in _records(r, prefix)]
    assert len(recorded) == len(set(recorded))
    assert set(recorded) == acked

    w2 = start_worker("-c", "2", "--history", "100000", "--idle-timeout", "0.5")
    wait_until(lambda: r.xlen(stream) == 0, 30, message=lambda: w2.log())
    recorded = [rec["entryId"] for rec in _records(r, prefix)]
    assert sorted(recorded) == sorted(ids)


def test_settle_records_only_what_this_call_acks(r: redis.Redis, keys: Keys) -> None:
    """settle.lua's 'k' operation: when part of the batch was already acked
    (a worker that took the entries over), only the rest get records."""
    from backstage.prefork.broker import SettleBatch
    from backstage.protocol import scripts

    stream = keys.stream("default")
    ids = [r.xadd(stream, {"taskName": "t", "payload": "1"}) for _ in range(5)]
    r.xgroup_create(stream, "g", id="0")
    r.xreadgroup("g", "me", {stream: ">"})
    settle = r.register_script(scripts.source("settle"))

    def run(entry_ids: list[bytes]) -> None:
        batch = SettleBatch(keys.scheduled, [stream], (keys.history, 1000, ["default"]))
        for i, eid in enumerate(entry_ids):
            batch.ack_recorded(0, eid, b"job-%d" % i, "t", 1, 2, 3)
        settle(keys=batch.keys, args=["g", "me", "1", *batch.argv()])

    run([ids[0], ids[1]])  # the fast path: every id pending
    r.xack(stream, "g", ids[3])  # someone else acked this one
    run([ids[2], ids[3], ids[4], ids[0]])  # ids[0]: already acked by our first call
    recorded = [f[b"entryId"] for _, f in r.xrange(keys.history)]
    assert recorded == [ids[0], ids[1], ids[2], ids[4]]
    assert r.xlen(stream) == 1  # ids[3]: acked elsewhere, not deleted by us


def test_history_setting_and_bad_values() -> None:
    from backstage import Backstage
    from backstage.errors import ConfigError
    from backstage.prefork.cli import build_parser, config_from_args
    from backstage.prefork.config import WorkerConfig

    app = Backstage("redis://127.0.0.1:1/0", history=500)
    cfg, _, _ = config_from_args(build_parser().parse_args(["apps.jobs"]), app)
    assert cfg.history == 500
    cfg, _, _ = config_from_args(build_parser().parse_args(["--history", "0", "apps.jobs"]), app)
    assert cfg.history == 0
    with pytest.raises(ConfigError, match="history"):
        Backstage("redis://127.0.0.1:1/0", history=-1)
    with pytest.raises(ConfigError, match="history"):
        WorkerConfig(history=-5)
