"""Dramatiq: the broker and actors its worker runs, and how the driver drives it.

Worker: ``dramatiq systems.dramatiq_adapter:broker --processes 2 --threads 8``
(8 threads per process is Dramatiq's default), Redis broker, default
middleware, no results middleware. Dramatiq acks after the actor returns.
Enqueue: ``Actor.send`` (single); bulk: Dramatiq has no bulk enqueue (each
message is one Lua call on Redis); ``group(...).run()`` is a loop of
``broker.enqueue``, so a batch is ``broker.enqueue`` in a loop.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from common import stats

URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0")
THREADS = int(os.environ.get("BENCH_DRAMATIQ_THREADS", "8"))

broker = RedisBroker(url=URL)
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="noop", max_retries=0)
def noop(payload: dict) -> None:
    stats.noop()


@dramatiq.actor(actor_name="cpu", max_retries=0)
def cpu(payload: dict) -> None:
    stats.cpu(payload)


@dramatiq.actor(actor_name="stamp", max_retries=0)
def stamp(payload: dict) -> None:
    stats.stamp(payload)


@dramatiq.actor(actor_name="ready", max_retries=0)
def ready(payload: dict) -> None:
    stats.ready()


ACTORS = {"noop": noop, "cpu": cpu, "stamp": stamp, "ready": ready}


class Adapter:
    settings = (f"dramatiq --processes N --threads {THREADS} (default threads), Redis broker, default middleware, "
                "no results; acks after the actor returns")
    single_api = "Actor.send"
    bulk_api = "broker.enqueue in a loop (no bulk API; group().run() is the same loop)"

    def __init__(self, url: str = URL, variant: str | None = None) -> None:
        broker.client.ping()

    def worker_commands(self, bin_dir: Path, concurrency: int) -> list[list[str]]:
        return [[str(bin_dir / "dramatiq"), "systems.dramatiq_adapter:broker", "--processes", str(concurrency),
                 "--threads", str(THREADS)]]

    def worker_env(self) -> dict[str, str]:
        return {}

    def enqueue_one(self, task: str, payload: dict[str, Any]) -> None:
        ACTORS[task].send(payload)

    def enqueue_bulk(self, task: str, payloads: list[dict[str, Any]]) -> None:
        actor = ACTORS[task]
        enqueue = broker.enqueue
        for p in payloads:
            enqueue(actor.message(p))

    def close(self) -> None:
        broker.close()
