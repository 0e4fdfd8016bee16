"""The FastAPI example (examples/fastapi_app.py) through httpx's ASGI transport,
with its lifespan run for real, a real redis-server and the real worker."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from examples import fastapi_app as example


def test_fastapi_example_enqueues_and_reads_results(backstage_redis: Any, backstage_worker: Any) -> None:
    backstage_redis.connect(example.app)
    worker = backstage_worker(example.app, concurrency=1)

    async def scenario() -> None:
        async with example.api.router.lifespan_context(example.api):
            transport = httpx.ASGITransport(app=example.api)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                resp = await http.post("/reports", json={"title": "q3", "rows": 4})
                assert resp.status_code == 202, resp.text
                job_id = resp.json()["job_id"]
                resp = await http.get(f"/reports/{job_id}", params={"wait": 20})
                assert resp.json() == {"status": "done", "report": {"title": "Q3", "cells": 12}}
                bad = await http.post("/reports", json={"title": "q4", "rows": "many"})
                assert bad.status_code == 422  # FastAPI refuses it; nothing is enqueued
                missing = await http.get("/reports/nope")
                assert missing.status_code == 404
        with pytest.raises(RuntimeError, match="no Backstage client"):
            example.client_of(type("R", (), {"app": example.api})())

    asyncio.run(scenario())
    result = worker.drain(timeout=30)
    assert result.processed == {"report.build": 1}
    assert worker.stop() == 0
