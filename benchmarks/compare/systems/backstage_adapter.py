"""Backstage: the app its worker runs, and how the driver drives it.

Worker: ``backstage-prefork -c 2 --log-level warning systems.backstage_adapter:app``,
every other option at its default (prefetch 1 per child, --max-batch 32).
Enqueue: ``Client.enqueue`` (single), ``Client.enqueue_many`` (bulk, one
pipelined call per batch).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from backstage import Backstage, Client

from common import stats

URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0")
PREFIX = "bench"

app = Backstage(URL, prefix=PREFIX)


@app.task("noop")
def noop(payload: dict) -> None:
    stats.noop()


@app.task("cpu")
def cpu(payload: dict) -> None:
    stats.cpu(payload)


@app.task("stamp")
def stamp(payload: dict) -> None:
    stats.stamp(payload)


@app.task("ready")
def ready(payload: dict) -> None:
    stats.ready()


class Adapter:
    settings = ("backstage-prefork -c N (prefork master + N children), defaults otherwise: "
                "prefetch 1 per child, --max-batch 32, --log-level warning; at-least-once (ack after the handler)")
    single_api = "Client.enqueue"
    bulk_api = "Client.enqueue_many (one pipelined call per batch)"

    def __init__(self, url: str = URL, variant: str | None = None) -> None:
        self.client = Client(url, prefix=PREFIX)
        self.client.ping()

    def worker_commands(self, bin_dir: Path, concurrency: int) -> list[list[str]]:
        return [[str(bin_dir / "backstage-prefork"), "-c", str(concurrency), "--log-level", "warning",
                 "systems.backstage_adapter:app"]]

    def worker_env(self) -> dict[str, str]:
        return {}

    def enqueue_one(self, task: str, payload: dict[str, Any]) -> None:
        self.client.enqueue(task, payload)

    def enqueue_bulk(self, task: str, payloads: list[dict[str, Any]]) -> None:
        self.client.enqueue_many([(task, p) for p in payloads])

    def close(self) -> None:
        self.client.close()
