"""Wire compatibility of the workflow features: Go/TS-shaped entries still run
while cancels are pending (the per-job checks are live), and what we write
for unique jobs, groups, chords and callbacks adds fields only: every field
the Go and TypeScript decoders read is there, in their encoding."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from backstage import Client, Job

from .helpers import wait_until
from .redis_server import RedisServer

VECTORS = orjson.loads((Path(__file__).parent / "data" / "seed-sdk-entries.json").read_bytes())
#: Fields the other SDKs read (WIRE.md › Ready-stream entry), and ours they ignore.
THEIRS = {"taskName", "payload", "enqueuedAt", "attempts", "backoff", "timeout"}
OURS = {"jobId", "attempt", "workflowId", "resultTtl", "unique", "chordId", "chordIndex", "cronTick", "traceparent"}


def check_as_their_decoder_would(fields: dict[Any, Any]) -> None:
    """What the Go/TS readers require of an entry; our extra fields are plain strings."""
    f = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
         for k, v in fields.items()}
    assert f["taskName"] and isinstance(f["taskName"], str)
    orjson.loads(f["payload"])
    assert f["enqueuedAt"].isdigit()
    for k in ("attempts", "timeout"):
        if k in f:
            assert f[k].isdigit()
    if "backoff" in f:
        b = orjson.loads(f["backoff"])
        assert b["type"] in ("fixed", "exponential") and b.get("maxDelay", 1) != 0
    assert set(f) - THEIRS <= OURS, set(f) - THEIRS - OURS
    assert all(isinstance(v, str) for v in f.values())


def test_go_and_ts_entries_run_while_cancels_are_pending(aof_server: RedisServer, start_worker) -> None:
    r = aof_server.client()
    r.zadd("backstage:cancels", {"some-other-job": int(time.time() * 1000) + 60_000})
    r.set("backstage:cancel:some-other-job", 1, px=60_000)
    for v in VECTORS["stream_entries"]:
        r.xadd(v["key"], v["fields"])
    past = int(time.time() * 1000) - 1000
    for v in VECTORS["scheduled_members"]:
        r.zadd("backstage:scheduled", {v["member"]: past})
    w = start_worker("-c", "2", "--queues", "urgent,default,low,reports", url=aof_server.url, app="apps.interop")
    expected = len(VECTORS["stream_entries"]) + len(VECTORS["scheduled_members"]) - 1  # one is undecodable
    wait_until(lambda: r.llen("backstage:ledger") == expected, 20, message=lambda: w.log()[-2000:])
    assert r.zcard("backstage:scheduled") == 0
    assert r.zscore("backstage:cancels", "some-other-job") is not None  # not carried out: no such job ran
    r.close()


def test_our_new_fields_are_extra_only(client: Client, r, keys) -> None:
    client.enqueue("t.unique", {"a": 1}, job_id="w-1", unique=True, attempts=2, timeout=5)
    client.enqueue_chord([Job("t.member", {"i": 0}, attempts=3), ("t.member", {"i": 1})],
                         callback=Job("t.cb", {"c": 1}, timeout=9, result_ttl=60), group_id="w-c")
    client.enqueue_group([("t.g", None)], group_id="w-g", queue="reports")
    entries = r.xrange(keys.stream("default")) + r.xrange(keys.stream("reports"))
    assert len(entries) == 4
    for _, fields in entries:
        check_as_their_decoder_would(fields)
    members = [f for _, f in entries if f.get(b"chordId") == b"w-c"]
    assert [f[b"chordIndex"] for f in members] == [b"0", b"1"]
    # the callback entry the last member's settle will write: its stored fields plus the payload
    cb = orjson.loads(r.hget(keys.chord("w-c"), "cb"))
    check_as_their_decoder_would({**dict(zip(cb[::2], cb[1::2])), "payload": "{}"})
    # a delayed unique job: the member the Go/TS promoters read
    client.enqueue("t.later", {"b": 2}, job_id="w-2", unique=True, delay=60)
    [member] = r.zrange(keys.scheduled, 0, -1)
    obj = orjson.loads(member)
    assert isinstance(obj["payload"], str) and isinstance(obj["enqueuedAt"], int)
    assert obj["streamKey"] == keys.stream("default") and obj["priority"] == "default"
    assert obj["unique"] == "1" and obj["jobId"] == "w-2"
