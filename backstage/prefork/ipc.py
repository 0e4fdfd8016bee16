"""Frames between the master and its children (one pipe pair per child).

Every frame is built and parsed here, into named types on both sides; no
other module reads a frame by position.

Master → child, a *job frame*::

    <u8 kind> <u32 meta length> <u32 blob length> <meta: orjson> <blob>

``kind`` :data:`JOBS` carries jobs: meta is a list of rows
``[seq, task, job_id, attempt, payload_len, want_result, queue, timeout]`` (:data:`JobRow`
as the master builds them, :class:`JobMeta` as the child reads them) and blob the
payloads, concatenated, exactly as read from Redis: the master never decodes
a payload. ``kind`` :data:`BROADCAST` carries broadcast messages the same way
(seq 0); the child runs its ``@app.on_broadcast`` handlers and answers nothing.
``kind`` 3 carries jobs while tracing is on: meta is ``[jobs_meta, traces]``,
``traces`` holding ``[queue, traceparent]`` per job, in the same order.

Child → master, an *outcome frame*: ``<u32 length> <orjson list>``, one of
(:func:`parse_outcome` turns them into the named types)::

    ["ready", pid]                                        Ready
    ["boot-failed", error_type, message, traceback]       BootFailed
    ["ok", seq, duration_ns, next, value]                 Ok
        next: null | [task, delay_ms, payload_json, queue(, traceparent)] (NextStep);
        value: the return value as JSON text, when asked for
    ["err", seq, duration_ns, kind, error_type, message, traceback, retry_delay_ms]   Err
    ["mem", rss, full]                                    Memory
        sent after each outcome only under --max-memory-per-child: the child's RSS
        in bytes after that job; ``full``: past the limit, it ran nothing since and exits
    ["progress", seq, fraction, message]                  Progress (coalesced in the child)

``kind`` is ``error``, ``retry``, ``reject``, ``malformed`` or ``unknown-task``.
Everything is data: no pickled objects cross the pipe.
"""

from __future__ import annotations

import os
import select
import struct
from typing import Any, Callable, Iterator, NamedTuple, Sequence, Tuple, Union

import orjson

__all__ = ["JOBS", "BROADCAST", "TRACED_JOBS", "JobRow", "JobMeta", "NextStep", "FanOut", "Ready", "BootFailed", "Ok",
           "Err", "Memory", "Progress", "Outcome", "pack_jobs", "pack_traced_jobs", "pack_progress", "pack_broadcast",
           "pack_outcome", "pack_ready", "pack_boot_failed", "pack_ok", "pack_err", "pack_memory", "parse_outcome",
           "jobs_of", "FrameReader", "JobFrameReader", "write_all", "set_pipe_size"]

JOBS = 1
BROADCAST = 2
TRACED_JOBS = 3

_JOB_HEAD = struct.Struct("<BII")
_OUT_HEAD = struct.Struct("<I")
MAX_FRAME = 1 << 30


#: One job's meta row as the master builds it, in :class:`JobMeta`'s field
#: order: a plain tuple, because the master builds one per job on its hot
#: path (a NamedTuple costs ~0.4 us more each, and orjson cannot dump one).
JobRow = Tuple[int, str, "str | None", int, int, bool, str, "float | None"]


class JobMeta(NamedTuple):
    """What a child needs to run one job, besides its payload (a :data:`JobRow`, named)."""

    seq: int  # the master's number for this delivery: its outcome names it
    task: str
    job_id: str | None
    attempt: int
    payload_len: int
    want_result: bool  # the job keeps a status (or is a chord member): send the return value back
    queue: str = "default"
    timeout: float | None = None  # its time limit in seconds


class NextStep(NamedTuple):
    """A workflow instruction returned by a handler."""

    task: str
    delay_ms: int
    payload_json: str
    queue: str | None
    traceparent: str | None = None  # the span of the handler that returned it (tracing on)


class FanOut(NamedTuple):
    """A group or chord returned by a handler: members (and callback) written with its ack."""

    group_id: str | None
    members: list[list[Any]]  # [task, payload_json, queue | None] each
    callback: list[Any] | None  # [task, payload_json, queue | None], or None for a group
    on_failure: str
    ttl_ms: int


class Progress(NamedTuple):
    seq: int
    fraction: float
    message: str | None


class Ready(NamedTuple):
    pid: int


class BootFailed(NamedTuple):
    error_type: str
    message: str
    traceback: str


class Ok(NamedTuple):
    seq: int
    duration_ns: int
    next: NextStep | FanOut | None
    value: str | None  # the return value as JSON text, when the job asked for it


class Err(NamedTuple):
    seq: int
    duration_ns: int
    kind: str
    error_type: str
    message: str
    traceback: str
    retry_delay_ms: int | None


class Memory(NamedTuple):
    """The child's RSS after its last job (only under a memory limit)."""

    rss: int  # bytes
    full: bool  # past the limit: it runs nothing more and exits


Outcome = Union[Ready, BootFailed, Ok, Err, Memory, Progress]


# -- master → child ------------------------------------------------------------------
def pack_jobs(kind: int, meta: Sequence[JobRow] | Sequence[Sequence[Any]], payloads: Sequence[bytes]) -> bytes:
    """One job (or broadcast) frame: ``meta[i]`` (a :data:`JobRow`) describes ``payloads[i]``."""
    m = orjson.dumps(meta)
    blob = b"".join(payloads)
    return _JOB_HEAD.pack(kind, len(m), len(blob)) + m + blob


def pack_traced_jobs(meta: Sequence[JobRow], traces: Sequence[Sequence[str | None]], payloads: Sequence[bytes]) -> bytes:
    """A :data:`TRACED_JOBS` frame: the jobs of :func:`pack_jobs` and, per job, ``[queue, traceparent]``."""
    return pack_jobs(TRACED_JOBS, [meta, traces], payloads)


def pack_broadcast(task: str, payload: bytes) -> bytes:
    """A broadcast frame for every child: run the ``task`` broadcast handlers."""
    row: JobRow = (0, task, None, 0, len(payload), False, "", None)
    return pack_jobs(BROADCAST, [row], [payload])


def jobs_of(meta: Sequence[Sequence[Any]], blob: bytes) -> Iterator[tuple[JobMeta, bytes]]:
    """The (meta, payload) pairs of a job frame read by :class:`JobFrameReader`."""
    pos = 0
    for m in meta:
        jm = JobMeta(*m)
        end = pos + jm.payload_len
        yield jm, blob[pos:end]
        pos = end


# -- child → master ------------------------------------------------------------------
def pack_outcome(msg: Sequence[Any]) -> bytes:
    """Frame a raw outcome list (use the typed builders below)."""
    body = orjson.dumps(msg)
    return _OUT_HEAD.pack(len(body)) + body


def pack_ready(pid: int) -> bytes:
    return pack_outcome(("ready", pid))


def pack_boot_failed(error_type: str, message: str, traceback: str) -> bytes:
    return pack_outcome(("boot-failed", error_type, message, traceback))


def pack_ok(seq: int, duration_ns: int, step: NextStep | FanOut | None, value: str | None) -> bytes:
    """Raises TypeError when ``step`` holds what JSON cannot carry. A fan-out
    travels as a JSON object, a next step as a list."""
    if step is None:
        wire_step: Any = None
    elif isinstance(step, FanOut):
        wire_step = step._asdict()
    else:
        wire_step = tuple(step)
    return pack_outcome(("ok", seq, duration_ns, wire_step, value))


def pack_progress(seq: int, fraction: float, message: str | None) -> bytes:
    return pack_outcome(("progress", seq, fraction, message))


def pack_err(err: Err) -> bytes:
    return pack_outcome(("err", *err))


def pack_memory(rss: int, full: bool) -> bytes:
    return pack_outcome(("mem", rss, full))


_new = tuple.__new__  # builds a NamedTuple from a sequence without its Python-level __new__


def parse_outcome(msg: Any) -> Outcome:
    """The named form of one decoded outcome frame; ValueError if it is not one."""
    try:
        tag = msg[0]
        if tag == "ok":  # the hot path: one per job
            if len(msg) != 5:
                raise ValueError(f"{len(msg)} items")
            if msg[3] is None:
                return _new(Ok, msg[1:])
            _, seq, dur, step, value = msg
            if isinstance(step, dict):
                return Ok(seq, dur, FanOut(**step), value)
            return Ok(seq, dur, NextStep(*step), value)
        if tag == "err":
            return Err(*msg[1:])
        if tag == "mem":
            return Memory(int(msg[1]), bool(msg[2]))
        if tag == "progress":
            return Progress(*msg[1:])
        if tag == "ready":
            return Ready(msg[1])
        if tag == "boot-failed":
            return BootFailed(*msg[1:])
    except (TypeError, ValueError, IndexError) as exc:
        raise ValueError(f"outcome frame {str(msg)[:80]} has the wrong shape ({exc})") from None
    raise ValueError(f"unknown frame {str(msg)[:40]}")


def write_all(fd: int, data: bytes) -> None:
    """Blocking write of all of ``data`` (children write outcomes this way)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def set_pipe_size(fd: int, size: int = 1 << 20) -> None:
    """Grow a pipe's buffer (Linux F_SETPIPE_SZ) so big frames take fewer syscalls."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except OSError:
        pass  # capped by /proc/sys/fs/pipe-max-size, or not Linux: the default works


class FrameReader:
    """Master side: accumulates bytes from a pipe and yields complete outcome
    frames (:meth:`feed`: the decoded JSON lists; :meth:`outcomes`: named)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[list[Any]]:
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        unpack = _OUT_HEAD.unpack_from
        while end - pos >= 4:
            (n,) = unpack(buf, pos)
            if n > MAX_FRAME:
                raise ValueError(f"outcome frame of {n} bytes is corrupt")
            if end - pos - 4 < n:
                break
            yield orjson.loads(memoryview(buf)[pos + 4:pos + 4 + n])
            pos += 4 + n
        if pos:
            del buf[:pos]

    def outcomes(self, data: bytes) -> Iterator[Outcome]:
        """Like :meth:`feed`, as named outcomes (:func:`parse_outcome`); ValueError on a corrupt frame."""
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        unpack = _OUT_HEAD.unpack_from
        loads = orjson.loads
        while end - pos >= 4:
            (n,) = unpack(buf, pos)
            if n > MAX_FRAME:
                raise ValueError(f"outcome frame of {n} bytes is corrupt")
            if end - pos - 4 < n:
                break
            msg = loads(memoryview(buf)[pos + 4:pos + 4 + n])
            pos += 4 + n
            # the hot path (one per job) inline: an "ok" with no next step
            if type(msg) is list and len(msg) == 5 and msg[0] == "ok" and msg[3] is None:
                yield _new(Ok, msg[1:])
            else:
                yield parse_outcome(msg)
        if pos:
            del buf[:pos]


class JobFrameReader:
    """Child side: reads whole job frames from its pipe (made non-blocking
    here). ``on_wait`` is called each time the reader is about to block, i.e.
    when the child has nothing to run: not once per job."""

    def __init__(self, fd: int, on_wait: Callable[[], None] | None = None) -> None:
        self.fd = fd
        self._buf = bytearray()
        self._on_wait = on_wait
        os.set_blocking(fd, False)
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    def _fill(self, need: int) -> bool:
        while len(self._buf) < need:
            try:
                chunk = os.read(self.fd, max(need - len(self._buf), 1 << 16))
            except BlockingIOError:
                if self._on_wait is not None:
                    self._on_wait()
                self._poll.poll()  # readable, or EOF (POLLHUP), wakes it
                continue
            if not chunk:
                return False
            self._buf += chunk
        return True

    def read(self) -> tuple[int, list[Any], bytes] | None:
        """Next frame as (kind, meta, blob), or None at EOF; :func:`jobs_of` names its parts."""
        if not self._fill(_JOB_HEAD.size):
            return None
        kind, m, b = _JOB_HEAD.unpack_from(self._buf, 0)
        total = _JOB_HEAD.size + m + b
        if not self._fill(total):
            return None
        meta = orjson.loads(bytes(self._buf[_JOB_HEAD.size:_JOB_HEAD.size + m]))
        blob = bytes(self._buf[_JOB_HEAD.size + m:total])
        del self._buf[:total]
        return kind, meta, blob
