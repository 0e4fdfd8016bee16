"""FastAPI + Backstage: a request enqueues a typed job, another reads its result.

Run it (from the repository root, with Redis on $BACKSTAGE_REDIS_URL):

    uvicorn examples.fastapi_app:api          # the web app
    backstage-prefork examples.fastapi_app    # the worker

    curl -X POST localhost:8000/reports -H 'content-type: application/json' \\
         -d '{"title": "q3", "rows": 4}'
    curl 'localhost:8000/reports/<job_id>?wait=5'

tests/test_fastapi.py drives this file through httpx's ASGI transport
against a real redis-server and a real worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, HTTPException, Request

from backstage import Backstage, JobFailed, ResultTimeout
from backstage.contrib.asgi import backstage_lifespan, client_of, enqueue

app = Backstage(prefix=os.environ.get("EXAMPLE_PREFIX", "example"))


@dataclass
class Report:
    title: str
    rows: int


@app.task("report.build", result_ttl=300, attempts=3)
def build_report(report: Report) -> dict[str, Any]:
    # runs in a prefork child; `report` is a Report again (rebuilt from JSON)
    return {"title": report.title.upper(), "cells": report.rows * 3}


api = FastAPI(lifespan=backstage_lifespan(app))


@api.post("/reports", status_code=202)
async def create_report(report: Report, request: Request) -> dict[str, Any]:
    job_id = await enqueue(request, build_report, report)
    return {"job_id": job_id}


@api.get("/reports/{job_id}")
async def read_report(job_id: str, request: Request, wait: float = 0.0) -> dict[str, Any]:
    client = client_of(request)
    status = await client.status(job_id)
    if status is None:
        raise HTTPException(404, f"no report job {job_id}")
    if wait > 0 or status == "done":
        try:
            return {"status": "done", "report": await client.result(job_id, timeout=min(wait, 30.0))}
        except ResultTimeout:
            status = await client.status(job_id) or status
        except JobFailed as exc:
            return {"status": "dead", "error": str(exc)}
    return {"status": status}
