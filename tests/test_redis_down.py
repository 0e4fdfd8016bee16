"""While Redis is unreachable the master sleeps between its retries (issue 21).

The real backstage-prefork against a redis-server of the test's own, which
the test kills and restarts on the same port (AOF: nothing acknowledged is
lost). The master's CPU time over the window is an absolute bound, not a
timing ratio: a master that busy-loops burns the whole window (~96 % of a
core before the fix).
"""

from __future__ import annotations

import signal
import time

import psutil

from backstage import Client

from .helpers import wait_until
from .redis_server import RedisServer
from .workers import ledger, pending

WINDOW = 3.0  # seconds of Redis outage measured
BOUND = 0.10  # of one core


def _runs(r, prefix, kind):
    return [e for e in ledger(r, prefix) if e["kind"] == kind]


def _master_cpu_over(pid: int, seconds: float) -> float:
    """Share of one core the process used over ``seconds``."""
    proc = psutil.Process(pid)
    cpu0 = sum(proc.cpu_times()[:2])
    t0 = time.monotonic()
    time.sleep(seconds)  # measuring a window, not waiting for something
    return (sum(proc.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0)


def test_master_sleeps_while_redis_is_down_and_works_when_it_is_back(aof_server: RedisServer, prefix, keys,
                                                                   start_worker):
    c = Client(aof_server.url, prefix=prefix)
    r = aof_server.client()
    w = start_worker("-c", "1", "--heartbeat-interval", "0.3", url=aof_server.url)
    c.enqueue("record", {"i": 0})
    wait_until(lambda: len(_runs(r, prefix, "record")) == 1, 20, message=lambda: w.log()[-2000:])
    aof_server.kill()
    wait_until(lambda: "Redis error during" in w.log(), 10, message=lambda: w.log()[-2000:])
    share = _master_cpu_over(w.pid, WINDOW)
    print(f"master CPU while Redis is down: {share:.1%} of a core")
    assert share < BOUND, w.log()[-3000:]
    assert w.proc.poll() is None
    aof_server.start()
    r = aof_server.client()
    c.close()
    c = Client(aof_server.url, prefix=prefix)
    c.enqueue_many([("record", {"i": i}) for i in range(1, 6)])
    wait_until(lambda: len(_runs(r, prefix, "record")) == 6, 30, message=lambda: w.log()[-2000:])
    wait_until(lambda: pending(r, keys.stream("default")) == 0, 10)
    assert "is back" in w.log()
    assert w.stop() == 0, w.log()[-2000:]
    c.close()


def test_graceful_stop_with_redis_down_sleeps_too(aof_server: RedisServer, prefix, keys, start_worker):
    c = Client(aof_server.url, prefix=prefix)
    r = aof_server.client()
    w = start_worker("-c", "1", url=aof_server.url)
    c.enqueue("slow", {"s": 5.0})
    wait_until(lambda: _runs(r, prefix, "slow-start"), 20, message=lambda: w.log()[-2000:])
    aof_server.kill()
    w.signal(signal.SIGTERM)
    wait_until(lambda: "stopping gracefully" in w.log(), 10)
    share = _master_cpu_over(w.pid, WINDOW * 2 / 3)
    print(f"master CPU during a graceful stop with Redis down: {share:.1%} of a core")
    assert share < BOUND, w.log()[-3000:]
    aof_server.start()
    assert w.wait(40) == 0, w.log()[-3000:]  # the job finished and its outcome was committed
    r = aof_server.client()
    assert len(_runs(r, prefix, "slow")) == 1
    assert pending(r, keys.stream("default")) == 0 and r.xlen(keys.stream("default")) == 0
    c.close()
