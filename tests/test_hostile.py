"""Hostile input against the real backstage-prefork (issue 13): outcomes Redis
refuses, bad entries fetched beside good ones, and a seeded fuzz of raw
stream entries, scheduled members and broadcast entries."""

from __future__ import annotations

import redis

from backstage import Client
from backstage.protocol.keys import Keys

from .helpers import wait_until
from .workers import ledger, pending


def kinds(r: redis.Redis, prefix: str, kind: str) -> list[dict]:
    return [e for e in ledger(r, prefix) if e["kind"] == kind]


def settled(r: redis.Redis, keys: Keys, queues: tuple[str, ...]) -> bool:
    return all(r.xlen(keys.stream(q)) == 0 and pending(r, keys.stream(q)) == 0 for q in queues)


def test_an_outcome_redis_refuses_never_holds_the_others(client: Client, r, keys, prefix, start_worker):
    """Three outcomes Redis refuses (WRONGTYPE), each in a batch with good ones:
    a status write (the result key is a string), a next step (its stream key is a
    string) and a dead letter (the dead-letter stream key is a string). The rest of
    each batch commits, fetching goes on, the refused ones are settled otherwise
    (committed without the status, dead-lettered as ``refused``, acked without the
    record) and logged as refusals, and SIGTERM stops cleanly."""
    r.set(keys.result("st"), "not a hash")
    r.set(keys.stream("blocked"), "not a stream")
    r.set(keys.dead_letter("other"), "not a stream")
    r.xadd(keys.stream("default"), {"taskName": "record", "payload": '{"i": "st"}', "enqueuedAt": "1",
                                    "jobId": "st", "resultTtl": "60000"})
    hop = client.enqueue("hop", {"queue": "blocked"})
    r.xadd(keys.stream("other"), {"payload": "{}", "enqueuedAt": "1"})  # malformed: no taskName
    client.enqueue_many([("record", {"i": i}) for i in range(20)])
    client.enqueue_many([("record", {"i": 100 + i}) for i in range(5)], queue="other")
    w = start_worker("-c", "2", "--queues", "default,other")
    wait_until(lambda: len(kinds(r, prefix, "record")) == 26 and settled(r, keys, ("default", "other")), 20,
               message=lambda: w.log()[-3000:])
    (_, dead), = r.xrange(keys.dead_letter("default"))
    assert dead[b"reason"] == b"refused" and dead[b"jobId"] == hop.encode()
    assert b"WRONGTYPE" in dead[b"errorMessage"] and b"next step" in dead[b"errorMessage"]
    assert r.get(keys.result("st")) == b"not a hash"
    assert r.get(keys.dead_letter("other")) == b"not a stream"
    assert len(kinds(r, prefix, "hop")) == 1
    log = w.log()
    assert "status not written: Redis refused it: WRONGTYPE" in log
    assert "Redis refused its dead letter: WRONGTYPE" in log and "acked without it; its fields:" in log
    assert w.stop() == 0, log[-3000:]
    log = w.log()
    assert "unreachable" not in log and "Traceback" not in log and "could not commit" not in log


def test_innocent_jobs_fetched_with_bad_entries_run_once_normally(client: Client, r, keys, prefix, start_worker):
    """The known crashers (a non-UTF-8 jobId, an attempt beyond 64 bits, a resultTtl
    PEXPIRE refuses) interleaved with good jobs, all fetched in one batch: the bad ones
    are dead-lettered naming their field, every good one runs once, on its first
    attempt (no crash, no redelivery), and none is dead-lettered with them."""
    stream = keys.stream("default")
    base = {"taskName": "record", "payload": "{}", "enqueuedAt": "1"}
    crashers = [{"jobId": b"\xff\xfe"}, {"attempt": str(2**70)}, {"jobId": "ttl", "resultTtl": "9223372036854775000"}]
    good: list[str] = []
    for i in range(12):
        if i % 4 == 0:
            r.xadd(stream, {**base, **crashers[i // 4]})
        else:
            good.append(client.enqueue("record", {"i": i}))
    w = start_worker("-c", "2", "--prefetch", "20")
    dlq = keys.dead_letter("default")
    wait_until(lambda: r.xlen(dlq) == 3 and len(kinds(r, prefix, "record")) == len(good)
               and settled(r, keys, ("default",)), 20, message=lambda: w.log()[-2000:])
    ran = kinds(r, prefix, "record")
    assert sorted(e["job"] for e in ran) == sorted(good)
    assert {e["attempt"] for e in ran} == {1}
    dead = [f for _, f in r.xrange(dlq)]
    assert {f[b"reason"] for f in dead} == {b"malformed"}
    assert not {f.get(b"jobId") for f in dead} & {g.encode() for g in good}
    messages = b" | ".join(f[b"errorMessage"] for f in dead)
    for name in (b"'jobId'", b"'attempt'", b"'resultTtl'"):
        assert name in messages, messages
    assert "took back" not in w.log() and w.proc.poll() is None
    assert w.stop() == 0
