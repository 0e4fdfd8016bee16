"""The demo's tasks: CPU-heavy prime counting, plus a two-step workflow."""

from __future__ import annotations

import os

from backstage import Backstage, Next

app = Backstage(os.environ.get("DEMO_REDIS_URL"), prefix=os.environ.get("DEMO_PREFIX", "backstage-demo"))


@app.task("primes.count", timeout=30)
def count_primes(p: dict) -> Next:
    """Count primes below p["n"] the slow way: pure Python, all CPU."""
    lo, hi = p["lo"], p["hi"]
    found = 0
    for k in range(max(lo, 2), hi):
        d = 2
        while d * d <= k:
            if k % d == 0:
                break
            d += 1
        else:
            found += 1
    # chain a second step, enqueued atomically with this job's ack
    return Next("primes.store", {"lo": lo, "hi": hi, "found": found})


@app.task("primes.store", priority="urgent")  # runs ahead of the backlog
def store(p: dict) -> None:
    app.client.redis.hset(f"{app.prefix}:results", f"{p['lo']}-{p['hi']}", p["found"])
