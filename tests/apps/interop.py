"""Handlers for every task name in the Go/TS test vectors; each records its
task name and raw payload in P:ledger."""

from __future__ import annotations

import os

import orjson

from backstage import Backstage

app = Backstage(os.environ.get("BT_REDIS_URL", "redis://127.0.0.1:6379/0"))  # default prefix "backstage"

NAMES = ["order.process", "payment.charge", "cache.warm", "email.receipt", "report.build", "report.hourly",
         "reminder.send", "payment.retry", "cleanup"]


def _make(name: str):
    def handler(payload: object) -> None:
        app.client.redis.rpush(f"{app.prefix}:ledger", orjson.dumps({"task": name, "payload": payload}))
    return handler


for _name in NAMES:
    app.task(_name)(_make(_name))
