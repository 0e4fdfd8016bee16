"""The master's parts without its processes: decoding, outcomes and the
exchange, driven one step at a time with an injected clock (the way
gunicorn tests its arbiter). Redis is the session's real redis-server; no
worker or child process is started."""

from __future__ import annotations

import selectors
from typing import Any, Iterator

import pytest
import redis

from backstage import Backoff, Backstage
from backstage.prefork import ipc
from backstage.prefork.broker import MasterBroker
from backstage.prefork.entries import ATTEMPT_MAX, Decoder, Delivery, Rejected
from backstage.prefork.exchange import Exchange, RoundTrip
from backstage.prefork.health import RedisHealth
from backstage.prefork.metrics import TaskStats
from backstage.prefork.outcomes import Outcomes
from backstage.protocol.keys import Keys

GROUP = "backstage-workers"
QUEUES = ("urgent", "default", "low")


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Children:
    """The exchange's view of the children (its Demand), set by each test."""

    def __init__(self) -> None:
        self.ewma = 0.0001
        self.slots = 10
        self.hold = False

    def free_slots(self) -> int:
        return self.slots

    def may_hold(self) -> bool:
        return self.hold


class Parts:
    """Decoder, outcomes and exchange of one would-be master, on a real Redis."""

    def __init__(self, url: str, prefix: str) -> None:
        self.app = Backstage(url, prefix=prefix)
        self.app.task("t.ok")(lambda p: None)
        self.app.task("t.retry", attempts=3, backoff=Backoff.fixed(2.0))(lambda p: None)
        self.app.task("t.kept", result_ttl=60)(lambda p: None)
        self.keys = Keys(prefix)
        self.clock = Clock()
        self.broker = MasterBroker(url, self.keys, GROUP, "c1", QUEUES, delete_on_ack=True, socket_timeout=5)
        self.sel = selectors.DefaultSelector()
        self.health = RedisHealth(self.broker.where, self.clock)
        self.children = Children()
        self.fetched: list[Delivery | Rejected] = []
        self.stats: dict[str, TaskStats] = {}
        self.decoder = Decoder(self.app, None, 1000, self.stats_of)
        self.exchange = Exchange(self.broker, self.sel, self.health, self.clock, self.children, self.accept,
                                 queues=QUEUES, redis_timeout=5.0, block_timeout=1.0, fast_job_threshold=0.001)
        self.outcomes = Outcomes(self.app, self.keys, QUEUES, self.exchange, self.stats_of,
                                 consumer="c1", max_deliveries=5, dead_letter_maxlen=1000)

    def stats_of(self, name: str) -> TaskStats:
        return self.stats.setdefault(name, TaskStats(len(QUEUES)))

    def accept(self, si: int, entry_id: bytes, flat: list[bytes]) -> None:
        d = self.decoder.decode(si, entry_id, flat)
        self.fetched.append(d)
        if isinstance(d, Rejected):
            self.outcomes.rejected(si, entry_id, d)

    def round_trip(self) -> None:
        """Start one exchange and read its replies."""
        self.exchange.start(self.clock())
        assert self.exchange.in_flight, "no round trip started"
        self.exchange.on_readable()

    def close(self) -> None:
        self.exchange.stop_waiting()
        self.sel.close()
        self.broker.close()


@pytest.fixture
def parts(redis_url: str, prefix: str) -> Iterator[Parts]:
    p = Parts(redis_url, prefix)
    yield p
    p.close()


def flat(**fields: Any) -> list[bytes]:
    out: list[bytes] = []
    for k, v in fields.items():
        out += [k.encode(), v if isinstance(v, bytes) else str(v).encode()]
    return out


def entry(**over: Any) -> list[bytes]:
    fields: dict[str, Any] = {"taskName": "t.ok", "payload": "{}", "enqueuedAt": "1764370000123", "jobId": "j1"}
    fields.update(over)
    return flat(**{k: v for k, v in fields.items() if v is not None})


# -- decode once ----------------------------------------------------------------------------
def test_an_entry_is_decoded_once_into_one_typed_object(parts):
    d = parts.decoder.decode(1, b"1-0", entry(taskName="t.retry", attempt="2", timeout="1500",
                                              backoff='{"type":"fixed","delay":250}', workflowId="wf"))
    assert isinstance(d, Delivery)
    assert (d.task, d.si, d.id, d.job_id, d.workflow_id) == ("t.retry", 1, b"1-0", "j1", "wf")
    assert (d.attempt, d.attempts, d.timeout, d.result_ttl) == (2, 3, 1.5, None)
    assert d.backoff == Backoff.fixed(0.25)
    assert d.payload == b"{}"  # never decoded by the master
    kept = parts.decoder.decode(0, b"2-0", entry(taskName="t.kept"))
    assert isinstance(kept, Delivery) and kept.result_ttl == 60_000 and kept.backoff is None
    # a reclaimed entry counts the deliveries the dead worker made
    again = parts.decoder.decode(0, b"3-0", entry(attempt="2"), 3)
    assert isinstance(again, Delivery) and again.attempt == 4


@pytest.mark.parametrize("change,field", [
    ({"jobId": b"\xff\xfe"}, "'jobId' is not UTF-8"),  # crashed the master (UnicodeDecodeError)
    ({"attempt": str(2**70)}, "'attempt'"),  # crashed ipc.pack_jobs (beyond 64 bits)
    ({"attempt": str(ATTEMPT_MAX + 1)}, "'attempt'"),
    ({"attempt": "0"}, "'attempt'"),
    ({"attempt": "zero"}, "'attempt'='zero' is not an integer"),
    ({"resultTtl": "9223372036854775000"}, "'resultTtl'"),  # made settle.lua's PEXPIRE fail
    ({"resultTtl": "-5"}, "'resultTtl'"),
    ({"timeout": "0"}, "'timeout'"),
    ({"timeout": "1e3"}, "'timeout'"),
    ({"attempts": "0"}, "'attempts'"),
    ({"enqueuedAt": "yesterday"}, "'enqueuedAt'"),
    ({"backoff": "{broken"}, "'backoff'"),
    ({"backoff": '{"type":"linear"}'}, "'backoff'"),
    ({"workflowId": b"\xc3"}, "'workflowId' is not UTF-8"),
    ({"taskName": b"\xff"}, "'taskName' is not UTF-8"),
    ({"taskName": None}, "missing field 'taskName'"),
    ({"taskName": ""}, "empty field 'taskName'"),
])
def test_a_bad_field_is_rejected_as_malformed_naming_it(parts, change, field):
    r = parts.decoder.decode(1, b"1-0", entry(**change))
    assert isinstance(r, Rejected), r
    assert r.reason == "malformed" and r.error_type == "MalformedEntry"
    assert field in r.message


def test_unknown_task_and_oversize_payload_are_rejected(parts):
    r = parts.decoder.decode(1, b"1-0", entry(taskName="no.such"))
    assert isinstance(r, Rejected) and r.reason == "unknown-task" and "no.such" in r.message
    r = parts.decoder.decode(1, b"1-0", entry(payload="[" + "1," * 600 + "1]"))
    assert isinstance(r, Rejected) and r.error_type == "PayloadTooLarge" and "1000-byte limit" in r.message


def test_malformed_entries_become_dead_letters_and_the_rest_runs(parts, r: redis.Redis):
    """The known crashers go to the dead-letter stream, naming their field;
    the good entry beside them is fetched, and the settle batch is not wedged."""
    stream = parts.keys.stream("default")
    bad = {"jobId": b"\xff\xfe", "attempt": str(2**70), "resultTtl": "9223372036854775000"}
    for k, v in bad.items():
        r.xadd(stream, dict(zip(*[iter(entry(**{k: v}))] * 2)))  # type: ignore[arg-type]
    r.xadd(stream, {"taskName": "t.kept", "payload": "{}", "enqueuedAt": "1", "jobId": "good"})
    parts.round_trip()
    good = [d for d in parts.fetched if isinstance(d, Delivery)]
    assert [d.job_id for d in good] == ["good"]
    parts.outcomes.succeeded(good[0], None, '"done"')
    parts.round_trip()  # settles three dead letters, the status and the ack in one batch
    assert not parts.exchange.unsettled() and not parts.exchange.unsent
    dead = r.xrange(parts.keys.dead_letter("default"))
    assert sorted(f[b"reason"] for _, f in dead) == [b"malformed"] * 3
    messages = b" ".join(f[b"errorMessage"] for _, f in dead)
    for name in bad:
        assert f"'{name}'".encode() in messages
    assert [f[b"jobId"] for _, f in dead if f[b"jobId"] == b"\xff\xfe"]  # kept as it was
    assert r.xlen(stream) == 0
    assert r.hget(parts.keys.result("good"), "status") == b"done"


# -- outcomes -----------------------------------------------------------------------------------
def test_outcomes_of_one_delivery(parts, r: redis.Redis):
    stream = parts.keys.stream("default")
    for i in range(4):
        r.xadd(stream, {"taskName": "t.retry", "payload": "{}", "enqueuedAt": "1", "jobId": f"j{i}",
                        **({"attempt": "3"} if i == 3 else {})})
    parts.round_trip()
    ok, nxt, retry, last = parts.fetched
    assert all(isinstance(d, Delivery) for d in parts.fetched)
    o = parts.outcomes
    o.succeeded(ok, None, None)  # type: ignore[arg-type]
    o.succeeded(nxt, ipc.NextStep("t.ok", 0, '{"n":1}', "low"), None)  # type: ignore[arg-type]
    o.failed_run(retry, "error", "ValueError", "boom", "tb", None)  # type: ignore[arg-type]
    o.failed_run(last, "error", "ValueError", "boom", "tb", None)  # type: ignore[arg-type]  (attempt 3 of 3)
    assert (o.processed, o.failed) == (2, 2)
    parts.round_trip()
    assert r.xlen(stream) == 0
    (_, step), = r.xrange(parts.keys.stream("low"))
    assert step[b"taskName"] == b"t.ok" and step[b"payload"] == b'{"n":1}' and step[b"workflowId"] == b"j1"
    (member, due), = r.zrange(parts.keys.scheduled, 0, -1, withscores=True)
    assert b'"attempt":2' in member and b'"jobId":"j2"' in member
    (_, dl), = r.xrange(parts.keys.dead_letter("default"))
    assert (dl[b"reason"], dl[b"jobId"], dl[b"deliveryCount"]) == (b"failed", b"j3", b"3")
    st = parts.stats["t.retry"]
    assert (st.processed[1], st.failed[1], st.retried[1], st.dead[1]) == (2, 2, 1, 1)


# -- the exchange ---------------------------------------------------------------------------------
def test_round_trips_in_flight_are_named_and_bounded(parts, r: redis.Redis):
    ex = parts.exchange
    r.xadd(parts.keys.stream("urgent"), {"taskName": "t.ok", "payload": "{}", "enqueuedAt": "1"})
    parts.children.slots = 4
    assert ex.deadline(parts.clock()) == parts.clock()  # room to fetch: go now
    ex.start(parts.clock())
    (trip,) = ex.in_flight
    assert isinstance(trip, RoundTrip)
    assert (trip.batch, trip.fetch, trip.streams, trip.deadline) == (None, 4, [0, 1, 2], parts.clock() + 5.0)
    assert ex.room() == 0  # what is being fetched counts against the room
    ex.on_readable()
    assert len(parts.fetched) == 1 and ex.drained and ex.wait_sock is not None  # streams empty: XREAD waits
    assert ex.deadline(parts.clock()) == float("inf")  # nothing to do until a reply or the wait wakes us


def test_a_lost_round_trip_is_resent_after_the_backoff(parts, r: redis.Redis):
    stream = parts.keys.stream("default")
    r.xadd(stream, {"taskName": "t.ok", "payload": "{}", "enqueuedAt": "1", "jobId": "x"})
    parts.round_trip()
    (d,) = parts.fetched
    parts.children.slots = 0  # no room: the next round trip only settles
    parts.outcomes.succeeded(d, None, None)  # type: ignore[arg-type]
    ex = parts.exchange
    ex.start(parts.clock())
    batch = ex.in_flight[0].batch
    assert batch is not None and not ex.batch.dirty
    parts.clock.t += 5.1  # Redis "did not answer" within --redis-timeout
    ex.check(parts.clock())
    assert ex.unsent == [batch] and not ex.in_flight
    assert parts.health.errors["settle"] == 1 and not parts.health.up(parts.clock())
    assert ex.deadline(parts.clock()) == parts.health.down_until  # sleep until the retry, no sooner
    ex.start(parts.clock())
    assert not ex.in_flight  # still backing off
    parts.clock.t = parts.health.down_until
    ex.start(parts.clock())
    (trip,) = ex.in_flight
    assert trip.batch is batch and trip.fetch == 0  # sent again, alone, first
    ex.on_readable()
    assert not ex.unsettled() and parts.health.backoff == 0.0
    assert r.xlen(stream) == 0 and int(r.xpending(stream, GROUP)["pending"]) == 0


def test_held_outcomes_wait_for_company_then_go(parts, r: redis.Redis):
    r.xadd(parts.keys.stream("default"), {"taskName": "t.ok", "payload": "{}", "enqueuedAt": "1"})
    parts.round_trip()
    (d,) = parts.fetched
    ex, kids = parts.exchange, parts.children
    kids.ewma, kids.hold, kids.slots = 0.004, True, 0
    parts.outcomes.succeeded(d, None, None)  # type: ignore[arg-type]
    now = parts.clock()
    assert ex.deadline(now) == now + 0.002  # half a 4 ms job
    ex.start(now)
    assert not ex.in_flight  # held
    parts.clock.t += 0.002
    ex.start(parts.clock())
    assert ex.in_flight and ex.in_flight[0].batch is not None
    ex.on_readable()
    assert not ex.unsettled()


def test_a_fetch_whose_reply_is_lost_is_reconciled_leaving_held_entries_alone(parts, r: redis.Redis):
    """A fetch runs in Redis but its reply is given up on: its entries are pending for us,
    unseen. The reconcile takes back exactly those (one delivery, this run's), not the
    entry we hold, and not twice."""
    from backstage.prefork.config import WorkerConfig
    from backstage.prefork.recovery import Recovery

    stream = parts.keys.stream("default")
    r.xadd(stream, {"taskName": "t.ok", "payload": "{}", "enqueuedAt": "1", "jobId": "held"})
    parts.children.slots = 1
    parts.round_trip()
    (held,) = parts.fetched
    assert isinstance(held, Delivery)
    suspects: list[bool] = []
    ex = parts.exchange
    ex.on_lost_fetch = lambda: suspects.append(True)
    for i in range(3):
        r.xadd(stream, {"taskName": "t.ok", "payload": "{}", "enqueuedAt": "1", "jobId": f"lost{i}"})
    parts.children.slots = 4
    ex.start(parts.clock())
    assert ex.in_flight[0].fetch >= 3
    parts.broker._ops_conn.can_read(timeout=5)  # Redis ran the fetch: the reply is on its way
    parts.clock.t += 5.1  # ... and the master gave up on it
    ex.check(parts.clock())
    assert suspects == [True] and len(parts.fetched) == 1
    assert int(r.xpending(stream, GROUP)["pending"]) == 4

    taken: list[tuple[str | None, int]] = []

    def take_back(si: int, entry_id: bytes, fields: list[bytes], deliveries: int) -> None:
        d = parts.decoder.decode(si, entry_id, fields, deliveries)
        assert isinstance(d, Delivery)
        taken.append((d.job_id, d.attempt))

    cfg = WorkerConfig(queues=QUEUES, prefix=parts.keys.prefix, consumer="c1", concurrency=1)
    rec = Recovery(parts.broker, cfg, parts.health, QUEUES, held=lambda: iter([(held.si, held.id)]),
                   room=lambda: 10, active=lambda: [0, 1, 2], accept=take_back)
    rec.suspect()
    assert rec.reconcile_at == 0.0
    assert rec.reconcile(parts.clock()) is True
    assert sorted(taken) == [("lost0", 1), ("lost1", 1), ("lost2", 1)]
    assert rec.reconcile_at == parts.clock() + rec.RECHECK  # once more, later
    # the second pass finds them held now (by whoever took them) and takes nothing again
    lost_ids = [e[0] for e in r.xrange(stream) if e[1][b"jobId"] != b"held"]
    rec.held = lambda: iter([(held.si, held.id), *((1, i) for i in lost_ids)])
    assert rec.reconcile(parts.clock()) is True
    assert len(taken) == 3 and rec.reconcile_at == float("inf")
