"""Prometheus metrics served by the master, scraped over HTTP during a run."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .helpers import wait_until
from .redis_server import free_port
from .workers import ledger


def scrape(port: int, path: str = "/metrics") -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def up(port: int) -> bool:
    try:
        scrape(port)
        return True
    except (urllib.error.URLError, ConnectionError):
        return False


def test_metrics_match_the_jobs_run(client, r, prefix, start_worker):
    port = free_port()
    client.enqueue_many([("record", {"i": i}) for i in range(50)])
    client.enqueue_many([("slow", {"i": i, "s": 1.5}) for i in range(2)], priority="low")
    client.enqueue("fail", {"x": 1})       # attempts=3: 3 failures, 2 retries, 1 dead letter
    client.enqueue("no.such.task", {})      # dead-lettered at once
    client.enqueue("retry-once", {})        # raise Retry once: a retry, not a failure
    w = start_worker("-c", "2", "--metrics-port", str(port))
    wait_until(lambda: up(port), 10, message=lambda: w.log()[-1000:])
    # during the run: once the other jobs are done, the two slow ones hold both children
    wait_until(lambda: len([e for e in ledger(r, prefix) if e["kind"] == "slow-start"]) == 2, 20)
    wait_until(lambda: scrape(port).get(("backstage_jobs_processed_total", (("queue", "default"), ("task", "record")))) == 50, 20)
    m = scrape(port)
    assert m[("backstage_children", ())] == 2
    assert m[("backstage_children_busy", ())] == 2
    assert m[("backstage_queue_pending", (("queue", "low"),))] == 2
    wait_until(lambda: len([e for e in ledger(r, prefix) if e["kind"] == "slow"]) == 2, 20)
    wait_until(lambda: scrape(port).get(("backstage_jobs_dead_lettered_total", (("queue", "default"), ("task", "fail")))) == 1, 20)
    m = scrape(port)
    rec = (("queue", "default"), ("task", "record"))
    assert m[("backstage_jobs_processed_total", rec)] == 50
    assert m[("backstage_jobs_processed_total", (("queue", "low"), ("task", "slow")))] == 2
    fail = (("queue", "default"), ("task", "fail"))
    assert m[("backstage_jobs_failed_total", fail)] == 3
    assert m[("backstage_jobs_retried_total", fail)] == 2
    once = (("queue", "default"), ("task", "retry-once"))
    wait_until(lambda: scrape(port).get(("backstage_jobs_processed_total", once)) == 1, 20)
    m = scrape(port)
    assert m[("backstage_jobs_retried_total", once)] == 1 and m.get(("backstage_jobs_failed_total", once), 0) == 0
    # names the app does not know share one label: input cannot blow up cardinality
    assert m[("backstage_jobs_dead_lettered_total", (("queue", "default"), ("task", "(unknown)")))] == 1
    assert m[("backstage_job_duration_seconds_count", (("task", "record"),))] == 50
    assert m[("backstage_job_duration_seconds_bucket", (("le", "+Inf"), ("task", "slow")))] == 2
    assert m[("backstage_job_duration_seconds_bucket", (("le", "1.0"), ("task", "slow")))] == 0
    assert m[("backstage_queue_length", (("queue", "default"),))] == 0
    assert m[("backstage_queue_pending", (("queue", "default"),))] == 0
    assert m[("backstage_children_busy", ())] == 0
    with pytest.raises(urllib.error.HTTPError, match="404"):
        scrape(port, "/nope")
    # a heartbeat (every 2 s) written after every job ended: fail's three attempts, not the Retry
    [presence] = wait_until(lambda: [p for p in client.workers() if p["processed"] == 50 + 2 + 1], 10)
    assert presence["failed"] == 3
    assert w.stop() == 0
    log = w.log()
    assert "retry-once) attempt 1 asked for a retry (retry requested); retry in" in log
    assert "retry-once) attempt 1 failed" not in log
    # a clean stop says "stopped", not "replaced"
    assert "replaced" not in log and log.count(") stopped") == 2


def test_recycles_and_redis_errors_are_counted(client, r, prefix, start_worker, aof_server):
    port = free_port()
    client2 = type(client)(aof_server.url, prefix=prefix)
    client2.enqueue_many([("record", {"i": i}) for i in range(6)])
    w = start_worker("-c", "1", "--max-tasks-per-child", "2", "--metrics-port", str(port), url=aof_server.url)
    wait_until(lambda: up(port), 10)
    wait_until(lambda: scrape(port).get(("backstage_child_recycles_total", (("cause", "max tasks"),)), 0) >= 3, 20)
    aof_server.kill()
    wait_until(lambda: sum(v for (n, _), v in scrape(port).items() if n == "backstage_redis_errors_total") >= 1, 20)
    aof_server.start()
    client2.close()
    assert w.stop() == 0
