"""The child process: read job frames, run handlers, write outcomes.

Runs in each forked child of ``backstage-prefork``. The child never touches
the queue keys: it gets jobs from its pipe and answers with data (ok + an
optional workflow step, or the error's type, message and traceback).
A handler that wants to enqueue more work uses the app's normal client,
which opens its own connection after the fork.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable

import orjson

from .. import tracing
from ..app import Next
from ..context import JobContext, ProgressReporter, current_job
from ..context import _current as _current  # (backstage.testing.inline sets it too)
from ..errors import PayloadError, Reject, Retry
from ..groups import Chord, Group, check_callback, check_ttl
from ..protocol.wire import DEFAULT_MAX_PAYLOAD_BYTES, encode_payload
from . import ipc

if TYPE_CHECKING:
    from ..app import Backstage

__all__ = ["JobContext", "current_job", "current_trace", "child_main", "CHILD_BOOT_FAILED"]

#: Exit code of a child whose start-up hooks failed; the master stops on it.
CHILD_BOOT_FAILED = 3
_TB_LIMIT = 16_000


# Tracing on only (ipc.TRACED_JOBS frames): job id -> [queue, traceparent] for
# the frame being run. Kept beside the jobs, not in JobContext, so that the
# per-job path costs the same with tracing off.
_frame_traces: dict[Any, list[Any]] = {}


def current_trace() -> tuple[str | None, str | None]:
    """(queue, W3C traceparent) of the running job when the worker traces; (None, None) otherwise."""
    job = _current.get()
    t = _frame_traces.get(job.job_id) if job is not None else None
    return (t[0], t[1]) if t else (None, None)


def _title(text: str) -> None:
    try:
        import setproctitle

        setproctitle.setproctitle(text)
    except Exception:  # noqa: BLE001 - a title is cosmetic
        pass


def _error(kind: str, exc: BaseException, seq: int, dur: int, retry_ms: int | None = None) -> ipc.Err:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if len(tb) > _TB_LIMIT:
        tb = tb[:_TB_LIMIT // 2] + "\n…\n" + tb[-_TB_LIMIT // 2:]
    etype = type(exc).__qualname__
    mod = type(exc).__module__
    if mod not in ("builtins", "__main__"):
        etype = f"{mod}.{etype}"
    return ipc.Err(seq, dur, kind, etype, str(exc), tb, retry_ms)


def _fan_out(g: Group) -> ipc.FanOut:
    dumps = orjson.dumps
    members = [[t, dumps(p).decode(), q] for t, p, q in g.members]
    callback = None
    policy = "callback"
    if isinstance(g, Chord):
        t, p, q = check_callback(g.callback)
        callback = [t, dumps(p).decode(), q]
        policy = g.on_failure
    return ipc.FanOut(g.group_id, members, callback, policy, check_ttl(g.ttl))


def _next_step(result: Any, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> ipc.NextStep | ipc.FanOut | None:
    """Workflow instruction from a handler's return value (a Group/Chord: its fan-out), or None.

    Raises ValueError / PayloadError (the job then fails) for a bad delay, or
    a payload JSON cannot carry or the consumer would refuse as oversize."""
    if isinstance(result, Group):
        return _fan_out(result)
    step = _parse_step(result)
    # (text: up to 4 bytes a character; encoded again only when that could pass the limit)
    if step is not None and len(step.payload_json) * 4 > max_payload_bytes:
        size = len(step.payload_json.encode())
        if size > max_payload_bytes:
            raise PayloadError(f"next step {step.task!r}: payload of {size} bytes of JSON is over the "
                               f"{max_payload_bytes}-byte limit (Backstage(max_payload_bytes=...))")
    return step


def _parse_step(result: Any) -> ipc.NextStep | None:
    if isinstance(result, Next):
        tp = getattr(result, "traceparent", None)  # a tracer's Next (backstage.contrib.otel)
        return ipc.NextStep(result.task, round(result.delay * 1000),
                            encode_payload(result.task, result.payload).decode(), result.queue, tp or None)
    if isinstance(result, dict) and isinstance(result.get("next"), str) and result["next"]:
        # the seed SDKs' form: the delay is milliseconds, "delay" or "delay_ms" (never seconds)
        if "delay" in result and "delay_ms" in result:
            raise ValueError("workflow instruction: give \"delay\" or \"delay_ms\" (both milliseconds), not both")
        name = "delay_ms" if "delay_ms" in result else "delay"
        delay = result.get(name) or 0
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay < math.inf:
            raise ValueError(f"workflow instruction: {name}={delay!r} must be milliseconds >= 0 "
                             "(Next(task, payload, delay=seconds) takes seconds)")
        queue = result.get("queue")
        if queue is not None:
            Next(result["next"], queue=queue)  # validates the queue name
        return ipc.NextStep(result["next"], int(delay), encode_payload(result["next"], result.get("payload")).decode(),
                            queue)
    return None


def _progress_sender(out_fd: int, seq: int) -> Callable[[float, str | None], None]:
    def send(fraction: float, message: str | None) -> None:
        ipc.write_all(out_fd, ipc.pack_progress(seq, fraction, message))
    return send


def _rss() -> int:
    """This process's resident set size in bytes (one read of /proc/self/statm on Linux)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        import psutil

        return int(psutil.Process().memory_info().rss)


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def child_main(app: "Backstage", index: int, job_fd: int, out_fd: int, hooks: list[Callable[[], Any]],
               max_rss: int | None = None) -> None:
    """Entry point of a forked child; never returns (ends with ``os._exit``).

    ``max_rss`` (bytes): after each job the child reports its RSS (a
    :class:`~backstage.prefork.ipc.Memory` frame after the outcome); past the
    limit it stops before its next job and exits, and the master runs what it
    had queued elsewhere.
    """
    code = 0
    try:
        code = _run(app, index, job_fd, out_fd, hooks, max_rss)
    except BrokenPipeError:
        code = 0  # the master is gone: nobody to report to
    except BaseException:  # noqa: BLE001 - report and die; the master replaces us
        traceback.print_exc()
        code = 1
    finally:
        try:
            if tracing.tracer is not None:  # os._exit skips atexit: export buffered spans now
                tracing.tracer.close()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _run(app: "Backstage", index: int, job_fd: int, out_fd: int, hooks: list[Callable[[], Any]],
         max_rss: int | None) -> int:
    global _frame_traces
    # Ctrl-C reaches the whole process group: the master decides what children do.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for sig in (signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    app._after_fork()
    name = f"backstage-prefork: child {index}"
    _title(f"{name} starting")
    # a handler that forks without exec (multiprocessing) must not leave copies that look
    # like this child to ps, pkill -f or a supervisor counting children
    os.register_at_fork(after_in_child=lambda: _title(f"backstage-prefork-subprocess (of child {index})"))
    try:
        for hook in hooks:
            hook()
    except BaseException as exc:  # noqa: BLE001
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        ipc.write_all(out_fd, ipc.pack_boot_failed(type(exc).__qualname__, str(exc), tb))
        return CHILD_BOOT_FAILED
    ipc.write_all(out_fd, ipc.pack_ready(os.getpid()))

    tasks = app.tasks
    loop: asyncio.AbstractEventLoop | None = None
    shown = ""

    def idle() -> None:  # the title changes only when it has nothing to run, not per job
        nonlocal shown
        if shown != "idle":
            _title(f"{name} idle")
            shown = "idle"

    reader = ipc.JobFrameReader(job_fd, on_wait=idle)
    loads = orjson.loads
    perf = time.perf_counter_ns
    try:
        while True:
            frame = reader.read()
            if frame is None:
                return 0  # the master closed our pipe: stop (shutdown or recycle)
            kind, meta, blob = frame
            if kind == ipc.TRACED_JOBS:
                meta, traces = meta
                _frame_traces = {m[2]: t for m, t in zip(meta, traces)}
            for job, payload in ipc.jobs_of(meta, blob):
                task_name = job.task
                if kind == ipc.BROADCAST:
                    _run_broadcast(app, task_name, payload)
                    continue
                if shown != task_name:
                    _title(f"{name} running {task_name}")
                    shown = task_name
                seq = job.seq
                t0 = perf()
                task = tasks.get(task_name)
                out: ipc.Err | None
                if task is None:
                    out = ipc.Err(seq, 0, "unknown-task", "TaskNotFound", f"no handler for task {task_name!r}", "", None)
                else:
                    try:
                        value = loads(payload)
                    except orjson.JSONDecodeError as exc:
                        out = ipc.Err(seq, 0, "malformed", "JSONDecodeError", f"payload is not valid JSON: {exc}", "",
                                      None)
                    else:
                        reporter = None
                        if job.job_id is not None and job.want_result:
                            reporter = ProgressReporter(_progress_sender(out_fd, seq))
                        deadline = None if job.timeout is None else time.time() + job.timeout
                        token = _current.set(JobContext(job.job_id, task_name, job.attempt, index, job.queue,
                                                        deadline, reporter))
                        try:
                            if task.is_async:
                                if loop is None:
                                    loop = asyncio.new_event_loop()
                                result = loop.run_until_complete(task.handler(value))
                            else:
                                result = task.handler(value)
                            step = _next_step(result, app.max_payload_bytes)
                            value = orjson.dumps(result).decode() if job.want_result and step is None else None
                            out = None
                            dur = perf() - t0
                        except Retry as exc:
                            delay = None if exc.delay is None else round(exc.delay * 1000)
                            out = _error("retry", exc, seq, perf() - t0, delay)
                        except Reject as exc:
                            out = _error("reject", exc, seq, perf() - t0)
                        except Exception as exc:  # noqa: BLE001 - every failure becomes data
                            out = _error("error", exc, seq, perf() - t0)
                        finally:
                            _current.reset(token)
                            if reporter is not None:
                                reporter.flush()  # before the outcome: the master applies them in order
                try:
                    frame_out = ipc.pack_ok(seq, dur, step, value) if out is None else ipc.pack_err(out)
                except TypeError as exc:  # e.g. a Next payload orjson cannot carry
                    frame_out = ipc.pack_err(_error("error", exc, seq, perf() - t0))
                ipc.write_all(out_fd, frame_out)
                if max_rss is not None:
                    rss = _rss()
                    ipc.write_all(out_fd, ipc.pack_memory(rss, rss > max_rss))
                    if rss > max_rss:
                        # over the limit: run nothing more (not even the rest of this frame); the
                        # master hands what we hold to other children and forks a fresh one
                        return 0
    finally:
        if loop is not None:
            loop.close()


def _run_broadcast(app: "Backstage", task_name: str, payload: bytes) -> None:
    """Run every ``@app.on_broadcast(task_name)`` handler; errors are logged, never fatal."""
    handlers = app.broadcast_handlers.get(task_name, ())
    if not handlers:
        return
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        print(f"backstage: broadcast {task_name!r} has an invalid JSON payload; ignored", file=sys.stderr)
        return
    for handler in handlers:
        try:
            handler(value)
        except Exception:  # noqa: BLE001 - a broadcast handler must not take the child down
            traceback.print_exc()
