"""arq: the worker settings its workers run, and how the driver drives it.

arq runs one asyncio worker per process (no process pool of its own), so "2
processes" is two ``arq systems.arq_adapter.WorkerSettings`` processes.
Settings: ``keep_result=0`` (no result kept), ``max_jobs=10`` (default), and
``poll_delay=0.01`` s instead of the default 0.5 s: arq polls its queue (a
sorted set) and starts at most ``max_jobs`` jobs per poll, so the default
caps a worker near 20 jobs/s; 0.01 was the fastest on this box of the values
tried (see README). Handlers are ``async def``; the CPU one runs the loop
directly, blocking the event loop as any pure-Python work does in arq.
Logging at WARNING (arq logs every job at INFO).
Enqueue: ``await ArqRedis.enqueue_job`` (single); bulk: ``asyncio.gather`` of
``enqueue_job``, 100 at a time, on one pool (arq has no bulk API; gathering
1,000 at once was no faster here and opens a connection per job in flight).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from arq import create_pool
from arq.connections import RedisSettings

from common import stats

URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0")
POLL_DELAY = float(os.environ.get("BENCH_ARQ_POLL_DELAY", "0.01"))


async def noop(ctx: dict, payload: dict) -> None:
    stats.noop()


async def cpu(ctx: dict, payload: dict) -> None:
    stats.cpu(payload)


async def stamp(ctx: dict, payload: dict) -> None:
    stats.stamp(payload)


async def ready(ctx: dict, payload: dict) -> None:
    stats.ready()


class WorkerSettings:
    functions = [noop, cpu, stamp, ready]
    redis_settings = RedisSettings.from_dsn(URL)
    keep_result = 0
    poll_delay = POLL_DELAY
    max_jobs = 10


class Adapter:
    settings = (f"2 x `arq WorkerSettings` processes (arq has no pool), max_jobs 10 (default), "
                f"poll_delay {POLL_DELAY:g} s (default 0.5), keep_result 0, logs at WARNING")
    single_api = "await ArqRedis.enqueue_job"
    bulk_api = "asyncio.gather(enqueue_job ...), 100 in flight (no bulk API)"

    def __init__(self, url: str = URL, variant: str | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.pool = self.loop.run_until_complete(create_pool(RedisSettings.from_dsn(url)))
        self.loop.run_until_complete(self.pool.ping())

    def worker_commands(self, bin_dir: Path, concurrency: int) -> list[list[str]]:
        # arq's --custom-log-dict takes a module path to a dict
        return [[str(bin_dir / "arq"), "--custom-log-dict", "systems.arq_adapter.LOG_DICT",
                 "systems.arq_adapter.WorkerSettings"] for _ in range(concurrency)]

    def worker_env(self) -> dict[str, str]:
        return {}

    def enqueue_one(self, task: str, payload: dict[str, Any]) -> None:
        self.loop.run_until_complete(self.pool.enqueue_job(task, payload))

    def enqueue_bulk(self, task: str, payloads: list[dict[str, Any]]) -> None:
        pool = self.pool

        async def many() -> None:
            # 100 at a time: as fast here as the whole batch at once, and at most ~100 connections
            for i in range(0, len(payloads), 100):
                await asyncio.gather(*(pool.enqueue_job(task, p) for p in payloads[i:i + 100]))

        self.loop.run_until_complete(many())

    def close(self) -> None:
        self.loop.run_until_complete(self.pool.aclose())
        self.loop.close()


LOG_DICT = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"h": {"class": "logging.StreamHandler", "level": "WARNING"}},
    "loggers": {"arq": {"handlers": ["h"], "level": "WARNING"}},
}
