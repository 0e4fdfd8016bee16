"""RQ: the job functions its workers run, and how the driver drives it.

Worker: ``rq worker-pool -n 2 -w rq.worker.SimpleWorker -l WARNING default``.
SimpleWorker runs jobs in the worker process; RQ's own performance notes
measure it ~6x faster than the default Worker, which forks a work horse for
every job (that one is the ``rq-fork`` system here, which RQ recommends for
production isolation). Jobs are enqueued with ``result_ttl=0`` (no result kept).
Enqueue: ``Queue.enqueue`` (single), ``Queue.enqueue_many`` of
``Queue.prepare_data`` items (bulk, one pipeline per batch).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from redis import Redis
from rq import Queue

from common import stats

URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0")
QUEUE = "default"


def noop(payload: dict) -> None:
    stats.noop()


def cpu(payload: dict) -> None:
    stats.cpu(payload)


def stamp(payload: dict) -> None:
    stats.stamp(payload)


def ready(payload: dict) -> None:
    stats.ready()


FUNCS = {"noop": noop, "cpu": cpu, "stamp": stamp, "ready": ready}


class Adapter:
    single_api = "Queue.enqueue(result_ttl=0)"
    bulk_api = "Queue.enqueue_many(Queue.prepare_data(...)) (one pipeline per batch)"

    def __init__(self, url: str = URL, variant: str | None = None) -> None:
        self.url = url
        self.fork = variant == "fork"
        self.worker_class = "rq.worker.Worker" if self.fork else "rq.worker.SimpleWorker"
        self.settings = (f"rq worker-pool -n N -w {self.worker_class} -l WARNING; jobs with result_ttl=0"
                         + ("; a forked work horse per job (RQ's default worker)" if self.fork
                            else "; jobs run in the worker process (no fork per job)"))
        self.conn = Redis.from_url(url)
        self.conn.ping()
        self.q = Queue(QUEUE, connection=self.conn)

    def worker_commands(self, bin_dir: Path, concurrency: int) -> list[list[str]]:
        return [[str(bin_dir / "rq"), "worker-pool", "-n", str(concurrency), "-u", self.url,
                 "-w", self.worker_class, "-l", "WARNING", QUEUE]]

    def worker_env(self) -> dict[str, str]:
        # a work horse exits right after its job: count each job at once, not from a thread
        return {"BENCH_STATS_DIRECT": "1"} if self.fork else {}

    def enqueue_one(self, task: str, payload: dict[str, Any]) -> None:
        self.q.enqueue(FUNCS[task], payload, result_ttl=0)

    def enqueue_bulk(self, task: str, payloads: list[dict[str, Any]]) -> None:
        f = FUNCS[task]
        self.q.enqueue_many([Queue.prepare_data(f, (p,), result_ttl=0) for p in payloads])

    def close(self) -> None:
        self.conn.close()
