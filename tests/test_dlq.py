"""`backstage dlq list|show|requeue|purge` as a subprocess against a real redis-server.

Dead-letter entries are written the way the worker writes them
(``wire.dead_letter_fields`` + XADD), plus the shape the Go and TS SDKs write
(six fields only) and the shape promote.lua parks undecodable members in.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from backstage.protocol import wire
from backstage.ops.dlq import DeadLetters, parse_since
from backstage.errors import ConfigError
from backstage.protocol.keys import Keys

from .helpers import wait_until
from .redis_server import free_port

BIN = Path(sys.executable).with_name("backstage")
HOUR = 3_600_000
DAY = 24 * HOUR


def run(*args: str, env: dict[str, str] | None = None, columns: int = 100) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BACKSTAGE_")}
    full_env.update(COLUMNS=str(columns), **(env or {}))
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=60, env=full_env,
                          stdin=subprocess.DEVNULL)


def dlq(redis_url: str, prefix: str, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return run("dlq", *args, "--redis-url", redis_url, "--prefix", prefix, **kw)


def ok_json(out: subprocess.CompletedProcess[str]) -> Any:
    assert out.returncode == 0, out.stderr
    return orjson.loads(out.stdout)


def original(task: str = "order.process", payload: bytes = b'{"id":1}', *, job_id: str | None = None,
             attempt: int = 1, attempts: int | None = None, enqueued_at: int = 1764370000123) -> dict[bytes, bytes]:
    fields = wire.encode_entry(task, payload, enqueued_at=enqueued_at, job_id=job_id, attempt=attempt,
                               attempts=attempts, backoff=wire.Backoff.fixed(2.0) if attempts else None)
    return {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}


def dead(r: redis.Redis, keys: Keys, queue: str, fields: dict[bytes, bytes] | None = None, *,
         reason: str = "failed", error_type: str = "ValueError", error_message: str = "boom",
         traceback: str = "", dead_at: int | None = None, source: str | None = None, deliveries: int = 1) -> str:
    """XADD a dead-letter entry exactly as the worker builds it."""
    dl = wire.dead_letter_fields(fields if fields is not None else original(), original_id="1764370000123-0",
                                 queue_key=source or keys.stream(queue), reason=reason, delivery_count=deliveries,
                                 consumer="host-1", error_type=error_type, error_message=error_message,
                                 traceback=traceback, dead_lettered_at=dead_at)
    return r.xadd(keys.dead_letter(queue), dl).decode()


def other_sdk(r: redis.Redis, keys: Keys, queue: str, task: str = "payment.charge", *,
              dead_at: int = 1764370095000) -> str:
    """The Go/TS SDKs' dead-letter shape: six fields, none of ours."""
    return r.xadd(keys.dead_letter(queue), {
        "taskName": task, "payload": '{"id":7}', "enqueuedAt": "1764370000456",
        "originalId": "1764370000456-0", "deadLetteredAt": str(dead_at), "deliveryCount": "6"}).decode()


def parked(r: redis.Redis, keys: Keys, member: str = "{this is not json") -> str:
    """An undecodable scheduled member as promote.lua parks it."""
    return r.xadd(keys.dead_letter("default"), {
        "taskName": "", "payload": "null", "enqueuedAt": "0", "originalId": "", "deadLetteredAt": str(wire.now_ms()),
        "deliveryCount": "0", "queue": keys.scheduled, "reason": "malformed",
        "errorType": "UndecodableScheduledMember", "errorMessage": "scheduled member is not a JSON object",
        "traceback": "", "consumer": "", "member": member}).decode()


def ids(out: subprocess.CompletedProcess[str]) -> list[str]:
    return [e["id"] for e in ok_json(out)]


# -- list ----------------------------------------------------------------------------
def test_list_table_fits_the_terminal_and_json_has_every_field(redis_url, prefix, r, keys):
    long_msg = "connection reset by peer while talking to the payment gateway " * 3
    a = dead(r, keys, "default", original(job_id="j-a"), error_type="ConnectionError", error_message=long_msg)
    b = other_sdk(r, keys, "default")
    c = parked(r, keys)

    out = dlq(redis_url, prefix, "list", "default", columns=140)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["ID", "TASK", "REASON", "ERROR", "DEAD", "AT", "DELIVERIES"]
    assert all(len(line) <= 140 for line in lines), lines
    row = {line.split()[0]: line for line in lines[1:]}
    assert set(row) == {a, b, c}
    assert "order.process" in row[a] and "failed" in row[a] and "ConnectionError: connection reset" in row[a]
    assert "…" in row[a] and long_msg[-20:] not in row[a]
    assert row[b].split()[1:4] == ["payment.charge", "-", "-"] and row[b].rstrip().endswith("6")
    assert "2025-11-28T22:48:15Z" in row[b]  # deadLetteredAt 1764370095000, UTC
    assert "malformed" in row[c] and "UndecodableScheduled" in row[c]

    narrow = dlq(redis_url, prefix, "list", "default", columns=80)
    assert narrow.returncode == 0
    assert all(len(line) <= 80 for line in narrow.stdout.splitlines()), narrow.stdout
    assert "11-28 22:48" in narrow.stdout and "payment.cha…" in narrow.stdout  # TASK clipped to 12

    data = ok_json(dlq(redis_url, prefix, "list", "default", "--json"))
    assert [e["id"] for e in data] == [a, b, c]
    assert data[0]["errorMessage"] == long_msg and data[0]["jobId"] == "j-a" and data[0]["reason"] == "failed"
    assert data[1] == {"id": b, "taskName": "payment.charge", "payload": '{"id":7}', "enqueuedAt": "1764370000456",
                       "originalId": "1764370000456-0", "deadLetteredAt": "1764370095000", "deliveryCount": "6"}
    assert data[2]["member"] == "{this is not json" and data[2]["taskName"] == ""
    assert all(isinstance(v, str) for e in data for v in e.values())


def test_piped_list_keeps_every_cell_whole(redis_url, prefix, r, keys):
    long_msg = "connection reset by peer while talking to the payment gateway " * 3
    dead(r, keys, "default", original(), error_type="ConnectionError", error_message=long_msg)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKSTAGE_") and k != "COLUMNS"}
    out = subprocess.run([str(BIN), "dlq", "list", "default", "--redis-url", redis_url, "--prefix", prefix],
                         capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert f"ConnectionError: {long_msg.strip()}" in out.stdout and "…" not in out.stdout


def test_list_of_an_empty_dead_letter_stream(redis_url, prefix, r, keys):
    r.xadd(keys.stream("reports"), {"taskName": "t", "payload": "null", "enqueuedAt": "1"})
    out = dlq(redis_url, prefix, "list", "reports")
    assert out.returncode == 0 and out.stdout.strip() == f"no entries in {keys.dead_letter('reports')}"
    assert ok_json(dlq(redis_url, prefix, "list", "reports", "--json")) == []


def test_list_filters_by_task_since_and_limit(redis_url, prefix, r, keys):
    now = wire.now_ms()
    old = dead(r, keys, "default", original("report.build"), dead_at=now - 3 * DAY)
    mid = dead(r, keys, "default", original("order.process"), dead_at=now - 5 * HOUR)
    new1 = dead(r, keys, "default", original("order.process"), dead_at=now - 60_000)
    new2 = dead(r, keys, "default", original("report.build"), dead_at=now - 30_000)
    sdk = other_sdk(r, keys, "default", "order.process", dead_at=now - 2 * DAY)

    assert ids(dlq(redis_url, prefix, "list", "default", "--json", "--task", "order.process")) == [mid, new1, sdk]
    assert ids(dlq(redis_url, prefix, "list", "default", "--json", "--since", "1h")) == [new1, new2]
    assert ids(dlq(redis_url, prefix, "list", "default", "--json", "--since", "60h")) == [mid, new1, new2, sdk]
    assert ids(dlq(redis_url, prefix, "list", "default", "--json", "--since", str(now - 6 * HOUR))) == \
        [mid, new1, new2]
    iso = dt.datetime.fromtimestamp((now - 4 * DAY) / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ids(dlq(redis_url, prefix, "list", "default", "--json", "--since", iso)) == [old, mid, new1, new2, sdk]
    assert ids(dlq(redis_url, prefix, "list", "default", "--json", "--task", "order.process", "--since", "1d")) == \
        [mid, new1]
    assert ids(dlq(redis_url, prefix, "list", "default", "--json", "--limit", "2")) == [old, mid]
    assert ids(dlq(redis_url, prefix, "list", "default", "--json", "--task", "nope")) == []

    table = dlq(redis_url, prefix, "list", "default", "--limit", "2")
    assert table.returncode == 0
    assert [line.split()[0] for line in table.stdout.splitlines()[1:3]] == [old, mid]
    assert "showing the oldest 2 of 5 entries" in table.stdout


def test_list_default_limit_is_50(redis_url, prefix, r, keys):
    pipe = r.pipeline(transaction=False)
    for i in range(60):
        pipe.xadd(keys.dead_letter("bulk"), {"taskName": f"t{i}", "payload": "null", "enqueuedAt": "1"})
    pipe.execute()
    assert len(ids(dlq(redis_url, prefix, "list", "bulk", "--json"))) == 50
    assert len(ids(dlq(redis_url, prefix, "list", "bulk", "--json", "--limit", "100"))) == 60


def test_since_falls_back_to_the_entry_id_without_dead_lettered_at(redis_url, prefix, r, keys):
    stream = keys.dead_letter("legacy")
    old_ms = wire.now_ms() - 10 * DAY
    r.xadd(stream, {"taskName": "t", "payload": "null", "enqueuedAt": "1"}, id=f"{old_ms}-0")
    recent = r.xadd(stream, {"taskName": "t", "payload": "null", "enqueuedAt": "1", "deadLetteredAt": "soon"}).decode()
    assert ids(dlq(redis_url, prefix, "list", "legacy", "--json", "--since", "1d")) == [recent]
    assert ids(dlq(redis_url, prefix, "list", "legacy", "--json", "--since", "11d")) == [f"{old_ms}-0", recent]


# -- show ----------------------------------------------------------------------------
def test_show_prints_every_field_and_the_traceback_as_is(redis_url, prefix, r, keys):
    tb = ('Traceback (most recent call last):\n  File "app.py", line 12, in charge\n'
          '    raise ValueError("card declined")\nValueError: card declined\n')
    eid = dead(r, keys, "payments", original("payment.charge", job_id="j-9", attempt=3, attempts=3),
               error_message="card declined", traceback=tb, deliveries=3)
    out = dlq(redis_url, prefix, "show", "payments", eid)
    assert out.returncode == 0, out.stderr
    assert tb.rstrip("\n") in out.stdout
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["id", eid] and lines[1].split() == ["stream", keys.dead_letter("payments")]
    for name in ("taskName", "payload", "enqueuedAt", "attempts", "backoff", "jobId", "attempt", "originalId",
                 "deadLetteredAt", "deliveryCount", "queue", "reason", "errorType", "errorMessage", "consumer"):
        assert any(line.startswith(name + " ") for line in lines), name
    assert "traceback:" in lines
    assert any(line.split()[:2] == ["jobId", "j-9"] for line in lines)

    data = ok_json(dlq(redis_url, prefix, "show", "payments", eid, "--json"))
    assert data["id"] == eid and data["traceback"] == tb and data["attempt"] == "3"
    assert data["queue"] == keys.stream("payments")


# -- requeue -------------------------------------------------------------------------
def test_requeue_moves_entries_back_as_fresh_jobs(redis_url, prefix, r, keys):
    third = original("payment.charge", job_id="j-3", attempt=3, attempts=3)
    dead(r, keys, "default", third, reason="failed", deliveries=3)
    other_sdk(r, keys, "default")
    # a custom-queue job whose dead letter sits in P:default:dead-letter (Go SDK style routing)
    elsewhere = original("report.build", job_id="j-r")
    dead(r, keys, "default", elsewhere, source=keys.stream("reports"))
    # a `queue` field that is not one of our ready streams falls back to P:default
    foreign = original("x.y", job_id="j-f")
    dead(r, keys, "default", foreign, source="otherprefix:default")
    undecodable = parked(r, keys)

    summary = ok_json(dlq(redis_url, prefix, "requeue", "default", "--json"))
    assert {k: summary[k] for k in ("requeued", "skipped", "missing")} == {"requeued": 4, "skipped": 1, "missing": 0}
    assert [e[0].decode() for e in r.xrange(keys.dead_letter("default"))] == [undecodable]

    back = [f for _, f in r.xrange(keys.stream("default"))]
    expected_third = {k: v for k, v in third.items() if k != b"attempt"}
    assert back[0] == expected_third and b"attempt" not in back[0]
    assert back[0][b"attempts"] == b"3" and back[0][b"backoff"] == third[b"backoff"]
    assert back[1] == {b"taskName": b"payment.charge", b"payload": b'{"id":7}', b"enqueuedAt": b"1764370000456"}
    assert back[2] == foreign
    (_, to_reports), = r.xrange(keys.stream("reports"))
    assert to_reports == elsewhere
    decoded = wire.decode_entry(back[0])
    assert isinstance(decoded, wire.Entry) and decoded.attempt == 1 and decoded.job_id == "j-3"

    again = dlq(redis_url, prefix, "requeue", "default")
    assert again.returncode == 0
    assert "requeued 0 entries" in again.stdout and "skipped 1" in again.stdout and "no taskName" in again.stdout


def test_requeue_batch_is_idempotent_per_entry(r, keys):
    """The client can die after Redis ran a batch: running the same batch again moves nothing twice."""
    a = dead(r, keys, "q", original("a", job_id="a"))
    b = dead(r, keys, "q", original("b", job_id="b"))
    undecodable = r.xadd(keys.dead_letter("q"), {"taskName": "", "payload": "null"}).decode()
    dls = DeadLetters(r, keys, "q")
    target = keys.stream("q")
    assert dls.requeue_batch([(a, target), (undecodable, target), (b, target)]) == ([1, -1, 1], "")
    assert dls.requeue_batch([(a, target), (b, target)]) == ([0, 0], "")
    assert dls.requeue_batch([("1-0", target)]) == ([0], "")
    assert [f[b"jobId"] for _, f in r.xrange(target)] == [b"a", b"b"]
    assert [e[0].decode() for e in r.xrange(keys.dead_letter("q"))] == [undecodable]


def test_requeue_with_filters_and_limit(redis_url, prefix, r, keys):
    now = wire.now_ms()
    for i in range(4):
        dead(r, keys, "q", original("a", job_id=f"a{i}"), dead_at=now - 2 * DAY + i)
    for i in range(4):
        dead(r, keys, "q", original("b", job_id=f"b{i}"), dead_at=now - 1000 + i)

    out = ok_json(dlq(redis_url, prefix, "requeue", "q", "--task", "a", "--limit", "3", "--json"))
    assert out["requeued"] == 3
    out = ok_json(dlq(redis_url, prefix, "requeue", "q", "--since", "1h", "--json"))
    assert out["requeued"] == 4
    assert [f[b"jobId"] for _, f in r.xrange(keys.stream("q"))] == [b"a0", b"a1", b"a2", b"b0", b"b1", b"b2", b"b3"]
    assert [f[b"jobId"] for _, f in r.xrange(keys.dead_letter("q"))] == [b"a3"]

    human = dlq(redis_url, prefix, "requeue", "q", "--task", "zzz")
    assert human.returncode == 0 and "no matching entries to requeue" in human.stdout


def test_requeue_into_a_key_that_is_not_a_stream_stops_and_loses_nothing(redis_url, prefix, r, keys):
    first = dead(r, keys, "q", original("a", job_id="ok"))
    dead(r, keys, "q", original("a", job_id="blocked"), source=keys.stream("broken"))
    dead(r, keys, "q", original("a", job_id="after"))
    r.set(keys.stream("broken"), "not a stream")
    out = dlq(redis_url, prefix, "requeue", "q", env={"BACKSTAGE_DLQ_BATCH": "10"})
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "WRONGTYPE" in out.stderr and keys.stream("broken") in out.stderr and "run the same command again" in out.stderr
    assert [f[b"jobId"] for _, f in r.xrange(keys.stream("q"))] == [b"ok"]
    assert [f[b"jobId"] for _, f in r.xrange(keys.dead_letter("q"))] == [b"blocked", b"after"]
    assert first not in {e[0].decode() for e in r.xrange(keys.dead_letter("q"))}


def test_requeue_skips_what_the_worker_would_dead_letter_again(redis_url, prefix, r, keys):
    dead(r, keys, "q", original("a", payload=b"{nope"), reason="malformed")
    dead(r, keys, "q", {**original("a"), b"backoff": b"{broken"}, reason="malformed")
    dead(r, keys, "q", original("a", job_id="fine", attempt=4))  # attempt is dropped, never judged
    listed = dlq(redis_url, prefix, "list", "q", "--json")
    assert [e["payload"] for e in ok_json(listed)] == ["{nope", '{"id":1}', '{"id":1}']
    out = dlq(redis_url, prefix, "requeue", "q")
    assert out.returncode == 0, out.stderr
    assert "requeued 1 entry" in out.stdout and "skipped 2 " in out.stdout
    assert "payload is not valid JSON" in out.stdout and "not a valid job (backoff is not JSON" in out.stdout
    assert r.xlen(keys.dead_letter("q")) == 2 and [f[b"jobId"] for _, f in r.xrange(keys.stream("q"))] == [b"fine"]


def test_requeue_skips_unknown_tasks_no_live_worker_serves(redis_url, prefix, r, keys):
    dead(r, keys, "q", original("gone.task"), reason="unknown-task", error_type="TaskNotFound")
    dead(r, keys, "q", original("served.task", job_id="served"), reason="unknown-task", error_type="TaskNotFound")
    big = b'"' + b"x" * 40 + b'"'
    dead(r, keys, "q", original("served.task", payload=big, job_id="big"), reason="malformed",
         error_type="PayloadTooLarge")
    dead(r, keys, "q", original("served.task", job_id="crashed"), reason="worker-lost")
    # one live worker's heartbeat, as the master writes it: it serves served.task, 32-byte limit
    r.zadd(f"{prefix}:workers", {"m-1": wire.now_ms() + 60_000})
    r.set(keys.worker("m-1"), orjson.dumps({"consumer": "m-1", "tasks": ["served.task"], "max_payload_bytes": 32}))
    out = dlq(redis_url, prefix, "requeue", "q")
    assert out.returncode == 0, out.stderr
    assert "requeued 2 entries" in out.stdout and "skipped 2 that would only be dead-lettered again" in out.stdout
    assert "unknown-task: none of the 1 live worker(s) serves it" in out.stdout and "--force" in out.stdout
    assert "payload over the workers' 32-byte limit" in out.stdout
    assert sorted(f[b"jobId"] for _, f in r.xrange(keys.stream("q"))) == [b"crashed", b"served"]
    forced = ok_json(dlq(redis_url, prefix, "requeue", "q", "--force", "--json"))
    assert forced["requeued"] == 2 and r.xlen(keys.dead_letter("q")) == 0


def test_requeue_killed_halfway_then_rerun_loses_and_duplicates_nothing(redis_url, prefix, r, keys):
    total = 3000
    jobs = [f"job-{i:04d}" for i in range(total)]
    pipe = r.pipeline(transaction=False)
    for jid in jobs:
        pipe.xadd(keys.dead_letter("bulk"), wire.dead_letter_fields(
            original("bulk.task", job_id=jid, attempt=2), original_id="1-0", queue_key=keys.stream("bulk"),
            reason="failed", delivery_count=2, consumer="host-1"))
    pipe.execute()
    ready, dlq_key = keys.stream("bulk"), keys.dead_letter("bulk")

    def lengths() -> tuple[int, int]:
        # one MULTI: both lengths at the same instant
        tx = r.pipeline(transaction=True)
        tx.xlen(ready)
        tx.xlen(dlq_key)
        moved, left = tx.execute()
        assert moved + left == total, (moved, left)  # every move is atomic: never both, never neither
        return moved, left

    env = {**os.environ, "BACKSTAGE_DLQ_BATCH": "1"}  # one entry per call: slow enough to interrupt
    proc = subprocess.Popen([str(BIN), "dlq", "requeue", "bulk", "--redis-url", redis_url, "--prefix", prefix],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: lengths()[0] >= 50, timeout=30, interval=0.002, message="the requeue to start moving")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    moved, left = lengths()
    assert 0 < moved < total, f"requeue was not interrupted halfway: {moved} moved"

    out = dlq(redis_url, prefix, "requeue", "bulk", "--json")
    summary = ok_json(out)
    assert summary["requeued"] == left and summary["missing"] == 0 and summary["skipped"] == 0
    got = [f[b"jobId"].decode() for _, f in r.xrange(ready)]
    assert len(got) == total and sorted(got) == jobs  # each original job exactly once
    assert r.xlen(dlq_key) == 0
    assert all(b"attempt" not in f and b"originalId" not in f for _, f in r.xrange(ready, count=100))


def test_progress_bar_on_a_terminal(redis_url, prefix, r, keys):
    pipe = r.pipeline(transaction=False)
    for i in range(300):
        pipe.xadd(keys.dead_letter("q"), {"taskName": "t", "payload": "null", "enqueuedAt": "1", "jobId": str(i)})
    pipe.execute()
    master, slave = os.openpty()
    proc = subprocess.Popen([str(BIN), "dlq", "requeue", "q", "--redis-url", redis_url, "--prefix", prefix],
                            stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, text=True)
    os.close(slave)
    seen = b""
    try:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed its end of the pty
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
    stdout, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert b"\r[" in seen and b"] 300/300" in seen and b"#" * 30 in seen
    assert stdout.startswith("requeued 300 entries") and "\r" not in stdout


# -- purge ---------------------------------------------------------------------------
def test_purge_needs_yes_then_deletes_what_matches(redis_url, prefix, r, keys):
    keep = [dead(r, keys, "q", original("keep")) for _ in range(3)]
    for _ in range(4):
        dead(r, keys, "q", original("drop"))

    refused = dlq(redis_url, prefix, "purge", "q", "--task", "drop")
    assert refused.returncode == 1 and "--yes" in refused.stderr and "4 entries" in refused.stderr
    assert r.xlen(keys.dead_letter("q")) == 7

    assert ok_json(dlq(redis_url, prefix, "purge", "q", "--task", "drop", "--yes", "--json",
                       env={"BACKSTAGE_DLQ_BATCH": "3"})) == {"purged": 4}
    assert [e[0].decode() for e in r.xrange(keys.dead_letter("q"))] == keep

    limited = dlq(redis_url, prefix, "purge", "q", "--limit", "1", "--yes")
    assert limited.returncode == 0 and limited.stdout.strip() == f"purged 1 entry from {keys.dead_letter('q')}"
    assert [e[0].decode() for e in r.xrange(keys.dead_letter("q"))] == keep[1:]

    everything = dlq(redis_url, prefix, "purge", "q", "--yes")
    assert everything.returncode == 0 and everything.stdout.strip() == f"purged 2 entries from {keys.dead_letter('q')}"
    assert r.xlen(keys.dead_letter("q")) == 0
    nothing = dlq(redis_url, prefix, "purge", "q", "--yes")
    assert nothing.returncode == 0 and "nothing to purge" in nothing.stdout


@pytest.mark.parametrize("answer, purged", [(b"y\n", True), (b"n\n", False)])
def test_purge_asks_on_a_terminal(redis_url, prefix, r, keys, answer, purged):
    dead(r, keys, "q")
    master, slave = os.openpty()
    proc = subprocess.Popen([str(BIN), "dlq", "purge", "q", "--redis-url", redis_url, "--prefix", prefix],
                            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(slave)
    try:
        os.write(master, answer)
        out, err = proc.communicate(timeout=30)
    finally:
        os.close(master)
    assert b"delete 1 entry of" in err and b"[y/N]" in err
    assert proc.returncode == (0 if purged else 1)
    assert r.xlen(keys.dead_letter("q")) == (0 if purged else 1)


# -- errors --------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (("list", "a:b"), "invalid queue name 'a:b'"),
    (("list", "scheduled"), "invalid queue name 'scheduled': it is reserved"),
    (("list", "ghost"), "unknown queue 'ghost': neither"),
    (("requeue", "ghost"), "unknown queue 'ghost'"),
    (("list", "known", "--since", "yesterday"), "--since 'yesterday': not a time"),
    (("list", "known", "--since", "1764370000"), "if it is epoch seconds, use 1764370000000"),
    (("list", "known", "--limit", "0"), "--limit=0: must be >= 1"),
    (("show", "known", "1-0"), "no entry 1-0 in"),
    (("show", "known", "latest"), "entry id 'latest': expected a stream id"),
    (("requeue", "known", "--batch", "0"), "--batch=0: must be between 1 and"),
])
def test_errors_are_one_line_and_nonzero(redis_url, prefix, r, keys, args, message):
    dead(r, keys, "known")
    out = dlq(redis_url, prefix, *args)
    assert out.returncode == 1, out
    assert out.stderr.startswith("backstage: ") and message in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert out.stdout == ""


def test_bad_batch_environment_variable(redis_url, prefix, r, keys):
    dead(r, keys, "q")
    out = dlq(redis_url, prefix, "requeue", "q", env={"BACKSTAGE_DLQ_BATCH": "lots"})
    assert out.returncode == 1 and "BACKSTAGE_DLQ_BATCH='lots': expected a whole number" in out.stderr
    assert r.xlen(keys.dead_letter("q")) == 1


@pytest.mark.parametrize("action", ["list", "requeue", "purge"])
def test_redis_unreachable_names_host_port_never_the_password(action):
    port = free_port()
    out = run("dlq", action, "default", "--yes" if action == "purge" else "--json",
              "--redis-url", f"redis://:pw123secret@127.0.0.1:{port}/0")
    assert out.returncode == 1
    assert f"127.0.0.1:{port}" in out.stderr and "pw123secret" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


# -- --since parsing (pure) ----------------------------------------------------------------
NOW = 1764370095000  # 2025-11-28T22:48:15Z


@pytest.mark.parametrize("text, expected", [
    ("90s", NOW - 90_000), ("10m", NOW - 600_000), ("2h", NOW - 2 * HOUR), ("3d", NOW - 3 * DAY),
    ("1w", NOW - 7 * DAY), ("1.5h", NOW - 90 * 60_000), ("1764370000123", 1764370000123), ("0", 0),
    ("2025-11-28T22:48:15Z", NOW), ("2025-11-28T23:48:15+01:00", NOW), ("2025-11-28T22:48:15.5+00:00", NOW + 500),
])
def test_parse_since(text, expected):
    assert parse_since(text, NOW) == expected


def test_parse_since_naive_time_is_local():
    assert parse_since("2025-11-28T10:00:00", NOW) == int(dt.datetime(2025, 11, 28, 10).timestamp() * 1000)


@pytest.mark.parametrize("text", ["", "yesterday", "10 minutes", "-5m", "3y", "1764370000", "2025-13-01"])
def test_parse_since_rejects(text):
    with pytest.raises(ConfigError, match="--since"):
        parse_since(text, NOW)
