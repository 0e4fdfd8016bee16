"""An app traced with backstage.contrib.otel, for tests/test_otel.py.

In the worker (``BT_SPANS`` set) every span is written as a JSON line to
that file, so the test process can read the children's spans.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import orjson
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from backstage import Backoff, Backstage, Next
from backstage.contrib.otel import instrument
from backstage.prefork.child import current_job

app = Backstage(os.environ.get("BACKSTAGE_REDIS_URL", "redis://127.0.0.1:6379/0"), prefix="traced")


@app.task("step.one")
def step_one(p: dict[str, int]) -> Next:
    return Next("step.two", payload={"n": p["n"] + 1})


@app.task("step.two", attempts=2, backoff=Backoff.fixed(0.0))
def step_two(p: dict[str, int]) -> int:
    job = current_job()
    if job is not None and job.attempt == 1:
        raise RuntimeError("first attempt fails")
    return p["n"] * 10


class JsonLinesExporter(SpanExporter):
    """Appends each finished span to a file (one small O_APPEND write per span)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "ab") as f:
            for s in spans:
                ctx = s.get_span_context()
                assert ctx is not None
                line: dict[str, Any] = {
                    "name": s.name, "kind": s.kind.name, "trace_id": f"{ctx.trace_id:032x}",
                    "span_id": f"{ctx.span_id:016x}",
                    "parent_id": f"{s.parent.span_id:016x}" if s.parent is not None else None,
                    "attributes": dict(s.attributes or {}), "status": s.status.status_code.name,
                    "pid": os.getpid(),
                }
                f.write(orjson.dumps(line) + b"\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


if os.environ.get("BT_SPANS"):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(os.environ["BT_SPANS"])))
    instrument(app, tracer_provider=provider)
