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

from typing import Protocol

__all__ = ["Tracer", "ProducerSpan", "tracer"]


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
