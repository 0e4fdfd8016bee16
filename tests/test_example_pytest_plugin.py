"""The README's pytest example, verbatim (tests/test_readme.py checks that they match)."""

# --- README example: pytest ---
from backstage.testing import drain

from examples.fastapi_app import Report, app, build_report


def test_reports_in_process() -> None:
    with app.testing.inline() as run:  # no Redis, no worker: the worker's policy, in this process
        build_report.enqueue(Report("q1", rows=2))
    assert list(run.results.values()) == [{"title": "Q1", "cells": 6}]


def test_reports_in_a_real_worker(backstage_redis, backstage_worker) -> None:  # type: ignore[no-untyped-def]
    backstage_redis.connect(app)  # a private redis-server, flushed for each test
    job_id = build_report.enqueue(Report("q2", rows=5))
    result = drain(app, backstage_redis.url, concurrency=2, timeout=30)  # the real backstage-prefork
    assert result.processed == {"report.build": 1}
    assert app.client.result(job_id, timeout=5) == {"title": "Q2", "cells": 15}

    worker = backstage_worker(app)  # or keep one running for the test (stopped at teardown)
    build_report.enqueue(Report("q3", rows=1))
    assert worker.drain(timeout=30).processed == {"report.build": 1}
# --- end ---
