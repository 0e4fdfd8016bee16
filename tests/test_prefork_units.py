"""Supervisor logic that needs no processes: retry policy, frames, config."""

from __future__ import annotations

import os
import random
import re

import pytest

from backstage import Backoff, ConfigError
from backstage.prefork import ipc, policy
from backstage.prefork.config import WorkerConfig


@pytest.mark.parametrize(
    "kind,attempt,attempts,expected",
    [
        ("error", 1, None, policy.Dead(("failed",))),
        ("error", 1, 3, "retry"),
        ("error", 3, 3, policy.Dead(("failed",))),
        ("timeout", 1, None, policy.Dead(("timeout",))),
        ("timeout", 1, 2, "retry"),
        ("retry", 1, None, "retry"),  # Retry without declared attempts: up to max_deliveries
        ("retry", 5, None, policy.Dead(("failed",))),
        ("worker-lost", 1, None, "retry"),
        ("worker-lost", 5, None, policy.Dead(("worker-lost",))),
        ("worker-lost", 5, 8, "retry"),
        ("reject", 1, 10, policy.Dead(("failed",))),
        ("malformed", 1, 10, policy.Dead(("malformed",))),
        ("unknown-task", 1, 10, policy.Dead(("unknown-task",))),
    ],
)
def test_decide(kind, attempt, attempts, expected):
    d = policy.decide(kind, attempt=attempt, attempts=attempts, max_deliveries=5, backoff=None)
    if expected == "retry":
        assert isinstance(d, policy.RetryLater)
    else:
        assert d == expected and isinstance(d, policy.Dead)


def test_retry_delay_follows_backoff_or_request():
    b = Backoff.exponential(0.5, max=3)
    delays = [policy.decide("error", attempt=n, attempts=10, max_deliveries=5, backoff=b).delay for n in range(1, 6)]
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]
    d = policy.decide("retry", attempt=1, attempts=3, max_deliveries=5, backoff=b, retry_delay_ms=1500)
    assert d.delay == 1.5
    # a lost worker with no policy is redelivered at once; with a backoff it waits
    assert policy.decide("worker-lost", attempt=1, attempts=None, max_deliveries=5, backoff=None).delay == 0.0
    assert policy.decide("worker-lost", attempt=2, attempts=None, max_deliveries=5, backoff=b).delay == 1.0
    # default backoff (jittered exponential) stays within [d/2, d]
    rng = random.Random(3)
    d = policy.decide("error", attempt=3, attempts=5, max_deliveries=5, backoff=None, rng=rng).delay
    assert 2.0 <= d <= 4.0
    with pytest.raises(ValueError, match="unknown outcome kind"):
        policy.decide("weird", attempt=1, attempts=1, max_deliveries=1, backoff=None)


def test_job_frames_carry_payloads_untouched():
    r, w = os.pipe()
    try:
        payloads = [b'{"a":1}', b"null", b"[1,2,3]" * 1000, b'"\xc3\xa9"']
        meta = [[i, f"t{i}", f"j{i}", 1, len(p)] for i, p in enumerate(payloads)]
        ipc.write_all(w, ipc.pack_jobs(ipc.JOBS, meta, payloads))
        os.close(w)
        w = -1
        reader = ipc.JobFrameReader(r)
        kind, got_meta, blob = reader.read()
        assert kind == ipc.JOBS and got_meta == meta
        pos = 0
        for (_, _, _, _, n), p in zip(got_meta, payloads):
            assert blob[pos:pos + n] == p
            pos += n
        assert reader.read() is None  # EOF
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_outcome_frames_split_anywhere():
    frames = b"".join(ipc.pack_outcome(m) for m in (["ready", 1], ["ok", 1, 5, None], ["ok", 2, 7, ["n", 0, "{}", None]]))
    for cut in range(len(frames)):
        reader = ipc.FrameReader()
        got = list(reader.feed(frames[:cut])) + list(reader.feed(frames[cut:]))
        assert got == [["ready", 1], ["ok", 1, 5, None], ["ok", 2, 7, ["n", 0, "{}", None]]]


def test_corrupt_outcome_frame_is_an_error():
    with pytest.raises(ValueError, match="corrupt"):
        list(ipc.FrameReader().feed(b"\xff\xff\xff\xff" + b"x" * 10))


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"concurrency": 0}, "concurrency"),
        ({"queues": ()}, "queues"),
        ({"queues": ("default", "default")}, "listed twice"),
        ({"queues": ("scheduled",)}, "reserved"),
        ({"grace_period": -1}, "grace_period"),
        ({"max_memory_per_child": 0}, "max_memory_per_child"),
        ({"max_tasks_per_child": 1.5}, "max_tasks_per_child"),
        ({"consumer": "a b"}, "consumer"),
        ({"prefetch": -1}, "prefetch"),
    ],
)
def test_config_rejects_bad_values(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        WorkerConfig(**kwargs)


def _master_with_children(redis_url: str, inflight: list[int], ewma: float):
    """A Master (never run) with children holding ``inflight`` jobs each."""
    from backstage import Backstage
    from backstage.prefork.loop import Master
    from backstage.prefork.supervisor import Child

    m = Master(Backstage(redis_url, prefix="units"), WorkerConfig(redis_url=redis_url, concurrency=len(inflight)))
    for i, n in enumerate(inflight):
        c = Child(i, 0, -1, -1)
        c.ready = True
        c.inflight.extend([object()] * n)  # type: ignore[list-item]
        m.supervisor.children.append(c)
    m.dispatcher.ewma = ewma
    m.exchange.batch.ack(1, b"1-0")  # one outcome waiting to be settled
    return m


@pytest.mark.parametrize(
    "inflight,ewma,held",
    [
        ([1, 2], 0.010, True),  # a child still has a queued job: wait for more outcomes
        ([2, 2], 0.010, True),
        ([1, 1], 0.010, False),  # every child is down to its running job: refill now
        ([0, 2], 0.010, False),  # an idle child: fetch for it now
        ([1, 2], 0.0001, False),  # fast jobs batch anyway: never held
    ],
)
def test_outcomes_of_ms_jobs_are_held_to_share_a_round_trip(redis_url, inflight, ewma, held):
    m = _master_with_children(redis_url, inflight, ewma)
    ex = m.exchange
    try:
        now = 100.0
        until = ex.hold_until(now)
        if not held:
            assert until == now
            return
        # at most half the average job, and never more than HOLD_MAX
        assert until == now + min(ex.HOLD_MAX, ex.HOLD_SHARE * ewma)
        assert ex.hold_until(now + 0.001) == until  # counted from the first outcome
        m.begin_stop()
        assert ex.hold_until(now + 0.001) == now + 0.001  # stopping: settle at once
    finally:
        m.close()


def test_workflow_step_delay_units():
    """Next(delay=) is seconds; the dict form's "delay" / "delay_ms" are milliseconds, never seconds."""
    import math

    from backstage import Next, PayloadError
    from backstage.prefork.child import _next_step

    assert _next_step(Next("b", {"x": 1}, delay=5.0)) == ("b", 5000, '{"x":1}', None, None)
    assert _next_step({"next": "b", "payload": 1, "delay": 5000}) == ("b", 5000, "1", None, None)
    assert _next_step({"next": "b", "payload": 1, "delay_ms": 250}) == ("b", 250, "1", None, None)
    assert _next_step({"next": "b"}) == ("b", 0, "null", None, None)
    with pytest.raises(ValueError, match="not both"):
        _next_step({"next": "b", "delay": 1, "delay_ms": 1})
    with pytest.raises(ValueError, match=r"delay_ms=-1 must be milliseconds.*seconds"):
        _next_step({"next": "b", "delay_ms": -1})
    with pytest.raises(PayloadError, match="finite"):
        _next_step(Next("b", {"x": math.nan}))
    with pytest.raises(PayloadError, match="payload of 12 bytes of JSON is over the 10-byte limit"):
        _next_step(Next("b", "ééééé"), max_payload_bytes=10)  # 7 characters of JSON, 12 bytes
    assert _next_step({"next": "b", "payload": "12345678"}, max_payload_bytes=10) == ("b", 0, '"12345678"', None, None)


def test_non_finite_floats_are_found_wherever_they_hide():
    import dataclasses
    import datetime as dt
    import math

    from backstage import PayloadError
    from backstage.protocol.wire import encode_payload

    @dataclasses.dataclass
    class Point:
        x: float
        y: object = None

    for payload, where in [((1, math.nan), "payload[1]=nan"), (Point(math.inf), "payload.x=inf"),
                           ({"a": {"b": [None, (2, -math.inf)]}}, "payload['a']['b'][1][1]=-inf")]:
        with pytest.raises(PayloadError, match=re.escape(where)):
            encode_payload("t", payload)
    # null in JSON that is not a NaN, next to types that do not read back equal: fine
    when = dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)
    assert encode_payload("t", {"at": when, "p": Point(1.5), "t": (None, 2.0)}) == (
        b'{"at":"2026-01-02T00:00:00+00:00","p":{"x":1.5,"y":null},"t":[null,2.0]}')


def test_a_redis_outage_is_logged_once_and_a_flap_after_recovery_is_part_of_it(caplog):
    import logging

    import redis

    from backstage.prefork.health import RedisHealth

    now = [1000.0]
    m = RedisHealth("127.0.0.1:6379", clock=lambda: now[0])
    lost = redis.ConnectionError("Connection closed by server.")

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]

    def recover() -> None:  # a call made once the back-off is over succeeds
        now[0] = max(now[0], m.down_until)
        m.ok()

    caplog.set_level(logging.DEBUG, logger="backstage.prefork")
    m.failed("wait", lost)
    m.ok()  # a reply to a call sent before the error, read during the back-off: not a recovery
    assert m.backoff and len(said()) == 1
    for _ in range(5):
        now[0] += 1.0
        m.failed("fetch", lost)  # the same outage: debug only
    recover()
    m.ok()
    assert [s.split(":")[0] for s in said()] == ["Redis error during wait at 127.0.0.1", "Redis at 127.0.0.1"]
    assert re.search(r"is back \(after [0-9.]+s, 6 failed calls\)", said()[-1])
    # a stale connection meets the restart just after recovery: quiet, and no second "is back"
    now[0] += 0.2
    m.failed("wait", lost)
    recover()
    assert len(said()) == 2
    # a long outage: a reminder every 30 s, then one "is back"
    now[0] += 10
    m.failed("settle", lost)
    now[0] += m.REMINDER + 1
    m.failed("settle", lost)
    recover()
    assert [s.split(" at ")[0] for s in said()[2:]] == ["Redis error during settle", "Redis", "Redis"]
    assert "still failing after 31s" in said()[3] and "is back" in said()[4]
    # an error right after recovery that lasts is said after all
    now[0] += 0.5
    m.failed("fetch", lost)
    now[0] += m.SETTLE + 0.1
    m.failed("fetch", lost)
    recover()
    assert "still failing" in said()[5] and "is back" in said()[6]
