"""Frames between the master and its children (one pipe pair per child).

Master → child, a *job frame*::

    <u8 kind> <u32 meta length> <u32 blob length> <meta: orjson> <blob>

``kind`` 1 carries jobs: meta is ``[[seq, task, job_id, attempt, payload_len, want_result], ...]``
and blob the payloads, concatenated, exactly as read from Redis: the master
never decodes a payload. ``kind`` 2 carries broadcast messages the same way
(seq 0); the child runs its ``@app.on_broadcast`` handlers and answers nothing.
``kind`` 3 carries jobs while tracing is on: meta is ``[jobs_meta, traces]``,
``traces`` holding ``[queue, traceparent]`` per job, in the same order.

Child → master, an *outcome frame*: ``<u32 length> <orjson list>``, one of::

    ["ready", pid]
    ["boot-failed", error_type, message, traceback]
    ["ok", seq, duration_ns, next, value]   next: null | [task, delay_ms, payload_json, queue(, traceparent)];
                                          value: the return value as JSON text, when asked for
    ["err", seq, duration_ns, kind, error_type, message, traceback, retry_delay_ms]

``kind`` is ``error``, ``retry``, ``reject``, ``malformed`` or ``unknown-task``.
Everything is data: no pickled objects cross the pipe.
"""

from __future__ import annotations

import os
import select
import struct
from typing import Any, Callable, Iterator, Sequence

import orjson

__all__ = ["JOBS", "BROADCAST", "TRACED_JOBS", "pack_jobs", "pack_outcome", "FrameReader", "JobFrameReader", "write_all", "set_pipe_size"]

JOBS = 1
BROADCAST = 2
TRACED_JOBS = 3

_JOB_HEAD = struct.Struct("<BII")
_OUT_HEAD = struct.Struct("<I")
MAX_FRAME = 1 << 30


def pack_jobs(kind: int, meta: Sequence[Any], payloads: Sequence[bytes]) -> bytes:
    m = orjson.dumps(meta)
    blob = b"".join(payloads)
    return _JOB_HEAD.pack(kind, len(m), len(blob)) + m + blob


def pack_outcome(msg: Sequence[Any]) -> bytes:
    body = orjson.dumps(msg)
    return _OUT_HEAD.pack(len(body)) + body


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
    """Accumulates bytes from a pipe and yields complete outcome frames."""

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
        """Next frame as (kind, meta, blob), or None at EOF."""
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
