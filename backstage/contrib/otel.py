"""OpenTelemetry tracing for Backstage (extra ``backstage[otel]``).

``instrument(app)`` installs a tracer in :mod:`backstage.tracing`:

- **producer span** per enqueue (``enqueue <task>``, kind PRODUCER) in any
  process that enqueues, its W3C ``traceparent`` written into the job's
  entry (an additive field; the Go and TS SDKs ignore it);
- **consumer span** per job in the prefork child (``run <task>``, kind
  CONSUMER), child of that ``traceparent``, with the task, queue, job id,
  attempt and outcome (``ok``, ``next``, ``error``, ``retry``, ``reject``);
- a ``Next`` step gets a producer span of its own under the consumer span,
  so a chain of jobs stays one trace. Retries keep the entry's
  ``traceparent``: every attempt is a sibling under the same producer span.

Call it in the app module (the worker imports it before forking, so the
children inherit it). Without this call nothing here is imported and
producers and workers run exactly as before.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .. import __version__, tracing
from ..app import Next
from ..errors import Reject, Retry
from ..prefork.child import current_job, current_trace

if TYPE_CHECKING:
    from ..app import Backstage, Task

__all__ = ["instrument", "uninstrument", "TracedNext"]

_PROPAGATOR = TraceContextTextMapPropagator()
SYSTEM = "backstage"


@dataclass(frozen=True)
class TracedNext(Next):
    """A ``Next`` step carrying the ``traceparent`` its job should continue."""

    traceparent: str | None = None


class _ProducerSpan:
    __slots__ = ("span", "traceparent")

    def __init__(self, span: Any) -> None:
        self.span = span
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        tp = carrier.get("traceparent")
        self.traceparent = tp.encode() if tp else None

    def end(self, queue: str | None, job_id: str | None, error: BaseException | None) -> None:
        span = self.span
        if queue is not None:
            span.set_attribute("messaging.destination.name", queue)
        if job_id is not None:
            span.set_attribute("messaging.message.id", job_id)
        elif error is None:
            span.set_attribute("backstage.deduplicated", True)
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()


class _Tracer:
    """The :class:`backstage.tracing.Tracer` backed by an OpenTelemetry tracer."""

    def __init__(self, tracer_provider: Any = None) -> None:
        self.provider = tracer_provider
        self.tracer = trace.get_tracer("backstage", __version__, tracer_provider=tracer_provider)

    def start_enqueue(self, task: str) -> _ProducerSpan:
        return _ProducerSpan(self.tracer.start_span(
            f"enqueue {task}", kind=SpanKind.PRODUCER,
            attributes={"messaging.system": SYSTEM, "messaging.operation.type": "send", "backstage.task": task}))

    @contextlib.contextmanager
    def consume(self, task: str) -> Iterator[Callable[[Any], Any]]:
        """Run one job under a consumer span; yields ``finish(result)``."""
        job = current_job()
        queue, traceparent = current_trace()
        parent = _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None
        attrs: dict[str, Any] = {"messaging.system": SYSTEM, "messaging.operation.type": "process",
                                 "backstage.task": task}
        if job is not None:
            attrs["backstage.attempt"] = job.attempt
            if job.job_id:
                attrs["messaging.message.id"] = job.job_id
        if queue:
            attrs["messaging.destination.name"] = queue
        with self.tracer.start_as_current_span(f"run {task}", context=parent, kind=SpanKind.CONSUMER,
                                               attributes=attrs, record_exception=False,
                                               set_status_on_exception=False) as span:
            try:
                yield lambda result: self._finish(span, result)
            except Retry as exc:
                span.set_attribute("backstage.outcome", "retry")
                span.record_exception(exc)
                raise
            except Reject as exc:
                span.set_attribute("backstage.outcome", "reject")
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise
            except BaseException as exc:
                span.set_attribute("backstage.outcome", "error")
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                raise

    def _finish(self, span: Any, result: Any) -> Any:
        if not isinstance(result, Next):
            span.set_attribute("backstage.outcome", "ok")
            return result
        span.set_attribute("backstage.outcome", "next")
        producer = self.start_enqueue(result.task)  # child of the consumer span (current)
        producer.end(result.queue, None, None)
        tp = producer.traceparent.decode() if producer.traceparent else None
        return TracedNext(result.task, result.payload, result.delay, result.queue, traceparent=tp)

    def close(self) -> None:
        """Export what is buffered: a prefork child calls it before it exits."""
        flush = getattr(self.provider or trace.get_tracer_provider(), "force_flush", None)
        if flush is not None:
            flush(5000)

    def wrap(self, task: "Task[Any, Any]") -> None:
        """Run ``task``'s handler under a consumer span (in a prefork child)."""
        inner = task.handler
        if getattr(inner, "_backstage_traced", False):
            return
        name = task.name
        if task.is_async:
            async def traced_async(value: Any) -> Any:
                with self.consume(name) as finish:
                    return finish(await inner(value))
            handler: Callable[[Any], Any] = traced_async
        else:
            def traced(value: Any) -> Any:
                with self.consume(name) as finish:
                    return finish(inner(value))
            handler = traced
        handler._backstage_traced = True  # type: ignore[attr-defined]
        task.handler = handler


def instrument(app: "Backstage | None" = None, *, tracer_provider: Any = None) -> None:
    """Trace enqueues in this process and, given ``app``, its jobs in the prefork children.

    Args:
        app: the app whose handlers get consumer spans when ``backstage-prefork``
            runs it (call this in the app module, before the worker forks).
        tracer_provider: an OpenTelemetry ``TracerProvider`` (default: the global one).
    """
    tracer = _Tracer(tracer_provider)
    tracing.tracer = tracer
    if app is not None:
        def wrap_all() -> None:
            for task in app.tasks.values():
                tracer.wrap(task)

        app.on_child_start(wrap_all)


def uninstrument() -> None:
    """Stop tracing enqueues in this process (spans already started still end)."""
    tracing.tracer = None
