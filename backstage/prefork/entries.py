"""Decode once: a fetched (or reclaimed) stream entry becomes one typed
:class:`Delivery`, validated field by field, or a :class:`Rejected` naming
the bad field. Everything downstream (dispatch, outcomes, recovery) uses the
object and never parses ``fields`` again.

Runs in the master, on its hot path: the common entry (``taskName``,
``payload``, ``enqueuedAt``, ``jobId``) costs one dict, one cache lookup
per task name and a few checks; optional fields are parsed only when
present. The payload stays raw JSON text (the child decodes it).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Mapping, NamedTuple, Union

from ..errors import WireError
from ..protocol.wire import Backoff

if TYPE_CHECKING:
    from ..app import Backstage
    from .metrics import TaskStats

__all__ = ["Delivery", "Rejected", "TaskInfo", "Decoder", "ATTEMPT_MAX", "MS_MAX"]

#: Executions are counted in 32 bits by the other SDKs; anything larger is corrupt.
ATTEMPT_MAX = 2**31 - 1
#: Durations, TTLs and times in ms: ~31,000 years. Redis refuses a PEXPIRE whose
#: expiry overflows 64 bits; this bound keeps every TTL far inside what it accepts.
MS_MAX = 10**15


class TaskInfo(NamedTuple):
    """A handler's declared options, resolved once per task name."""

    name: str
    timeout: float | None  # seconds; the task's, else --default-timeout
    result_ttl: int | None  # ms; None: keeps no status unless the entry asks
    attempts: int | None
    backoff: Backoff | None
    stats: "TaskStats"


class Delivery:
    """One delivery of a stream entry to this master, decoded and validated.

    Held from fetch until its outcome is settled (buffered, then in a child).
    ``fields`` is the raw field map, kept only to be copied as it was (a
    retry, a dead letter, a hand-back); nothing reads values from it.
    """

    __slots__ = ("seq", "si", "id", "fields", "task", "timeout", "attempt", "attempts", "backoff", "result_ttl",
                 "stats", "payload", "job_id", "workflow_id", "traceparent", "ran_ns", "unique", "chord")

    def __init__(self, seq: int, si: int, entry_id: bytes, fields: dict[bytes, bytes], task: str,
                 stats: "TaskStats", payload: bytes, job_id: str | None, timeout: float | None, attempt: int,
                 attempts: int | None, backoff: Backoff | None, result_ttl: int | None,
                 workflow_id: str | None, traceparent: str | None = None) -> None:
        self.seq = seq
        self.si = si  # position of its stream among the master's subscribed streams
        self.id = entry_id
        self.fields = fields
        self.task = task
        self.stats = stats
        self.payload = payload  # raw JSON text, never decoded here
        self.job_id = job_id
        self.timeout = timeout  # seconds; None: no limit
        self.attempt = attempt  # this execution's number (1-based)
        self.attempts = attempts  # executions allowed (entry, else task); None: not declared
        self.backoff = backoff  # entry's, else task's; None: the policy's default
        self.result_ttl = result_ttl  # ms; None: the job keeps no status
        self.workflow_id = workflow_id
        self.traceparent = traceparent  # W3C trace context (backstage[otel]); None: untraced
        self.ran_ns = 0  # how long the handler ran, once its outcome frame says (job history)
        self.unique = False  # its job id is reserved (``unique=True``) until its final settle
        self.chord: tuple[str, int] | None = None  # (group/chord id, member index)

    @property
    def log_id(self) -> str:
        """The job id if it has one, else the entry id (for logs)."""
        return self.job_id if self.job_id is not None else self.id.decode()


class Rejected(NamedTuple):
    """An entry that cannot run: dead-letter it with ``reason``."""

    reason: str  # ``malformed`` or ``unknown-task``
    error_type: str
    message: str  # names the field at fault
    task: str  # for metrics and logs (undecodable bytes replaced)
    job_id: str | None  # when the jobId field itself is good
    result_ttl: int | None  # when the entry (or its task) keeps a status
    fields: dict[bytes, bytes]  # the raw entry, copied into its dead letter


class _Bad(Exception):
    pass


def _int(raw: bytes, name: str, lo: int, hi: int) -> int:
    try:
        v = int(raw)
    except ValueError:
        raise _Bad(f"field {name!r}={raw[:40].decode('utf-8', 'replace')!r} is not an integer") from None
    if not lo <= v <= hi:
        shown = str(v) if len(raw) <= 40 else f"{raw[:20].decode('ascii', 'replace')}… ({len(raw)} digits)"
        raise _Bad(f"field {name!r}={shown} is out of range ({lo}..{hi})")
    return v


def _text(raw: bytes, name: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise _Bad(f"field {name!r} is not UTF-8 text") from None


def _traceparent(raw: bytes) -> str | None:
    """A ``traceparent`` as text, or None when it is not one: W3C trace context
    says a receiver ignores a malformed header and starts a new trace, so a
    bad value costs the job its parent span, never its run."""
    if len(raw) > 128:
        return None
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        return None


class Decoder:
    """Turns raw entries into :class:`Delivery` objects; one per master.

    Caches per raw task name (the task's options) and per raw ``backoff``
    text (its decoded form), both bounded.
    """

    _CACHE_MAX = 4096

    def __init__(self, app: "Backstage", default_timeout: float | None, max_payload_bytes: int,
                 stats_of: Callable[[str], "TaskStats"]) -> None:
        self.app = app
        self.default_timeout = default_timeout
        self.max_payload = max_payload_bytes
        self.stats_of = stats_of
        self._known: dict[bytes, TaskInfo] = {}
        self._backoffs: dict[bytes, Backoff | str] = {}
        self.seq = 0

    def task_info(self, name: str) -> TaskInfo | None:
        """The options of task ``name`` in this app, or None if it has no handler."""
        task = self.app.tasks.get(name)
        if task is None:
            return None
        return TaskInfo(name, task.timeout or self.default_timeout,
                        math.ceil(task.result_ttl * 1000) if task.result_ttl else None,
                        task.attempts, task.backoff, self.stats_of(name))

    def decode(self, si: int, entry_id: bytes, flat: list[bytes], deliveries: int = 1) -> Delivery | Rejected:
        """Decode one entry (``flat``: field, value, …) delivered ``deliveries`` times; never raises."""
        fields = dict(zip(flat[::2], flat[1::2]))
        raw_task = fields.get(b"taskName")
        info = self._known.get(raw_task)  # type: ignore[arg-type]
        if info is None:
            bad = self._learn(raw_task, fields)
            if bad is not None:
                return bad
            info = self._known[raw_task]  # type: ignore[index]
        payload = fields.get(b"payload")
        optional = len(fields) - 1  # fields beyond the common four: parsed only when present
        if payload is None:
            payload = b"null"
        else:
            optional -= 1
            if len(payload) > self.max_payload:
                return self._reject(fields, info, "malformed", "PayloadTooLarge",
                                    f"payload of {len(payload)} bytes exceeds the {self.max_payload}-byte limit")
        jid = fields.get(b"jobId")
        raw = fields.get(b"enqueuedAt")
        name, timeout, result_ttl, attempts, backoff, stats = info  # one unpack: cheaper than six attributes
        attempt = deliveries
        workflow_id = traceparent = chord = None
        unique = False
        try:
            if jid is None:
                job_id = None
            else:
                optional -= 1
                try:
                    job_id = jid.decode()
                except UnicodeDecodeError:
                    raise _Bad("field 'jobId' is not UTF-8 text") from None
            if raw is not None:
                optional -= 1
                try:
                    if not 0 <= int(raw) <= MS_MAX:
                        raise ValueError
                except ValueError:
                    _int(raw, "enqueuedAt", 0, MS_MAX)  # raises, naming the problem
            if optional:
                raw = fields.get(b"attempt")
                if raw is not None:
                    # a reclaimed entry was already tried by a worker that died with it
                    attempt = _int(raw, "attempt", 1, ATTEMPT_MAX) + deliveries - 1
                    if attempt > ATTEMPT_MAX:
                        raise _Bad(f"field 'attempt'={attempt - deliveries + 1} is out of range after "
                                   f"{deliveries} deliveries")
                raw = fields.get(b"attempts")
                if raw is not None:
                    attempts = _int(raw, "attempts", 1, ATTEMPT_MAX)
                raw = fields.get(b"timeout")
                if raw is not None:
                    timeout = _int(raw, "timeout", 1, MS_MAX) / 1000.0
                raw = fields.get(b"resultTtl")
                if raw is not None:
                    result_ttl = _int(raw, "resultTtl", 0, MS_MAX) or None
                raw = fields.get(b"backoff")
                if raw is not None:
                    backoff = self._backoff(raw)
                raw = fields.get(b"workflowId")
                if raw is not None:
                    workflow_id = _text(raw, "workflowId")
                raw = fields.get(b"traceparent")
                if raw is not None:
                    traceparent = _traceparent(raw)
                unique = fields.get(b"unique") == b"1" and job_id is not None
                raw = fields.get(b"chordId")
                if raw is not None:
                    chord = (_text(raw, "chordId"), _int(fields.get(b"chordIndex", b""), "chordIndex", 0, ATTEMPT_MAX))
        except _Bad as exc:
            return self._reject(fields, info, "malformed", "MalformedEntry", str(exc))
        self.seq += 1
        d = Delivery(self.seq, si, entry_id, fields, name, stats, payload, job_id, timeout, attempt, attempts,
                     backoff, result_ttl, workflow_id, traceparent)
        if unique or chord is not None:  # only entries with those optional fields pay for this
            d.unique = unique
            d.chord = chord
        return d

    def _learn(self, raw_task: bytes | None, fields: dict[bytes, bytes]) -> Rejected | None:
        """Resolve a task name not seen before (or a bad one: its rejection)."""
        if not raw_task:
            what = "missing" if raw_task is None else "empty"
            return Rejected("malformed", "MalformedEntry", f"{what} field 'taskName'", "", *_status_of(fields, None),
                            fields)
        try:
            name = raw_task.decode()
        except UnicodeDecodeError:
            return Rejected("malformed", "MalformedEntry", "field 'taskName' is not UTF-8 text",
                            raw_task.decode("utf-8", "replace"), *_status_of(fields, None), fields)
        info = self.task_info(name)
        if info is None:
            return Rejected("unknown-task", "TaskNotFound", f"no handler for task {name!r} in this app", name,
                            *_status_of(fields, None), fields)
        if len(self._known) >= self._CACHE_MAX:
            self._known.clear()
        self._known[raw_task] = info
        return None

    def _backoff(self, raw: bytes) -> Backoff:
        got = self._backoffs.get(raw)
        if got is None:
            try:
                got = Backoff.from_wire(raw)
            except (WireError, ValueError) as exc:  # InvalidJobError is a ValueError
                got = f"field 'backoff': {exc}"
            if len(self._backoffs) >= self._CACHE_MAX:
                self._backoffs.clear()
            self._backoffs[raw] = got
        if isinstance(got, str):
            raise _Bad(got)
        return got

    @staticmethod
    def _reject(fields: dict[bytes, bytes], info: TaskInfo, reason: str, etype: str, message: str) -> Rejected:
        return Rejected(reason, etype, message, info.name, *_status_of(fields, info), fields)


def _status_of(fields: Mapping[bytes, bytes], info: TaskInfo | None) -> tuple[str | None, int | None]:
    """(job id, result TTL ms) of a rejected entry, each only if its own field is good:
    its status still says ``dead`` when it can be written."""
    jid = fields.get(b"jobId")
    try:
        job_id = jid.decode() if jid else None
    except UnicodeDecodeError:
        return None, None
    raw = fields.get(b"resultTtl")
    if raw is None:
        return job_id, info.result_ttl if info is not None else None
    try:
        ttl = int(raw)
    except ValueError:
        return job_id, None
    return job_id, ttl if 0 < ttl <= MS_MAX else None


Decoded = Union[Delivery, Rejected]
