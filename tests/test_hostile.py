"""Heavy load and mixed fleets (issue 13, items 3, 5, 6, 7, 8, 11, 12, 13).

Every test runs the real ``backstage-prefork`` (app ``apps.hostile``) against
the session's redis-server, with small job counts and short jobs.
"""

from __future__ import annotations

import signal
from typing import Any

import orjson
import psutil
import redis

from backstage import Client
from backstage.protocol.keys import Keys

from .helpers import wait_until
from .workers import pending

APP = "apps.hostile"


def ledger(r: redis.Redis, prefix: str, kind: str | None = None) -> list[dict[str, Any]]:
    out = [orjson.loads(x) for x in r.lrange(f"{prefix}:ledger", 0, -1)]
    return [e for e in out if kind is None or e["kind"] == kind]


def drained(r: redis.Redis, keys: Keys, queue: str = "default") -> bool:
    return r.xlen(keys.stream(queue)) == 0 and pending(r, keys.stream(queue)) == 0


# -- 8: no false alarm ------------------------------------------------------------------------------

def test_a_single_worker_under_load_raises_no_reclaim_alarm(client: Client, r, keys, prefix, start_worker) -> None:
    """Renewal ran while settles were in flight: entries acked a moment ago looked
    "reclaimed by another worker"."""
    w = start_worker("-c", "2", "--idle-timeout", "0.3", app=APP)
    for _ in range(4):
        client.enqueue_many([("h.noop", i) for i in range(5000)])
    wait_until(lambda: drained(r, keys), 60, message=lambda: w.log()[-2000:])
    assert w.stop() == 0
    log = w.log()
    assert "no longer pending for us" not in log and "reclaimed by another worker" not in log, log[-3000:]
