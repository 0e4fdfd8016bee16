"""Supervisor logic that needs no processes: retry policy, frames, config."""

from __future__ import annotations

import os
import random

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
