"""Opt-in job status and results, through the real worker."""

from __future__ import annotations

import asyncio

import pytest

from backstage import AsyncClient, JobFailed, ResultNotFound, ResultTimeout

from .helpers import wait_until


def test_result_of_a_successful_job(client, r, keys, start_worker):
    app_defaults = {"compute": 60.0}
    job = client.enqueue("compute", {"xs": [1, 2, 3]}, result_ttl=app_defaults["compute"])
    assert client.status(job) == "queued"
    start_worker("-c", "1")
    value = client.result(job, timeout=20)
    assert value["sum"] == 6
    assert client.status(job) == "done"
    ttl = r.pttl(keys.result(job))
    assert 0 < ttl <= 60_000


def test_result_of_a_failing_job_raises_its_error(client, start_worker):
    job = client.enqueue("compute.fail", {"key": "k1"}, result_ttl=60)
    start_worker("-c", "1")
    wait_until(lambda: client.status(job) in ("failed", "dead"), 20)
    with pytest.raises(JobFailed) as info:
        client.result(job, timeout=20)
    err = info.value
    assert err.reason == "failed" and err.error_type == "KeyError" and "missing k1" in err.message
    assert "Traceback" in err.traceback and err.job_id == job
    assert client.status(job) == "dead"


def test_result_of_a_job_past_its_time_limit(client, start_worker):
    job = client.enqueue("compute.slow", {"s": 5}, result_ttl=60)
    start_worker("-c", "1")
    wait_until(lambda: client.status(job) == "running", 20)
    with pytest.raises(JobFailed) as info:
        client.result(job, timeout=20)
    assert info.value.reason == "timeout" and info.value.error_type == "TimeLimitExceeded"


def test_result_wait_times_out(client, start_worker):
    job = client.enqueue("compute.slow", {"s": 2}, result_ttl=60)
    with pytest.raises(ResultTimeout, match="still queued"):
        client.result(job, timeout=0.2)
    start_worker("-c", "1")
    wait_until(lambda: client.status(job) == "running", 20)
    with pytest.raises(ResultTimeout, match="still running"):
        client.result(job, timeout=0.1)


def test_untracked_jobs_keep_no_status(client, r, keys, prefix):
    job = client.enqueue("record", {"x": 1})
    assert client.status(job) is None
    with pytest.raises(ResultNotFound, match="result_ttl"):
        client.result(job, timeout=1)
    assert not list(r.scan_iter(f"{prefix}:result:*"))  # no per-job cost


def test_delayed_tracked_job_is_scheduled(client):
    job = client.enqueue("compute", {"xs": [1]}, delay=60, result_ttl=30)
    assert client.status(job) == "scheduled"


def test_async_client_result(redis_url, prefix, start_worker):
    async def main():
        async with AsyncClient(redis_url, prefix=prefix) as c:
            job = await c.enqueue("compute", {"xs": [4, 5]}, result_ttl=60)
            assert await c.status(job) == "queued"
            start_worker("-c", "1")
            return await c.result(job, timeout=20)

    assert asyncio.run(main())["sum"] == 9


def test_bad_result_ttl(client):
    with pytest.raises(ValueError, match="result_ttl"):
        client.enqueue("compute", {}, result_ttl=0)
