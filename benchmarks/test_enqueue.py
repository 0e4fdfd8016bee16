"""Producer throughput: ``Client.enqueue`` and ``Client.enqueue_many``.

Each benchmark runs over TCP (127.0.0.1) and over the unix socket of the
same private redis-server. A round is a batch of jobs; after every round
(warm-up included) the teardown checks that the round's jobs reached the
stream, then deletes the test's keys, so memory stays flat.

Targets (the issues): enqueue_many >= 100,000 jobs/s, single enqueue >= 10,000 jobs/s.
"""

from __future__ import annotations

from typing import Any, Callable

import redis

from backstage import Client
from backstage.protocol.keys import Keys

SINGLE_PER_ROUND = 1_000
MANY_PER_ROUND = 10_000


def _checked_wipe(r: redis.Redis, stream: str, expected: int, wipe: Callable[..., None]) -> Callable[..., None]:
    def teardown(*_args: Any, **_kwargs: Any) -> None:
        n = r.xlen(stream)
        wipe()
        assert n == expected, f"{stream} holds {n} entries after a round, expected {expected}"

    return teardown


def test_enqueue_single(benchmark: Any, client: Client, r: redis.Redis, prefix: str,
                        wipe: Callable[..., None], report_rate: Callable[[Any, int], float | None]) -> None:
    """``enqueue("noop", {...})``: immediate, no dedupe (one pipelined XADD per call)."""
    payloads = [{"i": i} for i in range(SINGLE_PER_ROUND)]
    enqueue = client.enqueue

    def one_round() -> list[str | None]:
        return [enqueue("noop", p) for p in payloads]

    ids = benchmark.pedantic(one_round, teardown=_checked_wipe(r, Keys(prefix).stream("default"), SINGLE_PER_ROUND, wipe),
                             rounds=10, warmup_rounds=1)
    assert len(ids) == SINGLE_PER_ROUND and all(ids)
    report_rate(benchmark, SINGLE_PER_ROUND)


def test_enqueue_single_dedupe(benchmark: Any, client: Client, r: redis.Redis, prefix: str,
                               wipe: Callable[..., None], report_rate: Callable[[Any, int], float | None]) -> None:
    """``enqueue(..., dedupe_key=k)`` with a new key each call (EVALSHA enqueue.lua; every job is written)."""
    payloads = [{"i": i} for i in range(SINGLE_PER_ROUND)]
    keys = [f"order-{i}" for i in range(SINGLE_PER_ROUND)]
    enqueue = client.enqueue

    def one_round() -> list[str | None]:
        return [enqueue("noop", p, dedupe_key=k) for p, k in zip(payloads, keys)]

    ids = benchmark.pedantic(one_round, teardown=_checked_wipe(r, Keys(prefix).stream("default"), SINGLE_PER_ROUND, wipe),
                             rounds=10, warmup_rounds=1)
    assert len(ids) == SINGLE_PER_ROUND and all(ids), "a fresh dedupe key was treated as a duplicate"
    report_rate(benchmark, SINGLE_PER_ROUND)


def test_enqueue_many(benchmark: Any, client: Client, r: redis.Redis, prefix: str,
                      wipe: Callable[..., None], report_rate: Callable[[Any, int], float | None]) -> None:
    """``enqueue_many`` of 10,000 ``(task, small payload)`` tuples per round (checked, packed, pipelined)."""
    jobs = [("noop", {"i": i}) for i in range(MANY_PER_ROUND)]

    def one_round() -> list[str | None]:
        return client.enqueue_many(jobs)

    ids = benchmark.pedantic(one_round, teardown=_checked_wipe(r, Keys(prefix).stream("default"), MANY_PER_ROUND, wipe),
                             rounds=15, warmup_rounds=2)
    assert len(ids) == MANY_PER_ROUND and all(ids)
    report_rate(benchmark, MANY_PER_ROUND)
