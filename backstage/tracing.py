"""The tracing hook: where producers and the worker look for a tracer.

Owns one piece of state, :data:`tracer`: ``None`` unless
``backstage.contrib.otel.instrument()`` installed one. Every caller checks
it once per enqueue (producers) or once at start-up (the master), so with
no tracer nothing else runs: no OpenTelemetry import, no extra entry field,
no extra frame data. Imported by producers, the master and the children.

The wire field is ``traceparent`` (W3C Trace Context), an additive entry
field that the Go and TypeScript SDKs ignore; retries keep it (the entry's
fields are carried over) and ``Next`` steps get the trace of the job that
returned them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Protocol, Sequence

from .errors import InvalidJobError
from .protocol.wire import now_ms

if TYPE_CHECKING:
    from .client import Job

__all__ = ["Tracer", "ProducerSpan", "tracer", "prepare", "job_list", "end_spans"]


class ProducerSpan(Protocol):
    """A producer span started for one enqueue."""

    #: The W3C ``traceparent`` of this span, written into the job's entry
    #: (None when the span is not sampled and carries no context).
    traceparent: bytes | None

    def end(self, queue: str | None, job_id: str | None, error: BaseException | None) -> None:
        """Finish the span with where the job went (or why it was not enqueued)."""


class Tracer(Protocol):
    """What producers need from a tracer (the consumer side is installed in
    the children by the tracer itself, as an ``on_child_start`` hook)."""

    def start_enqueue(self, task: str) -> ProducerSpan:
        """Start a producer span for one job of ``task`` (not made current)."""

    def close(self) -> None:
        """Export buffered spans; a prefork child calls it before it exits."""


#: The installed tracer, or None (the default: tracing off, zero cost).
tracer: Tracer | None = None


# -- the producers' traced path (only run while a tracer is installed) ---------------
Spans = list[tuple[ProducerSpan, str]]


def prepare(producer: Any, tracer: Tracer, jobs: list[tuple[str, Any, dict[str, Any]]]) -> tuple[list[Any], Spans]:
    """Check and pack jobs as ``producer`` (a Client or AsyncClient) does, each
    with a producer span whose ``traceparent`` goes into the entry. Spans of
    jobs that fail to pack end with the error; nothing is sent then."""
    now = now_ms()
    now_b = b"%d" % now
    out: list[Any] = []
    spans: Spans = []
    try:
        for task, payload, options in jobs:
            span = tracer.start_enqueue(task if isinstance(task, str) else repr(task))
            try:
                options = dict(options)
                job_id, unique = options.pop("job_id", None), options.pop("unique", False)
                o = producer._resolve(task, **options)
                out.append(producer._pack(o, payload, now, now_b, span.traceparent, job_id, unique))
            except BaseException as exc:
                span.end(None, None, exc)
                raise
            spans.append((span, o.queue))
    except BaseException as exc:
        for span, queue in spans:
            span.end(queue, None, exc)
        raise
    return out, spans


def job_list(jobs: "Iterable[Job | tuple[str, Any]]", opts: dict[str, Any]) -> list[tuple[str, Any, dict[str, Any]]]:
    """``enqueue_many``'s items as (task, payload, options)."""
    from .client import Job

    out: list[tuple[str, Any, dict[str, Any]]] = []
    for job in jobs:
        if isinstance(job, Job):
            out.append((job.task, job.payload, {
                "priority": job.priority, "queue": job.queue, "delay": job.delay, "at": job.at,
                "dedupe_key": job.dedupe_key, "dedupe_ttl": job.dedupe_ttl, "attempts": job.attempts,
                "backoff": job.backoff, "timeout": job.timeout, "result_ttl": job.result_ttl,
                "job_id": job.job_id, "unique": job.unique}))
        elif isinstance(job, tuple) and len(job) == 2:
            out.append((job[0], job[1], {**opts, "dedupe_key": None, "dedupe_ttl": None}))
        else:
            raise InvalidJobError(f"enqueue_many: expected Job(...) or (task, payload) items, got {job!r:.80}")
    return out


def end_spans(spans: Spans, batch: Sequence[Any], ids: list[str | None] | None, error: BaseException | None) -> None:
    """End the producer spans of a sent (or failed) batch with each job's id."""
    for i, (span, queue) in enumerate(spans):
        span.end(queue, ids[i] if ids is not None else batch[i].job_id, error)
