"""Huey: the huey instance its consumer runs, and how the driver drives it.

Worker: ``huey_consumer systems.huey_adapter.huey -k process -w 2 -n -q``:
process workers, no periodic tasks, warning-level logs; ``RedisHuey`` with
``results=False`` and its default blocking dequeue (BRPOP, no polling delay).
Each worker process dequeues for itself; Huey removes a task from Redis when
it is dequeued (at-most-once).
Enqueue: calling the task (single); Huey has no bulk enqueue, so a batch is a
loop of calls.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from huey import RedisHuey

from common import stats

URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0")

huey = RedisHuey("bench", url=URL, results=False)


@huey.task(name="noop")
def noop(payload: dict) -> None:
    stats.noop()


@huey.task(name="cpu")
def cpu(payload: dict) -> None:
    stats.cpu(payload)


@huey.task(name="stamp")
def stamp(payload: dict) -> None:
    stats.stamp(payload)


@huey.task(name="ready")
def ready(payload: dict) -> None:
    stats.ready()


TASKS = {"noop": noop, "cpu": cpu, "stamp": stamp, "ready": ready}


class Adapter:
    settings = ("huey_consumer -k process -w N -n (no periodic) -q; RedisHuey(results=False), blocking BRPOP "
                "dequeue (default); task removed from Redis on dequeue (at-most-once)")
    single_api = "task(payload)"
    bulk_api = "task(payload) in a loop (no bulk API)"

    def __init__(self, url: str = URL, variant: str | None = None) -> None:
        huey.storage.conn.ping()

    def worker_commands(self, bin_dir: Path, concurrency: int) -> list[list[str]]:
        return [[str(bin_dir / "huey_consumer"), "systems.huey_adapter.huey", "-k", "process",
                 "-w", str(concurrency), "-n", "-q"]]

    def worker_env(self) -> dict[str, str]:
        return {}

    def enqueue_one(self, task: str, payload: dict[str, Any]) -> None:
        TASKS[task](payload)

    def enqueue_bulk(self, task: str, payloads: list[dict[str, Any]]) -> None:
        t = TASKS[task]
        for p in payloads:
            t(p)

    def close(self) -> None:
        huey.storage.conn.close()
