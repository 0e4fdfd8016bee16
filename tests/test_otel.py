"""OpenTelemetry: one trace from an HTTP request through two chained jobs
run by the real worker (producer spans here, consumer spans in its children)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Iterator

import httpx
import orjson
import pytest
from fastapi import FastAPI, Request
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from backstage import tracing
from backstage.contrib.asgi import backstage_lifespan, enqueue
from backstage.contrib.otel import instrument, uninstrument
from backstage.protocol import wire

from .apps import traced


@pytest.fixture
def exporter() -> Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    mem = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(mem))
    instrument(tracer_provider=provider)
    yield mem, provider
    uninstrument()
    assert tracing.tracer is None


def _web_app(provider: TracerProvider) -> FastAPI:
    tracer = provider.get_tracer("test-http")
    api = FastAPI(lifespan=backstage_lifespan(traced.app))

    @api.middleware("http")
    async def server_span(request: Request, call_next: Any) -> Any:
        # what an ASGI instrumentation does: one SERVER span per request
        with tracer.start_as_current_span(f"{request.method} {request.url.path}", kind=SpanKind.SERVER):
            return await call_next(request)

    @api.post("/chain")
    async def chain(request: Request) -> dict[str, Any]:
        return {"job_id": await enqueue(request, traced.step_one, {"n": 1})}

    return api


def test_one_trace_from_a_request_through_two_chained_jobs(exporter: Any, backstage_redis: Any,
                                                            backstage_worker: Any, tmp_path: Path) -> None:
    mem, provider = exporter
    backstage_redis.connect(traced.app)
    api = _web_app(provider)

    async def request() -> str:
        async with api.router.lifespan_context(api):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://t") as http:
                resp = await http.post("/chain")
                assert resp.status_code == 200, resp.text
                return str(resp.json()["job_id"])

    job_id = asyncio.run(request())
    # the entry carries the producer span's traceparent (an additive field other SDKs ignore)
    [(_, fields)] = backstage_redis.client().xrange("traced:default")
    assert fields[b"traceparent"].startswith(b"00-")
    assert isinstance(wire.decode_entry(fields), wire.Entry)

    spans_file = tmp_path / "spans.jsonl"
    worker = backstage_worker(traced.app, env={"BT_SPANS": str(spans_file)})
    result = worker.drain(timeout=30)
    assert result.processed == {"step.one": 1, "step.two": 1} and result.retried == {"step.two": 1}
    assert worker.stop() == 0

    local = {s.name: s for s in mem.get_finished_spans()}
    http_span, producer = local["POST /chain"], local["enqueue step.one"]
    trace_id = f"{http_span.context.trace_id:032x}"
    assert producer.kind == SpanKind.PRODUCER and producer.parent is not None
    assert producer.parent.span_id == http_span.context.span_id
    assert producer.attributes["messaging.message.id"] == job_id
    assert producer.attributes["messaging.destination.name"] == "default"

    remote = [orjson.loads(line) for line in spans_file.read_text().splitlines()]
    assert {s["trace_id"] for s in remote} == {trace_id}  # one trace, end to end
    by_name: dict[str, list[dict[str, Any]]] = {}
    for s in remote:
        by_name.setdefault(s["name"], []).append(s)
    [run_one] = by_name["run step.one"]
    [next_producer] = by_name["enqueue step.two"]
    runs_two = sorted(by_name["run step.two"], key=lambda s: s["attributes"]["backstage.attempt"])
    assert run_one["kind"] == "CONSUMER" and run_one["parent_id"] == f"{producer.context.span_id:016x}"
    assert run_one["attributes"] == {
        "messaging.system": "backstage", "messaging.operation.type": "process", "backstage.task": "step.one",
        "backstage.attempt": 1, "messaging.message.id": job_id, "messaging.destination.name": "default",
        "backstage.outcome": "next"}
    assert next_producer["kind"] == "PRODUCER" and next_producer["parent_id"] == run_one["span_id"]
    # the retry keeps the entry's traceparent: both attempts hang under the Next step's producer span
    assert [(s["attributes"]["backstage.attempt"], s["attributes"]["backstage.outcome"], s["status"])
            for s in runs_two] == [(1, "error", "ERROR"), (2, "ok", "UNSET")]
    assert {s["parent_id"] for s in runs_two} == {next_producer["span_id"]}


def test_tracing_is_off_unless_instrumented(backstage_redis: Any) -> None:
    assert tracing.tracer is None
    backstage_redis.connect(traced.app)
    traced.app.enqueue("step.one", {"n": 1})
    [(_, fields)] = backstage_redis.client().xrange("traced:default")
    assert b"traceparent" not in fields


def test_every_enqueue_path_carries_the_traceparent(exporter: Any, backstage_redis: Any) -> None:
    mem, _provider = exporter
    backstage_redis.connect(traced.app)
    r = backstage_redis.client()
    app = traced.app
    plain = app.enqueue("step.one", {"n": 1})
    deduped = app.enqueue("step.one", {"n": 2}, dedupe_key="d")  # enqueue.lua
    assert app.enqueue("step.one", {"n": 3}, dedupe_key="d") is None
    later = app.enqueue("step.one", {"n": 4}, delay=60)  # a scheduled member
    many = app.enqueue_many([("step.one", {"n": 5}), ("step.two", {"n": 6})])
    entries = {f[b"jobId"].decode(): f for _, f in r.xrange("traced:default")}
    [member] = r.zrange("traced:scheduled", 0, -1)
    assert set(entries) == {plain, deduped, *many}
    spans = {s.attributes.get("messaging.message.id"): s for s in mem.get_finished_spans()}
    for job_id in (plain, deduped, *many):
        tp = entries[job_id][b"traceparent"].decode()
        assert tp.split("-")[2] == f"{spans[job_id].context.span_id:016x}"
    assert orjson.loads(member)["traceparent"].split("-")[2] == f"{spans[later].context.span_id:016x}"
    skipped = [s for s in mem.get_finished_spans() if s.attributes.get("backstage.deduplicated")]
    assert len(skipped) == 1
