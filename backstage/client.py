"""Producers: :class:`Client` (sync) and :class:`AsyncClient` (asyncio).

Owns the writes that create jobs: ready-stream XADDs, ``P:scheduled`` ZADDs
for delayed jobs, dedupe markers, and broadcast XADDs. Every enqueue goes
through ``lua/enqueue.lua`` so that the dedupe check, the write and the
dedupe marker are one atomic step. Runs in any producer process, and in
prefork children when a handler enqueues more work.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import itertools
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Sequence, overload

import redis

from .ops import control as control_, presence
from .connections import redis_conn, resp
from . import cancels, groups, results, tracing
from .protocol import scripts
from .connections.cluster import SlotMoved
from .errors import BrokerError, ConfigError, InvalidJobError, PayloadError
from .protocol.keys import DEFAULT_PREFIX, PRIORITIES, Keys, validate_job_id, validate_queue
from .protocol.wire import (DEFAULT_MAX_PAYLOAD_BYTES, Backoff, encode_entry, encode_payload, encode_scheduled,
                            now_ms)

__all__ = ["Client", "AsyncClient", "Job", "TaskDefaults", "Priority"]

DEFAULT_DEDUPE_TTL = 3600.0
DEFAULT_CANCEL_TTL = cancels.DEFAULT_TTL
#: How long a ``unique=True`` marker may outlive a job that never settles (a lost
#: worker's job is reclaimed and settled long before): the bound on a stuck id.
UNIQUE_TTL_MS = 7 * 86400 * 1000
BROADCAST_MAXLEN = control_.BROADCAST_MAXLEN


class Priority:
    """Names of the three built-in priority queues (plain strings)."""

    URGENT = "urgent"
    DEFAULT = "default"
    LOW = "low"


@dataclass(frozen=True, slots=True)
class TaskDefaults:
    """Per-task enqueue defaults, as declared with ``@app.task(...)``."""

    queue: str | None = None
    attempts: int | None = None
    backoff: Backoff | None = None
    timeout: float | None = None
    result_ttl: float | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """One job for :meth:`Client.enqueue_many`; the fields mirror ``enqueue``'s arguments."""

    task: str
    payload: Any = None
    priority: str | None = None
    queue: str | None = None
    delay: float | None = None
    at: "_dt.datetime | float | None" = None
    dedupe_key: str | None = None
    dedupe_ttl: float | None = None
    attempts: int | None = None
    backoff: Backoff | float | None = None
    timeout: float | None = None
    result_ttl: float | None = None
    job_id: str | None = None
    unique: bool = False


class _IdMaker:
    """Unique job ids: 64 random bits per process + a counter (fork-safe)."""

    def __init__(self) -> None:
        self._pid = -1
        self._prefix = ""
        self._counter: Iterable[int] = iter(())

    def __call__(self) -> str:
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._prefix = os.urandom(8).hex()
            self._counter = itertools.count(1)
        return f"{self._prefix}{next(self._counter):x}"  # type: ignore[call-overload]


new_job_id = _IdMaker()


def check_max_payload_bytes(value: object) -> int:
    """``max_payload_bytes`` as given, or ConfigError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"max_payload_bytes={value!r}: expected an integer number of bytes >= 1")
    return value


def _seconds_to_ms(name: str, value: object, *, positive: bool) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidJobError(f"{name}={value!r}: expected a finite number of seconds")
    if value < 0 or (positive and value == 0):
        raise InvalidJobError(f"{name}={value!r}: must be {'> 0' if positive else '>= 0'} seconds")
    return max(1, math.ceil(value * 1000)) if positive else round(value * 1000)


class _Opts:
    """Checked options of one (task, options) combination, reused across a batch."""

    __slots__ = ("task", "task_b", "queue", "stream", "delay_ms", "at_ms", "dedupe", "ttl_ms",
                 "attempts", "backoff", "timeout_ms", "result_ttl_ms", "extra", "extra_fields", "_head")
    task: str
    task_b: bytes
    queue: str
    stream: str
    delay_ms: int
    at_ms: int | None
    dedupe: bytes | None
    ttl_ms: int
    attempts: int | None
    backoff: Backoff | None
    timeout_ms: int | None
    result_ttl_ms: int | None
    extra: list[bytes]
    extra_fields: dict[str, str]

    def __init__(self) -> None:
        self._head = b""

    def xadd_head(self) -> bytes:
        """RESP of ``XADD stream * taskName T [options] payload`` (built once); the
        payload, ``jobId`` and ``enqueuedAt`` follow per job."""
        if not self._head:
            args = [b"XADD", self.stream.encode(), b"*", b"taskName", self.task_b, *self.extra, b"payload"]
            self._head = b"*%d\r\n" % (len(args) + 5) + b"".join(resp.bulk(a) for a in args)
        return self._head


class _Prepared:
    """One packed command and how to read its reply."""

    __slots__ = ("task", "job_id", "kind", "command", "args")

    def __init__(self, task: str, job_id: str, kind: str, command: bytes, args: tuple[Any, ...] = ()) -> None:
        self.task = task
        self.job_id = job_id
        self.kind = kind  # 'x' XADD, 'z' ZADD, 'e' enqueue.lua (FCALL, or EVALSHA on Redis 6.2)
        self.command = command  # for 'e': packed once the Redis version is known
        self.args = args  # for 'e': numkeys, keys and arguments


class _Producer:
    """Argument checking and command packing shared by both clients."""

    def __init__(
        self,
        *,
        prefix: str,
        dedupe_ttl: float,
        defaults: Callable[[str], TaskDefaults | None] | None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        task_check: Callable[[str], None] | None = None,
    ) -> None:
        self.keys = Keys(prefix)
        try:
            _seconds_to_ms("dedupe_ttl", dedupe_ttl, positive=True)
        except InvalidJobError as exc:
            raise ConfigError(str(exc)) from None
        self.dedupe_ttl = float(dedupe_ttl)
        self.max_payload_bytes = check_max_payload_bytes(max_payload_bytes)
        self._defaults = defaults or (lambda _task: None)
        self._task_check = task_check
        self._version_checked = False
        self._enqueue_lua = scripts.source("enqueue")
        self._enqueue_sha = hashlib.sha1(self._enqueue_lua.encode()).hexdigest().encode()
        self._enqueue_fn = scripts.producer_library().functions["enqueue"].encode()
        self._functions = False  # Redis 7+: FCALL our function library; 6.2: EVALSHA (set by _ready)
        self._scheduled_b = self.keys.scheduled.encode()

    # -- argument checking -------------------------------------------------
    def _resolve(
        self,
        task: str,
        priority: str | None,
        queue: str | None,
        delay: float | None,
        at: "_dt.datetime | float | None",
        dedupe_key: str | None,
        dedupe_ttl: float | None,
        attempts: int | None,
        backoff: Backoff | float | None,
        timeout: float | None,
        result_ttl: float | None = None,
    ) -> _Opts:
        if not isinstance(task, str) or not task:
            raise InvalidJobError(f"task name {task!r}: expected a non-empty string")
        d = self._defaults(task)
        if d is None and self._task_check is not None:
            self._task_check(task)
        if priority is not None:
            if queue is not None and queue != priority:
                raise InvalidJobError(f"task {task!r}: give priority= or queue=, not both")
            if priority not in PRIORITIES:
                raise InvalidJobError(
                    f"task {task!r}: priority={priority!r} is not one of {', '.join(PRIORITIES)}; "
                    "use queue= for a custom queue"
                )
            queue = priority
        elif queue is not None:
            validate_queue(queue)
        else:
            queue = (d.queue if d and d.queue else None) or "default"
        o = _Opts()
        o.task = task
        o.task_b = task.encode()
        o.queue = queue
        o.stream = self.keys.stream(queue)

        if attempts is None and d is not None:
            attempts = d.attempts
        if attempts is not None and (isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1):
            raise InvalidJobError(f"task {task!r}: attempts={attempts!r} must be an integer >= 1")
        if backoff is None and d is not None:
            backoff = d.backoff
        if backoff is not None and not isinstance(backoff, Backoff):
            if isinstance(backoff, bool) or not isinstance(backoff, (int, float)):
                raise InvalidJobError(
                    f"task {task!r}: backoff={backoff!r}: use Backoff.fixed(s), Backoff.exponential(s, max=…) "
                    "or a number of seconds"
                )
            _seconds_to_ms("backoff", backoff, positive=False)
            backoff = Backoff.fixed(float(backoff))
        if timeout is None and d is not None:
            timeout = d.timeout
        o.attempts = attempts
        o.backoff = backoff
        o.timeout_ms = _seconds_to_ms("timeout", timeout, positive=True) if timeout is not None else None
        if result_ttl is None and d is not None:
            result_ttl = d.result_ttl
        o.result_ttl_ms = _seconds_to_ms("result_ttl", result_ttl, positive=True) if result_ttl is not None else None
        extra: list[bytes] = []
        if attempts is not None:
            extra += (b"attempts", b"%d" % attempts)
        if backoff is not None:
            extra += (b"backoff", backoff.to_wire().encode())
        if o.timeout_ms is not None:
            extra += (b"timeout", b"%d" % o.timeout_ms)
        o.extra_fields = {}
        if o.result_ttl_ms is not None:
            extra += (b"resultTtl", b"%d" % o.result_ttl_ms)
            o.extra_fields["resultTtl"] = str(o.result_ttl_ms)
        o.extra = extra

        o.delay_ms = 0
        o.at_ms = None
        if delay is not None and at is not None:
            raise InvalidJobError(f"task {task!r}: give delay= or at=, not both")
        if delay is not None:
            o.delay_ms = _seconds_to_ms("delay", delay, positive=False)
        elif at is not None:
            if isinstance(at, _dt.datetime):
                if at.tzinfo is None:
                    raise InvalidJobError(f"task {task!r}: at={at!r} is a naive datetime; give it a tzinfo")
                o.at_ms = round(at.timestamp() * 1000)
            else:
                o.at_ms = _seconds_to_ms("at", at, positive=False)

        o.dedupe = None
        o.ttl_ms = 0
        if dedupe_key is not None:
            if not isinstance(dedupe_key, str) or not dedupe_key:
                raise InvalidJobError(f"task {task!r}: dedupe_key={dedupe_key!r} must be a non-empty string")
            o.dedupe = self.keys.dedupe(dedupe_key).encode()
            o.ttl_ms = _seconds_to_ms("dedupe_ttl", self.dedupe_ttl if dedupe_ttl is None else dedupe_ttl, positive=True)
        elif dedupe_ttl is not None:
            raise InvalidJobError(f"task {task!r}: dedupe_ttl= needs a dedupe_key=")
        return o

    def _payload(self, task: str, payload: Any) -> bytes:
        """The payload's JSON, checked against the size limit the workers apply."""
        out = encode_payload(task, payload)
        self._check_size(task, out)
        return out

    def _check_size(self, task: str, payload_json: bytes) -> None:
        if len(payload_json) > self.max_payload_bytes:
            raise PayloadError(
                f"payload of task {task!r} is {len(payload_json)} bytes of JSON, over the "
                f"{self.max_payload_bytes}-byte limit (workers dead-letter larger ones; raise max_payload_bytes= "
                "here and --max-payload-bytes on the workers, or store the data elsewhere and send a reference)"
            )

    def _pack(self, o: _Opts, payload: Any, now: int, now_b: bytes, traceparent: bytes | None = None,
              job_id: str | None = None, unique: bool = False) -> _Prepared:
        payload_json = self._payload(o.task, payload)
        if job_id is None:
            if unique:
                raise InvalidJobError(f"task {o.task!r}: unique=True needs a job_id=")
            job_id = new_job_id()
        else:
            validate_job_id(job_id)
            if unique and o.dedupe is not None:
                raise InvalidJobError(f"task {o.task!r}: give dedupe_key= or unique=True, not both")
        jid = job_id.encode()
        due = o.at_ms if o.at_ms is not None else now + o.delay_ms
        # a unique job's marker is set in the same enqueue.lua call that writes it (its dedupe slot:
        # the check and the write are one step) and released by settle.lua with its final ack
        marker = self.keys.unique(job_id).encode() if unique else o.dedupe
        lua = marker is not None or o.result_ttl_ms is not None
        extra_u: tuple[bytes, ...] = (b"unique", b"1") if unique else ()
        if due <= now:
            if not lua and traceparent is None:
                cmd = b"%b$%d\r\n%b\r\n$5\r\njobId\r\n$%d\r\n%b\r\n$10\r\nenqueuedAt\r\n$%d\r\n%b\r\n" % (
                    o.xadd_head(), len(payload_json), payload_json, len(jid), jid, len(now_b), now_b)
                return _Prepared(o.task, job_id, "x", cmd)
            fields = [b"taskName", o.task_b, b"payload", payload_json, b"enqueuedAt", now_b, *o.extra, b"jobId", jid,
                      *extra_u]
            if traceparent is not None:  # tracing on (backstage.tracing): an additive field
                fields += (b"traceparent", traceparent)
                if not lua:
                    return _Prepared(o.task, job_id, "x", resp.pack_command((b"XADD", o.stream.encode(), b"*", *fields)))
            return _Prepared(o.task, job_id, "e", b"", self._lua_job(o, b"x", o.stream.encode(), jid, now_b,
                                                                     (len(fields), *fields), marker, unique))
        extra = o.extra_fields if traceparent is None else {**o.extra_fields, "traceparent": traceparent.decode()}
        if unique:
            extra = dict(extra, unique="1")
        member = encode_scheduled(o.stream, o.queue, encode_entry(
            o.task, payload_json, enqueued_at=now, job_id=job_id, attempts=o.attempts,
            backoff=o.backoff, timeout_ms=o.timeout_ms, extra=extra))
        if not lua:
            return _Prepared(o.task, job_id, "z", resp.pack_command((b"ZADD", self._scheduled_b, due, member)))
        return _Prepared(o.task, job_id, "e", b"", self._lua_job(o, b"z", self._scheduled_b, jid, now_b,
                                                                 (due, member), marker, unique))

    def _lua_job(self, o: _Opts, mode: bytes, target: bytes, jid: bytes, now_b: bytes, tail: tuple[Any, ...],
                 marker: bytes | None, unique: bool) -> tuple[Any, ...]:
        """Arguments of enqueue.lua for one job that needs dedupe, a unique id or result tracking."""
        keys: list[bytes] = [target]
        di = ri = 0
        if marker is not None:
            keys.append(marker)
            di = len(keys)
        if o.result_ttl_ms is not None:
            keys.append(self.keys.result(jid.decode()).encode())
            ri = len(keys)
        ttl = UNIQUE_TTL_MS if unique else o.ttl_ms
        return (len(keys), *keys, now_b, mode, 1, di, ttl, ri, o.result_ttl_ms or 0, o.task_b, *tail)

    def _pack_lua(self, batch: Sequence[_Prepared]) -> None:
        """Pack the enqueue.lua calls of ``batch`` (the Redis version is known by now)."""
        head = (b"FCALL", self._enqueue_fn) if self._functions else (b"EVALSHA", self._enqueue_sha)
        for p in batch:
            if p.kind == "e":
                p.command = resp.pack_command((*head, *p.args))

    def _no_functions_error(self, exc: Exception) -> BrokerError:
        return BrokerError(
            f"Redis at {self.where} does not have the Backstage functions loaded and this user may not load "
            f"them ({exc}): start a backstage-prefork worker once, or run `backstage functions load` "
            "as an admin user"
        )

    def _prepare_one(self, task: str, payload: Any, job_id: str | None = None, unique: bool = False,
                     **options: Any) -> _Prepared:
        now = now_ms()
        return self._pack(self._resolve(task, **options), payload, now, b"%d" % now, None, job_id, unique)

    def _many(self, jobs: Iterable[Job | tuple[str, Any]], opts: dict[str, Any]) -> list[_Prepared]:
        """Check and pack every job before anything is sent."""
        now = now_ms()
        now_b = b"%d" % now
        by_task: dict[str, _Opts] = {}
        out: list[_Prepared] = []
        for job in jobs:
            if isinstance(job, Job):
                o = self._resolve(job.task, job.priority, job.queue, job.delay, job.at, job.dedupe_key,
                                  job.dedupe_ttl, job.attempts, job.backoff, job.timeout, job.result_ttl)
                out.append(self._pack(o, job.payload, now, now_b, None, job.job_id, job.unique))
            elif isinstance(job, tuple) and len(job) == 2:
                o2 = by_task.get(job[0]) if isinstance(job[0], str) else None
                if o2 is None:
                    o2 = self._resolve(job[0], dedupe_key=None, dedupe_ttl=None, **opts)
                    by_task[job[0]] = o2
                out.append(self._pack(o2, job[1], now, now_b))
            else:
                raise InvalidJobError(f"enqueue_many: expected Job(...) or (task, payload) items, got {job!r:.80}")
        return out

    def _broadcast_fields(self, task: str, payload: Any) -> dict[Any, Any]:
        fields = control_.broadcast_fields(task, payload)
        self._check_size(task, fields["payload"])
        return fields

    def _noscript(self, batch: Sequence[_Prepared], replies: Sequence[Any]) -> list[int]:
        """Indexes of enqueue.lua calls that met an empty script cache or a missing function."""
        # redis-py strips the "NOSCRIPT " code from the message of the NoScriptError it raises
        return [i for i, (p, r) in enumerate(zip(batch, replies))
                if p.kind == "e" and (isinstance(r, redis.exceptions.NoScriptError)
                                      or (isinstance(r, redis.ResponseError) and str(r).startswith("NOSCRIPT"))
                                      or scripts.function_missing(r)
                                      or (isinstance(r, redis.ResponseError) and "unknown command" in str(r)
                                          and "fcall" in str(r).lower()))]

    def _results(self, batch: Sequence[_Prepared], replies: Sequence[Any]) -> list[str | None]:
        out: list[str | None] = []
        failed: list[tuple[int, Exception]] = []
        for i, (p, r) in enumerate(zip(batch, replies)):
            if isinstance(r, Exception):
                failed.append((i, r))
                out.append(None)
            elif p.kind == "e":
                out.append(p.job_id if r and int(r[0]) == 1 else None)
            else:
                out.append(p.job_id)
        if failed:
            i, first = failed[0]
            raise BrokerError(
                f"Redis at {self.where} refused {len(failed)} of {len(batch)} job(s); the first, "
                f"#{i} (task {batch[i].task!r}), failed with: {first}. The others were enqueued."
                if len(batch) > 1 else f"Redis at {self.where} refused the job: {first}"
            )
        return out

    def _control_message(self, command: str, value: Any, target: str | None,
                         live: list[str]) -> tuple[str, dict[str, Any]]:
        """Reply key and payload of one control request (sent on ``P:control``)."""
        if target is not None and target not in live:
            raise InvalidJobError(
                f"no live worker named {target!r}; live workers: {', '.join(sorted(live)) or 'none'} "
                "(see `backstage workers`)")
        request = new_job_id()
        key = self.keys.worker_reply(request)
        return key, control_.request_payload(command, value, target, key, request)
    # -- groups, chords, cancellation: the arguments of their Lua calls --------------------
    def _group_args(self, jobs: Iterable[Job | tuple[str, Any]], callback: Job | tuple[str, Any] | None,
                    on_failure: str, group_id: str | None, ttl: float,
                    defaults: dict[str, Any]) -> tuple[list[Any], list[Any], str]:
        return groups.group_args(self, jobs, callback, on_failure, group_id, ttl, _many_opts(defaults))

    def _cancel_args(self, job_id: str, ttl: float) -> tuple[list[Any], list[Any]]:
        return cancels.cancel_args(self.keys, job_id, _seconds_to_ms("ttl", ttl, positive=True))

    def _script_command(self, name: str, keys: list[Any], args: list[Any]) -> tuple[Any, ...]:
        """FCALL of our function library (Redis 7+), or EVALSHA (6.2), of ``name``.lua."""
        if self._functions:
            return ("FCALL", scripts.producer_library().functions[name], len(keys), *keys, *args)
        return ("EVALSHA", hashlib.sha1(scripts.source(name).encode()).hexdigest(), len(keys), *keys, *args)

    @staticmethod
    def _script_lost(exc: Exception) -> bool:
        """Redis lost (or never had) the script: load it, and send the call again."""
        return (isinstance(exc, redis.exceptions.NoScriptError) or scripts.function_missing(exc)
                or str(exc).startswith("NOSCRIPT"))

    def _group_refused(self, gid: str) -> BrokerError:
        return BrokerError(f"a group or chord with id {gid!r} exists already (ids must be unique while its "
                           "state lives)")

    where = ""  # set by the concrete client


class Client(_Producer):
    """Synchronous producer.

    Args:
        redis_url: ``redis://``, ``rediss://``, ``unix://`` or ``redis+sentinel://`` URL; defaults to
            $BACKSTAGE_REDIS_URL, then $REDIS_URL, then ``redis://localhost:6379/0``.
        redis: an existing ``redis.Redis`` to use instead (must not decode responses).
        prefix: key prefix shared with the workers (WIRE.md ``P``).
        dedupe_ttl: seconds a dedupe marker lives when ``enqueue`` gets no ``dedupe_ttl``.
        defaults: per-task defaults lookup (the app passes its task registry).
        tls: CA and client certificate files for a ``rediss://`` URL
            (:class:`~backstage.connections.redis_conn.TlsSettings`).
        max_payload_bytes: larger payloads (their JSON) raise ``PayloadError``
            before anything is written; the default is the workers' own
            ``--max-payload-bytes`` default (16 MiB).
        task_check: called with each task name that ``defaults`` does not
            know; raise ``InvalidJobError`` to refuse it (the app passes its
            registry check, see ``Backstage(external_tasks=...)``).
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        redis: "redis.Redis | None" = None,
        prefix: str = DEFAULT_PREFIX,
        dedupe_ttl: float = DEFAULT_DEDUPE_TTL,
        defaults: Callable[[str], TaskDefaults | None] | None = None,
        tls: redis_conn.TlsSettings | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        task_check: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(prefix=prefix, dedupe_ttl=dedupe_ttl, defaults=defaults,
                         max_payload_bytes=max_payload_bytes, task_check=task_check)
        self.redis = redis if redis is not None else redis_conn.sync_client(redis_conn.resolve_url(redis_url), tls=tls,
                                                                             slot_key=self.keys.prefix)
        self.where = redis_conn.endpoint(self.redis)
        self._pinned: Any = None
        self._pinned_pid = -1
        self._pinned_lock = threading.Lock()

    def _ready(self) -> None:
        if not self._version_checked:
            with redis_conn.translate_errors(self.where):
                version = redis_conn.check_version(self.redis.info("server"), self.where)
                # enqueue.lua is loaded on first use (NOSCRIPT, or a missing function): a producer
                # that never needs it needs no script rights at all
                self._functions = version >= scripts.FUNCTIONS_VERSION
            self._version_checked = True

    def _reload(self) -> None:
        """Load enqueue.lua again after Redis lost it (restart, flush, failover)."""
        if not self._functions:
            self.redis.script_load(self._enqueue_lua)
            return
        try:
            scripts.load_library(self.redis)
        except redis.exceptions.NoPermissionError as exc:
            raise self._no_functions_error(exc) from None
        except redis.ResponseError:
            # a server that says 7+ but has no functions (some Redis-compatible services): EVALSHA
            self._functions = False
            self.redis.script_load(self._enqueue_lua)

    def _run(self, commands: list[bytes]) -> list[Any]:
        try:
            return self._run_once(commands)
        except SlotMoved:  # a cluster failover or resharding: nothing ran; the owner is asked again
            return self._run_once(commands)

    def _run_once(self, commands: list[bytes]) -> list[Any]:
        # One connection kept for this client spares the pool's bookkeeping on
        # every call (a large part of a single enqueue); another thread using
        # the client at the same moment goes through the pool.
        if self._pinned_lock.acquire(blocking=False):
            try:
                conn = self._pinned
                if conn is None or self._pinned_pid != os.getpid():
                    conn = self._pinned = self.redis.connection_pool.make_connection()
                    self._pinned_pid = os.getpid()
                elif conn._sock is not None and _stale(conn):
                    # the server closed it (restart, timeout) or left data: start afresh, as the
                    # pool does, rather than send a job on a dead socket
                    conn.disconnect()
                return resp.run_on(conn, commands)
            finally:
                self._pinned_lock.release()
        return resp.run_packed(self.redis, commands)

    def _execute(self, batch: Sequence[_Prepared]) -> list[str | None]:
        self._ready()
        self._pack_lua(batch)
        with redis_conn.translate_errors(self.where):
            replies = self._run([p.command for p in batch])
            retry = self._noscript(batch, replies)
            if retry:  # Redis restarted, flushed, or never had our functions: load and resend those
                self._reload()
                self._pack_lua(batch)  # FCALL, or EVALSHA if the server turned out to have no functions
                for i, r in zip(retry, self._run([batch[i].command for i in retry])):
                    replies[i] = r
        return self._results(batch, replies)

    def ping(self) -> None:
        """Check that Redis answers and is recent enough; raise BrokerError if not."""
        self._version_checked = False
        self._ready()

    def enqueue(
        self,
        task: str,
        payload: Any = None,
        *,
        priority: str | None = None,
        queue: str | None = None,
        delay: float | None = None,
        at: "_dt.datetime | float | None" = None,
        dedupe_key: str | None = None,
        dedupe_ttl: float | None = None,
        attempts: int | None = None,
        backoff: Backoff | float | None = None,
        timeout: float | None = None,
        result_ttl: float | None = None,
        job_id: str | None = None,
        unique: bool = False,
    ) -> str | None:
        """Enqueue one job.

        Args:
            task: the handler name, e.g. ``"order.process"``.
            payload: anything orjson serializes; the handler's argument.
            priority: ``"urgent"``, ``"default"`` or ``"low"``.
            queue: a custom queue instead of a priority.
            delay: seconds from now before the job is due (through ``P:scheduled``).
            at: when the job is due: an aware datetime or epoch seconds.
            dedupe_key: skip the job if another with this key was enqueued within ``dedupe_ttl``.
            attempts: executions allowed before the job is dead-lettered.
            backoff: delay between attempts: a ``Backoff`` or fixed seconds.
            timeout: execution time limit in seconds.
            result_ttl: keep the job's status and result this many seconds
                (opt-in; read them with ``status()`` and ``result()``).
            job_id: the job's id, chosen by the producer (default: a random one).
            unique: refuse this job while another with the same ``job_id`` is
                still queued, scheduled or running (needs ``job_id``).

        Returns:
            The job id, or ``None`` when deduplicated (or refused by ``unique``).

        Raises:
            InvalidJobError / PayloadError on bad arguments, BrokerError when
            Redis fails or is too old, RedisUnavailable when it cannot be reached.
        """
        tracer = tracing.tracer
        if tracer is not None:
            return self._execute_traced(tracer, [(task, payload, dict(
                priority=priority, queue=queue, delay=delay, at=at, dedupe_key=dedupe_key, dedupe_ttl=dedupe_ttl,
                attempts=attempts, backoff=backoff, timeout=timeout, result_ttl=result_ttl, job_id=job_id,
                unique=unique))])[0]
        p = self._prepare_one(task, payload, priority=priority, queue=queue, delay=delay, at=at,
                              dedupe_key=dedupe_key, dedupe_ttl=dedupe_ttl, attempts=attempts,
                              backoff=backoff, timeout=timeout, result_ttl=result_ttl, job_id=job_id, unique=unique)
        return self._execute((p,))[0]

    def _execute_traced(self, tracer: tracing.Tracer, jobs: list[tuple[str, Any, dict[str, Any]]]) -> list[str | None]:
        prepared, spans = tracing.prepare(self, tracer, jobs)
        try:
            ids = self._execute(prepared) if prepared else []
        except BaseException as exc:
            tracing.end_spans(spans, prepared, None, exc)
            raise
        tracing.end_spans(spans, prepared, ids, None)
        return ids

    def enqueue_many(self, jobs: Iterable[Job | tuple[str, Any]], **defaults: Any) -> list[str | None]:
        """Enqueue many jobs, pipelined; returns ids (``None`` where deduplicated).

        ``jobs`` holds ``Job(...)`` items or ``(task, payload)`` tuples; keyword
        arguments (``priority``, ``queue``, ``delay``, ``at``, ``attempts``,
        ``backoff``, ``timeout``) apply to the tuples. Every job is checked and
        serialized before anything is written; each job is atomic on its own.
        """
        tracer = tracing.tracer
        if tracer is not None:
            return self._execute_traced(tracer, tracing.job_list(jobs, _many_opts(defaults)))
        prepared = self._many(jobs, _many_opts(defaults))
        return self._execute(prepared) if prepared else []

    def broadcast(self, task: str, payload: Any = None) -> str:
        """Send a message to every live worker (``P:broadcast``); returns its stream id."""
        fields = self._broadcast_fields(task, payload)
        self._ready()
        with redis_conn.translate_errors(self.where):
            sid = self.redis.xadd(self.keys.broadcast, fields, maxlen=BROADCAST_MAXLEN, approximate=True)
        return sid.decode() if isinstance(sid, bytes) else str(sid)


    # -- groups, chords, cancellation ------------------------------------------------------
    def enqueue_group(self, jobs: Iterable[Job | tuple[str, Any]], *, group_id: str | None = None,
                      ttl: float = groups.DEFAULT_TTL, **defaults: Any) -> str:
        """Enqueue jobs as one group, atomically (all or none); returns the group id.

        ``jobs`` and ``defaults`` as for :meth:`enqueue_many` (members run at
        once: no delay). Follow it with :meth:`group_status`; its state
        expires ``ttl`` seconds after it was created and after it ended.
        """
        keys, args, gid = self._group_args(jobs, None, "callback", group_id, ttl, defaults)
        if not self._group_script(keys, args):
            raise self._group_refused(gid)
        return gid

    def enqueue_chord(self, jobs: Iterable[Job | tuple[str, Any]], *, callback: Job | tuple[str, Any],
                      on_failure: str = "callback", group_id: str | None = None, ttl: float = groups.DEFAULT_TTL,
                      **defaults: Any) -> str:
        """Enqueue a group whose ``callback`` runs exactly once, when the last member settled.

        The callback's payload is ``{"chord", "payload", "results", "failures"}``
        (results in member order). ``on_failure="callback"`` runs it with the
        failures listed; ``"dead-letter"`` dead-letters it instead. Returns the
        chord id, which is also the callback's job id (``result(chord_id)``
        waits for it when its task keeps results).
        """
        keys, args, gid = self._group_args(jobs, callback, on_failure, group_id, ttl, defaults)
        if not self._group_script(keys, args):
            raise self._group_refused(gid)
        return gid

    def _group_script(self, keys: list[Any], args: list[Any]) -> bool:
        return bool(self._call_script("group", keys, args))

    def _call_script(self, name: str, keys: list[Any], args: list[Any]) -> Any:
        """Run ``name``.lua as a function (or EVALSHA), loading it once if Redis lost it."""
        self._ready()
        with redis_conn.translate_errors(self.where):
            try:
                return self.redis.execute_command(*self._script_command(name, keys, args))  # type: ignore[no-untyped-call]
            except redis.ResponseError as exc:
                if not self._script_lost(exc):
                    raise
            self._reload()
            if not self._functions:
                self.redis.script_load(scripts.source(name))
            return self.redis.execute_command(*self._script_command(name, keys, args))  # type: ignore[no-untyped-call]

    def group_status(self, group_id: str) -> dict[str, Any] | None:
        """``{"id", "state", "total", "done", "failed", "pending"}`` of a group or chord
        (state: running, done, failed or cancelled), or None when unknown or expired."""
        self._ready()
        with redis_conn.translate_errors(self.where):
            return groups.group_status(self.redis.hgetall(self.keys.chord(group_id)))

    def cancel(self, job_id: str, *, ttl: float = DEFAULT_CANCEL_TTL) -> dict[str, Any]:
        """Cancel a job, or a group/chord (its pending members and its callback).

        A queued or scheduled job never starts; a running one has its child
        killed, on whichever worker runs it; it is not retried and its status
        (if kept) becomes ``cancelled``. The cancel waits in Redis up to ``ttl``
        seconds to be carried out, so it holds while no worker runs.
        Returns ``{"status": <status before, or None>, "members": <members cancelled>}``.
        """
        keys, args = self._cancel_args(job_id, ttl)
        self._ready()
        with redis_conn.translate_errors(self.where):
            return cancels.answer(self._call_script("cancel", keys, args))

    # -- status and results ---------------------------------------------------------
    @overload
    def status(self, job_id: str, detail: Literal[False] = ...) -> str | None: ...

    @overload
    def status(self, job_id: str, detail: Literal[True]) -> results.JobStatus | None: ...

    def status(self, job_id: str, detail: bool = False) -> str | results.JobStatus | None:
        """``scheduled``, ``queued``, ``running``, ``done``, ``failed`` (a retry is
        pending), ``dead``, ``cancelled`` or ``waiting`` (a chord callback) — for jobs
        enqueued with ``result_ttl`` (or whose task has one); ``None`` when no status
        is kept (not opted in, unknown, expired). ``detail=True`` returns a
        :class:`~backstage.results.JobStatus` with the progress the handler reported."""
        self._ready()
        with redis_conn.translate_errors(self.where):
            if detail:
                return results.detail(self.redis.hgetall(self.keys.result(job_id)))
            raw = self.redis.hget(self.keys.result(job_id), "status")
        return raw.decode() if isinstance(raw, bytes) else raw

    def result(self, job_id: str, timeout: float | None = None, *, poll: float = 0.05) -> Any:
        """Wait for a tracked job to end; return the handler's return value.

        Raises:
            JobFailed: the job was dead-lettered (its reason and last error attached).
            ResultTimeout: ``timeout`` seconds passed first (``None``: wait forever).
            ResultNotFound: no status is kept for ``job_id``.
        """
        self._ready()
        key = self.keys.result(job_id)
        waiter = results.Waiter(job_id, timeout, poll)
        while True:
            with redis_conn.translate_errors(self.where):
                raw = self.redis.hgetall(key)
            done, value = waiter.check(raw)
            if done:
                return value
            time.sleep(value)

    # -- presence and remote control ---------------------------------------------
    def workers(self) -> list[dict[str, Any]]:
        """Live ``backstage-prefork`` masters, from their heartbeats: consumer, host,
        pid, queues, concurrency, busy, processed, failed, rss, started_at, version."""
        self._ready()
        with redis_conn.translate_errors(self.where):
            return presence.live_workers(self.redis, self.keys)

    def control(self, command: str, value: Any = None, *, target: str | None = None,
                timeout: float = 2.0) -> list[dict[str, Any]]:
        """Send a command to every live master (or only ``target``) and collect answers.

        Commands: ``ping`` (each answers with its presence), ``shutdown``
        (graceful), ``pause``/``resume`` (``value``: a queue; pausing is kept
        in Redis, so masters started later honour it too), ``concurrency``
        (``value``: children per master, 1 to 1024). Returns the answers that
        came within ``timeout`` seconds, one per master.

        Control goes through ``P:control``, which only an admin ACL user
        (``backstage acl admin``) may write: a producer user gets a
        BrokerError naming the admin rule set.

        Raises:
            InvalidJobError: an unknown command, a bad value, or a ``target``
                that is not a live worker (the message names the live ones).
            BrokerError: the user may not write ``P:control`` (not an admin).
        """
        control_.check_command(command, value)
        self._ready()
        with redis_conn.translate_errors(self.where):
            live = presence.live_consumers(self.redis, self.keys)
            key, message = self._control_message(command, value, target, live)
            if command in ("pause", "resume"):
                presence.set_paused(self.redis, self.keys, [value], command == "pause")
            control_.send(self.redis, self.keys, message)
            return control_.collect_replies(self.redis, key, 1 if target is not None else len(live), timeout)

    def close(self) -> None:
        """Close the connections (``with Client(...)`` does it for you)."""
        if self._pinned is not None and self._pinned_pid == os.getpid():
            self._pinned.disconnect()
        self._pinned = None
        self.redis.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Producer):
    """asyncio producer with the same methods as :class:`Client`, as coroutines."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        redis: "redis.asyncio.Redis | None" = None,
        prefix: str = DEFAULT_PREFIX,
        dedupe_ttl: float = DEFAULT_DEDUPE_TTL,
        defaults: Callable[[str], TaskDefaults | None] | None = None,
        tls: redis_conn.TlsSettings | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        task_check: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(prefix=prefix, dedupe_ttl=dedupe_ttl, defaults=defaults,
                         max_payload_bytes=max_payload_bytes, task_check=task_check)
        self.redis = redis if redis is not None else redis_conn.async_client(redis_conn.resolve_url(redis_url), tls=tls,
                                                                               slot_key=self.keys.prefix)
        self.where = redis_conn.endpoint(self.redis)

    async def _ready(self) -> None:
        if not self._version_checked:
            with redis_conn.translate_errors(self.where):
                version = redis_conn.check_version(await self.redis.info("server"), self.where)
                # enqueue.lua is loaded on first use (NOSCRIPT, or a missing function): a producer
                # that never needs it needs no script rights at all
                self._functions = version >= scripts.FUNCTIONS_VERSION
            self._version_checked = True

    async def _reload(self) -> None:
        """See :meth:`Client._reload`."""
        if not self._functions:
            await self.redis.script_load(self._enqueue_lua)
            return
        try:
            await scripts.load_library_async(self.redis)
        except redis.exceptions.NoPermissionError as exc:
            raise self._no_functions_error(exc) from None
        except redis.ResponseError:
            # a server that says 7+ but has no functions (some Redis-compatible services): EVALSHA
            self._functions = False
            await self.redis.script_load(self._enqueue_lua)

    async def _execute(self, batch: Sequence[_Prepared]) -> list[str | None]:
        await self._ready()
        self._pack_lua(batch)
        with redis_conn.translate_errors(self.where):
            replies = await resp.run_packed_async(self.redis, [p.command for p in batch])
            retry = self._noscript(batch, replies)
            if retry:
                await self._reload()
                self._pack_lua(batch)
                again = await resp.run_packed_async(self.redis, [batch[i].command for i in retry])
                for i, r in zip(retry, again):
                    replies[i] = r
        return self._results(batch, replies)

    async def ping(self) -> None:
        """Check that Redis answers and is recent enough; raise BrokerError if not."""
        self._version_checked = False
        await self._ready()

    async def enqueue(
        self,
        task: str,
        payload: Any = None,
        *,
        priority: str | None = None,
        queue: str | None = None,
        delay: float | None = None,
        at: "_dt.datetime | float | None" = None,
        dedupe_key: str | None = None,
        dedupe_ttl: float | None = None,
        attempts: int | None = None,
        backoff: Backoff | float | None = None,
        timeout: float | None = None,
        result_ttl: float | None = None,
        job_id: str | None = None,
        unique: bool = False,
    ) -> str | None:
        """Enqueue one job; see :meth:`Client.enqueue`."""
        tracer = tracing.tracer
        if tracer is not None:
            return (await self._execute_traced(tracer, [(task, payload, dict(
                priority=priority, queue=queue, delay=delay, at=at, dedupe_key=dedupe_key, dedupe_ttl=dedupe_ttl,
                attempts=attempts, backoff=backoff, timeout=timeout, result_ttl=result_ttl, job_id=job_id,
                unique=unique))]))[0]
        p = self._prepare_one(task, payload, priority=priority, queue=queue, delay=delay, at=at,
                              dedupe_key=dedupe_key, dedupe_ttl=dedupe_ttl, attempts=attempts,
                              backoff=backoff, timeout=timeout, result_ttl=result_ttl, job_id=job_id, unique=unique)
        return (await self._execute((p,)))[0]

    async def _execute_traced(self, tracer: tracing.Tracer,
                              jobs: list[tuple[str, Any, dict[str, Any]]]) -> list[str | None]:
        prepared, spans = tracing.prepare(self, tracer, jobs)
        try:
            ids = (await self._execute(prepared)) if prepared else []
        except BaseException as exc:
            tracing.end_spans(spans, prepared, None, exc)
            raise
        tracing.end_spans(spans, prepared, ids, None)
        return ids

    async def enqueue_many(self, jobs: Iterable[Job | tuple[str, Any]], **defaults: Any) -> list[str | None]:
        """Enqueue many jobs, pipelined; see :meth:`Client.enqueue_many`."""
        tracer = tracing.tracer
        if tracer is not None:
            return await self._execute_traced(tracer, tracing.job_list(jobs, _many_opts(defaults)))
        prepared = self._many(jobs, _many_opts(defaults))
        return (await self._execute(prepared)) if prepared else []

    async def broadcast(self, task: str, payload: Any = None) -> str:
        """Send a message to every live worker; see :meth:`Client.broadcast`."""
        fields = self._broadcast_fields(task, payload)
        await self._ready()
        with redis_conn.translate_errors(self.where):
            sid = await self.redis.xadd(self.keys.broadcast, fields, maxlen=BROADCAST_MAXLEN, approximate=True)
        return sid.decode() if isinstance(sid, bytes) else str(sid)


    async def enqueue_group(self, jobs: Iterable[Job | tuple[str, Any]], *, group_id: str | None = None,
                            ttl: float = groups.DEFAULT_TTL, **defaults: Any) -> str:
        """See :meth:`Client.enqueue_group`."""
        keys, args, gid = self._group_args(jobs, None, "callback", group_id, ttl, defaults)
        if not await self._script("group", keys, args):
            raise self._group_refused(gid)
        return gid

    async def enqueue_chord(self, jobs: Iterable[Job | tuple[str, Any]], *, callback: Job | tuple[str, Any],
                            on_failure: str = "callback", group_id: str | None = None,
                            ttl: float = groups.DEFAULT_TTL, **defaults: Any) -> str:
        """See :meth:`Client.enqueue_chord`."""
        keys, args, gid = self._group_args(jobs, callback, on_failure, group_id, ttl, defaults)
        if not await self._script("group", keys, args):
            raise self._group_refused(gid)
        return gid

    async def _script(self, name: str, keys: list[Any], args: list[Any]) -> Any:
        await self._ready()
        with redis_conn.translate_errors(self.where):
            try:
                return await self.redis.execute_command(*self._script_command(name, keys, args))  # type: ignore[no-untyped-call]
            except redis.ResponseError as exc:
                if not self._script_lost(exc):
                    raise
            await self._reload()
            if not self._functions:
                await self.redis.script_load(scripts.source(name))
            return await self.redis.execute_command(*self._script_command(name, keys, args))  # type: ignore[no-untyped-call]

    async def group_status(self, group_id: str) -> dict[str, Any] | None:
        """See :meth:`Client.group_status`."""
        await self._ready()
        with redis_conn.translate_errors(self.where):
            return groups.group_status(await self.redis.hgetall(self.keys.chord(group_id)))

    async def cancel(self, job_id: str, *, ttl: float = DEFAULT_CANCEL_TTL) -> dict[str, Any]:
        """See :meth:`Client.cancel`."""
        keys, args = self._cancel_args(job_id, ttl)
        return cancels.answer(await self._script("cancel", keys, args))

    async def status(self, job_id: str, detail: bool = False) -> Any:
        """See :meth:`Client.status`."""
        await self._ready()
        with redis_conn.translate_errors(self.where):
            if detail:
                return results.detail(await self.redis.hgetall(self.keys.result(job_id)))
            raw = await self.redis.hget(self.keys.result(job_id), "status")
        return raw.decode() if isinstance(raw, bytes) else raw

    async def result(self, job_id: str, timeout: float | None = None, *, poll: float = 0.05) -> Any:
        """See :meth:`Client.result`."""
        await self._ready()
        key = self.keys.result(job_id)
        waiter = results.Waiter(job_id, timeout, poll)
        while True:
            with redis_conn.translate_errors(self.where):
                raw = await self.redis.hgetall(key)
            done, value = waiter.check(raw)
            if done:
                return value
            await asyncio.sleep(value)

    async def workers(self) -> list[dict[str, Any]]:
        """Live masters, from their heartbeats; see :meth:`Client.workers`."""
        await self._ready()
        with redis_conn.translate_errors(self.where):
            return await presence.live_workers_async(self.redis, self.keys)

    async def control(self, command: str, value: Any = None, *, target: str | None = None,
                      timeout: float = 2.0) -> list[dict[str, Any]]:
        """Send a command to live masters and collect answers; see :meth:`Client.control`."""
        control_.check_command(command, value)
        await self._ready()
        with redis_conn.translate_errors(self.where):
            live = await presence.live_consumers_async(self.redis, self.keys)
            key, message = self._control_message(command, value, target, live)
            if command in ("pause", "resume"):
                await presence.set_paused_async(self.redis, self.keys, [value], command == "pause")
            await control_.send_async(self.redis, self.keys, message)
            return await control_.collect_replies_async(self.redis, key, 1 if target is not None else len(live),
                                                        timeout)

    async def aclose(self) -> None:
        """Close the connections (``async with AsyncClient(...)`` does it for you)."""
        await self.redis.aclose()

    async def close(self) -> None:
        """The same as :meth:`aclose`: ``await client.close()`` mirrors ``Client.close()``."""
        await self.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


_MANY_OPTS = ("priority", "queue", "delay", "at", "attempts", "backoff", "timeout", "result_ttl")


def _stale(conn: Any) -> bool:
    """Does a connection that should be idle have something to read (EOF, stray data)?"""
    try:
        return bool(conn.can_read(timeout=0))
    except (redis.ConnectionError, OSError):
        return True


def _many_opts(given: dict[str, Any]) -> dict[str, Any]:
    unknown = set(given) - set(_MANY_OPTS)
    if unknown:
        raise InvalidJobError(
            f"enqueue_many: unknown option(s) {', '.join(sorted(unknown))}; "
            f"shared options are {', '.join(_MANY_OPTS)} (put dedupe keys on Job(...) items)"
        )
    return {k: given.get(k) for k in _MANY_OPTS}
