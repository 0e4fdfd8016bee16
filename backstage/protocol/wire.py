"""Encode and decode what travels through Redis (WIRE.md v1).

Owns: ready-stream entry fields, scheduled-set members, dead-letter entry
fields and the ``backoff`` JSON. Pure functions, no I/O; used by producers,
the master, the promotion tests and the CLI.

Decoders never raise on bad input: :func:`decode_entry` returns a
:class:`Malformed` with a reason instead, so a worker can dead-letter the
entry and go on.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Mapping, Union

import orjson

from ..errors import InvalidJobError, PayloadError, WireError
from .keys import Keys, validate_queue

__all__ = [
    "Backoff",
    "Entry",
    "Malformed",
    "ScheduledMember",
    "decode_entry",
    "encode_entry",
    "encode_payload",
    "encode_scheduled",
    "decode_scheduled",
    "dead_letter_fields",
    "now_ms",
    "REASONS",
    "DEFAULT_MAX_PAYLOAD_BYTES",
]

#: Dead-letter reasons (WIRE.md › Dead-letter entry).
REASONS = frozenset({"failed", "max-deliveries", "timeout", "worker-lost", "malformed", "unknown-task",
                     "refused"})  # (ours) Redis refused the job's outcome (e.g. WRONGTYPE on its next step)

_MAX_MS = 10**15  # ~31,000 years: anything larger is a unit mistake


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _check_seconds(name: str, value: object, *, allow_zero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidJobError(f"{name}={value!r}: expected a number of seconds")
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidJobError(f"{name}={value!r}: expected a finite number of seconds")
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidJobError(f"{name}={value!r}: must be {'>=' if allow_zero else '>'} 0 seconds")
    return float(value)


@dataclass(frozen=True)
class Backoff:
    """Delay between attempts: fixed, or exponential with an optional cap.

    Seconds in the API; the wire carries milliseconds
    (``{"type":"exponential","delay":1000,"maxDelay":60000}``). ``jitter``
    (ours; other SDKs ignore it) spreads each delay over [d/2, d].
    """

    type: str = "exponential"
    delay: float = 1.0
    max_delay: float | None = None
    jitter: bool = False

    def __post_init__(self) -> None:
        if self.type not in ("fixed", "exponential"):
            raise InvalidJobError(f"backoff type {self.type!r}: use 'fixed' or 'exponential'")
        _check_seconds("backoff delay", self.delay)
        if self.max_delay is not None:
            _check_seconds("backoff max", self.max_delay, allow_zero=False)
        if not isinstance(self.jitter, bool):
            raise InvalidJobError(f"backoff jitter={self.jitter!r}: expected True or False")

    @classmethod
    def fixed(cls, delay: float, *, jitter: bool = False) -> "Backoff":
        """The same ``delay`` seconds before every retry."""
        return cls("fixed", delay, None, jitter)

    @classmethod
    def exponential(cls, delay: float = 1.0, *, max: float | None = None, jitter: bool = False) -> "Backoff":
        """``delay * 2**(n-1)`` seconds before retry n, capped at ``max`` seconds."""
        return cls("exponential", delay, max, jitter)

    def seconds(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before the retry that follows failed attempt number ``attempt`` (1-based)."""
        if self.type == "fixed":
            d = self.delay
        else:
            d = self.delay * (2.0 ** min(max(attempt - 1, 0), 62))
        if self.max_delay is not None:
            d = min(d, self.max_delay)
        if self.jitter and d > 0:
            d = d / 2 + (rng or random).uniform(0, d / 2)
        return d

    def to_wire(self) -> str:
        obj: dict[str, Any] = {"type": self.type, "delay": round(self.delay * 1000)}
        if self.max_delay is not None:
            # Never 0: the TS SDK reads maxDelay 0 as "cap at zero". Omit instead.
            obj["maxDelay"] = max(1, round(self.max_delay * 1000))
        if self.jitter:
            obj["jitter"] = True
        return orjson.dumps(obj).decode()

    @classmethod
    def from_wire(cls, text: str | bytes) -> "Backoff":
        """Decode the wire JSON; raises WireError. ``maxDelay: 0`` (Go) means no cap."""
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise WireError(f"backoff is not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise WireError(f"backoff must be a JSON object, got {type(obj).__name__}")
        kind = obj.get("type", "exponential")
        delay = obj.get("delay", 1000)
        cap = obj.get("maxDelay")
        jitter = obj.get("jitter", False)
        if kind not in ("fixed", "exponential"):
            raise WireError(f"backoff type {kind!r} is unknown")
        for name, v in (("delay", delay), ("maxDelay", cap)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v > _MAX_MS):
                raise WireError(f"backoff {name}={v!r} is not a millisecond count")
        return cls(kind, delay / 1000.0, (cap / 1000.0) if cap else None, jitter is True)


#: Default cap of a payload's JSON size, for producers and workers alike
#: (``backstage-prefork --max-payload-bytes``; ``max_payload_bytes=`` on the clients).
DEFAULT_MAX_PAYLOAD_BYTES = 16 * 1024 * 1024


def encode_payload(task: str, payload: Any) -> bytes:
    """Serialize a payload to JSON; raise PayloadError naming the task and type.

    JSON has no NaN or infinity: orjson would write ``null`` in their place
    and the handler would get ``None``, so they are refused here instead.
    """
    try:
        out = orjson.dumps(payload)
    except TypeError as exc:  # orjson.JSONEncodeError subclasses TypeError
        raise PayloadError(
            f"payload of task {task!r} cannot be serialized to JSON: {exc} "
            f"(payload type {type(payload).__name__}); pass dicts, lists, str, int, float, "
            "bool, None, datetime, UUID or dataclasses"
        ) from None
    # orjson writes NaN/inf as null. Only a payload whose JSON holds a null and does not
    # read back equal (NaN became None; or tuples, datetimes, … which never compare
    # equal to what JSON gives back) pays for the walk
    if b"null" in out and orjson.loads(out) != payload and _has_non_finite(payload):
        raise PayloadError(
            f"payload of task {task!r}: {_non_finite_path(payload, 'payload')} is not a finite number (JSON "
            "has no NaN or infinity; orjson would silently send null): send None or a string instead"
        )
    return out


_SCALARS = frozenset({int, str, bool, type(None)})


def _has_non_finite(value: Any) -> bool:
    """Is there a NaN/infinite float anywhere inside ``value``? (the fast check)"""
    stack = [value]
    pop, push, extend = stack.pop, stack.append, stack.extend
    isfinite = math.isfinite
    scalars = _SCALARS
    while stack:
        v = pop()
        t = type(v)
        if t in scalars:
            continue
        if t is float:
            if not isfinite(v):
                return True
        elif t is dict:
            for x in v.values():
                if type(x) not in scalars:
                    push(x)
        elif t is list or t is tuple:
            for x in v:
                if type(x) not in scalars:
                    push(x)
        elif isinstance(v, float):
            if not isfinite(v):
                return True
        elif isinstance(v, dict):
            extend(v.values())
        elif isinstance(v, (list, tuple)):
            extend(v)
        elif hasattr(t, "__dataclass_fields__") and dataclasses.is_dataclass(v):
            extend(getattr(v, f.name, None) for f in dataclasses.fields(v))
    return False


def _non_finite_path(value: Any, path: str) -> str:
    """Where the first NaN/infinite float is (``payload['a'][2]=nan``), for the message."""
    if isinstance(value, float):
        return f"{path}={value!r}" if not math.isfinite(value) else ""
    items: Any = ()
    if isinstance(value, dict):
        items = ((f"{path}[{k!r}]", v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = ((f"{path}.{f.name}", getattr(value, f.name, None)) for f in dataclasses.fields(value))
    for sub, v in items:
        if _has_non_finite(v):
            return _non_finite_path(v, sub)
    return path


@dataclass(frozen=True, slots=True)
class Entry:
    """A decoded ready-stream entry. ``payload`` stays raw JSON text (bytes)."""

    task: str
    payload: bytes
    enqueued_at: int | None = None
    attempts: int | None = None
    backoff: Backoff | None = None
    timeout_ms: int | None = None
    job_id: str | None = None
    attempt: int = 1

    def payload_value(self) -> Any:
        return orjson.loads(self.payload)


@dataclass(frozen=True, slots=True)
class Malformed:
    """An entry that cannot be processed, with the reason why."""

    reason: str
    task: str | None = None


def _text(v: bytes | str) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def _int_field(fields: Mapping[Any, Any], name: str, *, minimum: int) -> int | None:
    raw = fields.get(name)
    if raw is None:
        raw = fields.get(name.encode())
        if raw is None:
            return None
    try:
        v = int(raw)
    except (TypeError, ValueError):
        raise WireError(f"field {name!r}={_text(raw)[:40]!r} is not an integer") from None
    if v < minimum or v > _MAX_MS:
        raise WireError(f"field {name!r}={v} is out of range")
    return v


def _get(fields: Mapping[Any, Any], name: str) -> Any:
    v = fields.get(name.encode())
    return fields.get(name) if v is None else v


def decode_entry(fields: Mapping[bytes, bytes] | Mapping[str, str]) -> Union[Entry, Malformed]:
    """Decode a stream entry's field map (bytes or str keys); never raises."""
    task: str | None = None
    try:
        raw_task = _get(fields, "taskName")
        if raw_task is None:
            return Malformed("missing field 'taskName'")
        task = _text(raw_task)
        if not task:
            return Malformed("empty field 'taskName'")
        payload = _get(fields, "payload")
        if payload is None:
            payload = b"null"
        elif isinstance(payload, str):
            payload = payload.encode()
        try:
            orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            return Malformed(f"payload is not valid JSON: {exc}", task)
        raw_backoff = _get(fields, "backoff")
        raw_job_id = _get(fields, "jobId")
        return Entry(
            task=task,
            payload=payload,
            enqueued_at=_int_field(fields, "enqueuedAt", minimum=0),
            attempts=_int_field(fields, "attempts", minimum=1),
            backoff=Backoff.from_wire(raw_backoff) if raw_backoff is not None else None,
            timeout_ms=_int_field(fields, "timeout", minimum=1),
            job_id=_text(raw_job_id) if raw_job_id is not None else None,
            attempt=_int_field(fields, "attempt", minimum=1) or 1,
        )
    except WireError as exc:
        return Malformed(str(exc), task)
    except Exception as exc:  # noqa: BLE001 - the decoder must never take a worker down
        return Malformed(f"undecodable entry: {type(exc).__name__}: {exc}", task)


def encode_entry(
    task: str,
    payload_json: bytes | str,
    *,
    enqueued_at: int,
    job_id: str | None = None,
    attempts: int | None = None,
    backoff: Backoff | None = None,
    timeout_ms: int | None = None,
    attempt: int = 1,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str | bytes]:
    """Field map for ``XADD``; only the fields that carry information.
    ``extra`` adds our own optional fields (e.g. ``resultTtl``)."""
    fields: dict[str, str | bytes] = {"taskName": task, "payload": payload_json, "enqueuedAt": str(enqueued_at)}
    if attempts is not None:
        fields["attempts"] = str(attempts)
    if backoff is not None:
        fields["backoff"] = backoff.to_wire()
    if timeout_ms is not None:
        fields["timeout"] = str(timeout_ms)
    if job_id is not None:
        fields["jobId"] = job_id
    if attempt != 1:
        fields["attempt"] = str(attempt)
    if extra:
        fields.update(extra)
    return fields


@dataclass(frozen=True, slots=True)
class ScheduledMember:
    """A decoded ``P:scheduled`` member: the entry it becomes and where it goes."""

    stream_key: str
    entry: Entry


_NUMERIC_MEMBER_FIELDS = frozenset({"enqueuedAt", "attempts", "timeout", "attempt", "resultTtl"})


def encode_scheduled(stream_key: str, priority: str, fields: Mapping[Any, str | bytes]) -> bytes:
    """Member JSON for ``ZADD P:scheduled``, from the entry fields it will become.

    ``payload`` is kept as a JSON *string* (double-encoded), numbers as numbers,
    ``backoff`` as a string, as the Go and TS promoters expect. Keys may be
    str or bytes; numeric fields must hold integers (ValueError otherwise).
    """
    obj: dict[str, Any] = {}
    for k, v in fields.items():
        key = _text(k)
        s = _text(v)
        obj[key] = int(s) if key in _NUMERIC_MEMBER_FIELDS else s
    obj["streamKey"] = stream_key
    obj["priority"] = priority
    return orjson.dumps(obj)


def decode_scheduled(member: bytes | str, prefix: str) -> ScheduledMember:
    """Decode a scheduled member and route it (streamKey, else P:<priority>, else P:default).

    Raises WireError when the member is not a JSON object or its entry is malformed.
    """
    try:
        obj = orjson.loads(member)
    except orjson.JSONDecodeError as exc:
        raise WireError(f"scheduled member is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise WireError("scheduled member is not a JSON object")
    keys = Keys(prefix)
    stream_key = obj.get("streamKey")
    if not isinstance(stream_key, str) or not stream_key:
        prio = obj.get("priority")
        stream_key = keys.stream(prio if isinstance(prio, str) and prio else "default")
    try:
        validate_queue(keys.queue_of(stream_key))
    except ValueError:
        raise WireError(f"scheduled member routes to {stream_key!r}, which is not a queue of prefix {prefix!r}") from None
    fields: dict[str, str] = {}
    for k, v in obj.items():
        if k in ("streamKey", "priority"):
            continue
        if k == "payload" and not isinstance(v, str):
            v = orjson.dumps(v).decode()  # tolerate a single-encoded payload
        fields[k] = v if isinstance(v, str) else orjson.dumps(v).decode()
    decoded = decode_entry(fields)
    if isinstance(decoded, Malformed):
        raise WireError(f"scheduled member: {decoded.reason}")
    return ScheduledMember(stream_key, decoded)


def dead_letter_fields(
    fields: Mapping[bytes, bytes],
    *,
    original_id: str,
    queue_key: str,
    reason: str,
    delivery_count: int,
    consumer: str,
    error_type: str = "",
    error_message: str = "",
    traceback: str = "",
    dead_lettered_at: int | None = None,
) -> dict[bytes, bytes]:
    """Field map of a dead-letter entry: the original fields (all kept, so a
    requeue restores the job exactly) plus the WIRE.md dead-letter fields."""
    out: dict[bytes, bytes] = dict(fields)
    out.setdefault(b"taskName", b"")
    out.setdefault(b"payload", b"null")
    out.setdefault(b"enqueuedAt", b"0")
    out[b"originalId"] = original_id.encode()
    out[b"deadLetteredAt"] = str(dead_lettered_at if dead_lettered_at is not None else now_ms()).encode()
    out[b"deliveryCount"] = str(delivery_count).encode()
    out[b"queue"] = queue_key.encode()
    out[b"reason"] = reason.encode()
    out[b"errorType"] = error_type.encode()
    out[b"errorMessage"] = error_message.encode()
    out[b"traceback"] = traceback.encode()
    out[b"consumer"] = consumer.encode()
    return out
