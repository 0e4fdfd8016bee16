"""Celery: the app its worker runs, and how the driver drives it.

Worker: ``celery -A systems.celery_adapter worker -P prefork -c 2 -O fair
--without-gossip --without-mingle --without-heartbeat --loglevel WARNING``;
Redis broker, no result backend (``task_ignore_result``), prefetch multiplier at
its default (4). Celery acknowledges a message when the worker receives it
(its default, ``task_acks_late=False``): at-most-once, cheaper than backstage's
at-least-once.
Enqueue: ``Task.apply_async`` (single); bulk: Celery has no bulk enqueue, so a
batch is ``apply_async`` in a loop on one producer acquired once
(``app.producer_or_acquire()``), the fastest documented way (a ``group`` does
the same publishes and adds a group id to every message).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Celery

from common import stats

URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0")

app = Celery("bench", broker=URL)
app.conf.update(
    task_ignore_result=True,
    result_backend=None,
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=True,
    worker_redirect_stdouts=False,
)


@app.task(name="noop")
def noop(payload: dict) -> None:
    stats.noop()


@app.task(name="cpu")
def cpu(payload: dict) -> None:
    stats.cpu(payload)


@app.task(name="stamp")
def stamp(payload: dict) -> None:
    stats.stamp(payload)


@app.task(name="ready")
def ready(payload: dict) -> None:
    stats.ready()


TASKS = {"noop": noop, "cpu": cpu, "stamp": stamp, "ready": ready}


class Adapter:
    settings = ("celery worker -P prefork -c N -O fair --without-gossip --without-mingle --without-heartbeat "
                "--loglevel WARNING; Redis broker, no result backend, prefetch multiplier 4 (default); "
                "acks on receipt (default, at-most-once)")
    single_api = "Task.apply_async"
    bulk_api = "Task.apply_async in a loop on one producer (no bulk API)"

    def __init__(self, url: str = URL, variant: str | None = None) -> None:
        with app.producer_or_acquire() as p:  # connect now, not inside the first timed call
            p.connection.ensure_connection()

    def worker_commands(self, bin_dir: Path, concurrency: int) -> list[list[str]]:
        return [[str(bin_dir / "celery"), "-A", "systems.celery_adapter", "worker", "-P", "prefork",
                 "-c", str(concurrency), "-O", "fair", "--without-gossip", "--without-mingle",
                 "--without-heartbeat", "--loglevel", "WARNING"]]

    def worker_env(self) -> dict[str, str]:
        return {}

    def enqueue_one(self, task: str, payload: dict[str, Any]) -> None:
        TASKS[task].apply_async((payload,))

    def enqueue_bulk(self, task: str, payloads: list[dict[str, Any]]) -> None:
        t = TASKS[task]
        with app.producer_or_acquire() as producer:
            for p in payloads:
                t.apply_async((p,), producer=producer)

    def close(self) -> None:
        app.close()
