"""The wire format (WIRE.md v1): decoding what the Go and TS SDKs write,
encoding what they read, and never crashing on anything else.

Pure functions: no Redis here (the client tests check the same shapes on a
real server).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backstage.errors import InvalidJobError, WireError
from backstage.protocol.wire import (
    REASONS,
    Backoff,
    Entry,
    Malformed,
    ScheduledMember,
    dead_letter_fields,
    decode_entry,
    decode_scheduled,
    encode_entry,
    encode_scheduled,
    now_ms,
)

VECTORS: dict[str, Any] = json.loads((Path(__file__).parent / "data" / "seed-sdk-entries.json").read_text("utf-8"))


def _by_name(section: str) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in VECTORS[section]}


STREAM = _by_name("stream_entries")
SCHEDULED = _by_name("scheduled_members")
DEAD = _by_name("dead_letter_entries")
BROADCAST = _by_name("broadcast_entries")

# What each vector must decode to, written out by hand from WIRE.md (not
# derived from the decoder under test).
#   name: (task, payload text, enqueuedAt, attempts, timeout ms, backoff)
EXPECTED_ENTRIES: dict[str, tuple[str, str, int, int | None, int | None, Backoff | None]] = {
    "go-plain": ("order.process", '{"id":42,"total":19.99}', 1764370000123, None, None, None),
    "go-with-options": ("payment.charge", '{"id":7}', 1764370000456, 3, 30000, Backoff("exponential", 1.0, None)),
    "go-nil-payload": ("cache.warm", "null", 1764370000789, None, None, None),
    "ts-plain": ("email.receipt", '{"to":"a@example.com","items":[1,2,3]}', 1764370001000, None, None, None),
    "ts-with-options": ("report.build", '{"kind":"daily"}', 1764370001234, 5, 120000, Backoff("fixed", 0.5, None)),
    "go-cron-fire": ("report.hourly", "{}", 1764370800000, None, None, None),
    "ts-cron-fire": (
        "report.hourly",
        '{"taskName":"report.hourly","args":{"since":{"__class__":"Date","value":"2026-11-28T00:00:00.000Z"}}}',
        1764370800000, None, None, None,
    ),
}

#   name: (stream key, task, payload text, enqueuedAt, attempts, timeout ms, backoff)
EXPECTED_SCHEDULED: dict[str, tuple[str, str, str, int, int | None, int | None, Backoff | None]] = {
    "ts-delayed-default": ("backstage:default", "reminder.send", '{"user":9}', 1764370000000, None, None, None),
    "ts-delayed-custom-queue": (
        "backstage:reports", "report.build", '{"kind":"weekly"}', 1764370000000, 2, 5000, Backoff("fixed", 1.0, None),
    ),
    "go-delayed-urgent": ("backstage:urgent", "payment.retry", '{"id":1}', 1764370000000, 3, 30000, None),
    "go-delayed-no-priority": ("backstage:default", "cleanup", "null", 1764370000000, None, None, None),
}

DEAD_LETTER_FIELDS = (
    "taskName", "payload", "enqueuedAt", "originalId", "deadLetteredAt", "deliveryCount",
    "queue", "reason", "errorType", "errorMessage", "traceback", "consumer",
)


def _as_bytes(fields: dict[str, str]) -> dict[bytes, bytes]:
    return {k.encode(): v.encode() for k, v in fields.items()}


def _decoded(fields: Any) -> Entry:
    e = decode_entry(fields)
    assert isinstance(e, Entry), e
    return e


# -- vectors: stream entries -------------------------------------------------------

def test_every_vector_has_an_expectation() -> None:
    assert set(STREAM) == set(EXPECTED_ENTRIES)
    assert set(SCHEDULED) == set(EXPECTED_SCHEDULED) | {"undecodable"}


@pytest.mark.parametrize("name", sorted(EXPECTED_ENTRIES))
@pytest.mark.parametrize("keyed", ["bytes", "str"])
def test_stream_vector_decodes(name: str, keyed: str) -> None:
    fields = STREAM[name]["fields"]
    task, payload, enqueued_at, attempts, timeout_ms, backoff = EXPECTED_ENTRIES[name]
    e = _decoded(_as_bytes(fields) if keyed == "bytes" else dict(fields))
    assert e.task == task
    assert e.payload == payload.encode()  # raw JSON, byte for byte
    assert e.payload_value() == json.loads(payload)
    assert e.enqueued_at == enqueued_at
    assert e.attempts == attempts
    assert e.timeout_ms == timeout_ms
    assert e.backoff == backoff
    assert e.job_id is None  # other SDKs write none
    assert e.attempt == 1


def test_go_max_delay_zero_means_no_cap() -> None:
    e = _decoded(_as_bytes(STREAM["go-with-options"]["fields"]))
    assert e.backoff is not None
    assert e.backoff.max_delay is None
    # uncapped exponential: 1 s * 2**(n-1), never clamped to 0
    assert [e.backoff.seconds(n) for n in (1, 2, 3, 11)] == [1.0, 2.0, 4.0, 1024.0]
    assert e.backoff.seconds(30) == 2.0**29


def test_ts_cron_payload_with_type_markers_is_plain_json() -> None:
    e = _decoded(_as_bytes(STREAM["ts-cron-fire"]["fields"]))
    value = e.payload_value()
    assert value == {
        "taskName": "report.hourly",
        "args": {"since": {"__class__": "Date", "value": "2026-11-28T00:00:00.000Z"}},
    }
    assert isinstance(value["args"]["since"], dict)  # not revived into a datetime


def test_field_order_does_not_matter() -> None:
    fields = STREAM["go-with-options"]["fields"]
    reversed_fields = dict(reversed(list(fields.items())))
    assert list(reversed_fields) != list(fields)
    assert _decoded(_as_bytes(reversed_fields)) == _decoded(_as_bytes(fields))


def test_unknown_and_our_fields_are_tolerated() -> None:
    fields = _as_bytes(STREAM["go-plain"]["fields"])
    fields.update({b"jobId": b"abc123", b"attempt": b"3", b"workflowId": b"wf-1", b"somethingNew": b"\x00\xff"})
    e = _decoded(fields)
    assert (e.task, e.job_id, e.attempt) == ("order.process", "abc123", 3)


def test_missing_payload_decodes_as_null() -> None:
    e = _decoded({b"taskName": b"t"})
    assert e.payload == b"null"
    assert e.payload_value() is None
    assert e.enqueued_at is None


# -- vectors: scheduled members -------------------------------------------------------

@pytest.mark.parametrize("name", sorted(EXPECTED_SCHEDULED))
@pytest.mark.parametrize("as_bytes", [True, False])
def test_scheduled_vector_decodes_and_routes(name: str, as_bytes: bool) -> None:
    member = SCHEDULED[name]["member"]
    stream_key, task, payload, enqueued_at, attempts, timeout_ms, backoff = EXPECTED_SCHEDULED[name]
    m = decode_scheduled(member.encode() if as_bytes else member, "backstage")
    assert isinstance(m, ScheduledMember)
    assert m.stream_key == stream_key
    assert m.entry.task == task
    assert m.entry.payload == payload.encode()  # the double-encoded payload comes back as raw JSON text
    assert m.entry.enqueued_at == enqueued_at
    assert m.entry.attempts == attempts
    assert m.entry.timeout_ms == timeout_ms
    assert m.entry.backoff == backoff


def test_stream_key_wins_over_priority() -> None:
    raw = json.loads(SCHEDULED["ts-delayed-custom-queue"]["member"])
    assert raw["priority"] == "default"  # the vector really does disagree with itself
    assert decode_scheduled(SCHEDULED["ts-delayed-custom-queue"]["member"], "backstage").stream_key == "backstage:reports"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"priority": "low"}, "other:low"),
        ({"priority": "reports"}, "other:reports"),
        ({"priority": ""}, "other:default"),
        ({"streamKey": "", "priority": "urgent"}, "other:urgent"),
        ({}, "other:default"),
    ],
)
def test_scheduled_routing_fallbacks(extra: dict[str, str], expected: str) -> None:
    member = json.dumps({"taskName": "t", "payload": "1", "enqueuedAt": 5, **extra})
    assert decode_scheduled(member, "other").stream_key == expected


def test_single_encoded_scheduled_payload_is_tolerated() -> None:
    member = json.dumps({"taskName": "t", "payload": {"a": [1, 2]}, "enqueuedAt": 5, "streamKey": "p:default"})
    assert decode_scheduled(member, "p").entry.payload_value() == {"a": [1, 2]}


@pytest.mark.parametrize(
    "member",
    [
        SCHEDULED["undecodable"]["member"],
        "[1, 2]",
        '"just a string"',
        json.dumps({"payload": "1", "streamKey": "backstage:default"}),  # no taskName
        json.dumps({"taskName": "t", "payload": "{oops", "streamKey": "backstage:default"}),
        json.dumps({"taskName": "t", "payload": "1", "attempts": "many"}),
        b"\xff\xfe",
    ],
)
def test_undecodable_scheduled_member_raises_wire_error(member: str | bytes) -> None:
    with pytest.raises(WireError):
        decode_scheduled(member, "backstage")


def test_undecodable_vector_reason_says_json() -> None:
    with pytest.raises(WireError, match="not JSON"):
        decode_scheduled(SCHEDULED["undecodable"]["member"], "backstage")


# -- vectors: dead letters and broadcasts ----------------------------------------------

@pytest.mark.parametrize("name", sorted(DEAD))
def test_dead_letter_vectors_decode_as_entries(name: str) -> None:
    fields = DEAD[name]["fields"]
    e = _decoded(_as_bytes(fields))
    assert e.task == fields["taskName"]
    assert e.payload == fields["payload"].encode()
    assert e.enqueued_at == int(fields["enqueuedAt"])


def test_broadcast_vector_decodes_as_entry() -> None:
    e = _decoded(_as_bytes(BROADCAST["go-broadcast"]["fields"]))
    assert (e.task, e.payload_value(), e.enqueued_at) == ("cache.clear", {"scope": "all"}, 1764370002000)


# -- encoding: what the other SDKs read ---------------------------------------------------

def test_encode_entry_minimal_is_the_three_fields() -> None:
    fields = encode_entry("order.process", b'{"id":42}', enqueued_at=1764370000123)
    assert fields == {"taskName": "order.process", "payload": b'{"id":42}', "enqueuedAt": "1764370000123"}


def test_encode_entry_with_options_writes_strings() -> None:
    fields = encode_entry(
        "payment.charge", '{"id":7}', enqueued_at=1764370000456, job_id="j-1", attempts=3,
        backoff=Backoff.exponential(1, max=60), timeout_ms=30000, attempt=2,
    )
    assert fields == {
        "taskName": "payment.charge",
        "payload": '{"id":7}',
        "enqueuedAt": "1764370000456",
        "attempts": "3",
        "backoff": '{"type":"exponential","delay":1000,"maxDelay":60000}',
        "timeout": "30000",
        "jobId": "j-1",
        "attempt": "2",
    }
    assert all(isinstance(v, (str, bytes)) for v in fields.values())


def test_encode_entry_round_trips_through_decode() -> None:
    backoff = Backoff.fixed(0.5)
    fields = encode_entry("t", b"[1,2]", enqueued_at=99, job_id="j", attempts=4, backoff=backoff, timeout_ms=1500, attempt=3)
    wire = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}
    assert decode_entry(wire) == Entry("t", b"[1,2]", 99, 4, backoff, 1500, "j", 3)


def test_encode_scheduled_matches_what_the_promoters_read() -> None:
    fields = encode_entry(
        "report.build", b'{"kind":"weekly"}', enqueued_at=1764370000000, job_id="j-9", attempts=2,
        backoff=Backoff.fixed(1), timeout_ms=5000,
    )
    member = encode_scheduled("backstage:reports", "reports", fields)
    assert isinstance(member, bytes)
    obj = orjson.loads(member)
    assert obj == {
        "taskName": "report.build",
        "payload": '{"kind":"weekly"}',  # a JSON string: double-encoded
        "enqueuedAt": 1764370000000,  # numbers as JSON numbers
        "attempts": 2,
        "backoff": '{"type":"fixed","delay":1000}',  # backoff stays a string
        "timeout": 5000,
        "jobId": "j-9",
        "streamKey": "backstage:reports",
        "priority": "reports",
    }
    assert isinstance(obj["payload"], str)
    m = decode_scheduled(member, "backstage")
    assert m.stream_key == "backstage:reports"
    assert m.entry == Entry("report.build", b'{"kind":"weekly"}', 1764370000000, 2, Backoff.fixed(1), 5000, "j-9")


def test_encode_scheduled_null_payload_is_the_string_null() -> None:
    member = encode_scheduled("p:default", "default", encode_entry("t", b"null", enqueued_at=1))
    obj = orjson.loads(member)
    assert obj["payload"] == "null"
    assert decode_scheduled(member, "p").entry.payload_value() is None


def test_identical_jobs_differ_only_by_job_id() -> None:
    a = encode_scheduled("p:default", "default", encode_entry("t", b"1", enqueued_at=1, job_id="a"))
    b = encode_scheduled("p:default", "default", encode_entry("t", b"1", enqueued_at=1, job_id="b"))
    assert a != b


@pytest.mark.parametrize(
    ("backoff", "wire"),
    [
        (Backoff.fixed(0.5), {"type": "fixed", "delay": 500}),
        (Backoff.exponential(1), {"type": "exponential", "delay": 1000}),
        (Backoff.exponential(2, max=60), {"type": "exponential", "delay": 2000, "maxDelay": 60000}),
        (Backoff.exponential(1, max=1e-9), {"type": "exponential", "delay": 1000, "maxDelay": 1}),
        (Backoff.exponential(1, max=0.0004), {"type": "exponential", "delay": 1000, "maxDelay": 1}),
        (Backoff.exponential(1, max=0.0016), {"type": "exponential", "delay": 1000, "maxDelay": 2}),
        (Backoff.fixed(3, jitter=True), {"type": "fixed", "delay": 3000, "jitter": True}),
    ],
)
def test_backoff_to_wire(backoff: Backoff, wire: dict[str, Any]) -> None:
    text = backoff.to_wire()
    assert isinstance(text, str)
    assert orjson.loads(text) == wire
    assert '"maxDelay":0' not in text


def test_backoff_to_wire_is_compact_json_in_sdk_key_order() -> None:
    assert Backoff.exponential(1, max=60).to_wire() == '{"type":"exponential","delay":1000,"maxDelay":60000}'


@settings(max_examples=200, deadline=None, database=None)
@given(st.floats(min_value=1e-12, max_value=1e9, allow_nan=False, allow_infinity=False))
def test_backoff_to_wire_never_writes_max_delay_zero(cap: float) -> None:
    obj = orjson.loads(Backoff.exponential(1, max=cap).to_wire())
    assert isinstance(obj["maxDelay"], int)
    assert obj["maxDelay"] >= 1


@pytest.mark.parametrize(
    "backoff",
    [Backoff.fixed(0.5), Backoff.fixed(0), Backoff.exponential(1, max=60), Backoff.exponential(0.25, jitter=True)],
)
def test_backoff_wire_round_trip(backoff: Backoff) -> None:
    assert Backoff.from_wire(backoff.to_wire()) == backoff
    assert Backoff.from_wire(backoff.to_wire().encode()) == backoff


def test_backoff_from_wire_defaults() -> None:
    assert Backoff.from_wire("{}") == Backoff("exponential", 1.0, None, False)
    assert Backoff.from_wire('{"type":"fixed","delay":250,"maxDelay":0}') == Backoff("fixed", 0.25, None)


# -- malformed entries -------------------------------------------------------------

GOOD = {b"taskName": b"order.process", b"payload": b'{"id":1}', b"enqueuedAt": b"1764370000123"}


@pytest.mark.parametrize(
    ("change", "words", "task"),
    [
        ({b"taskName": None}, ("missing", "taskName"), None),
        ({b"taskName": b""}, ("empty", "taskName"), None),
        ({b"payload": b"{not json"}, ("payload", "JSON"), "order.process"),
        ({b"payload": b""}, ("payload", "JSON"), "order.process"),
        ({b"payload": b"\xff\xfe"}, ("payload", "JSON"), "order.process"),
        ({b"payload": b"undefined"}, ("payload", "JSON"), "order.process"),
        ({b"attempts": b"three"}, ("attempts", "integer"), "order.process"),
        ({b"attempts": b"2.5"}, ("attempts", "integer"), "order.process"),
        ({b"attempts": b"0"}, ("attempts", "range"), "order.process"),
        ({b"timeout": b"1.5"}, ("timeout", "integer"), "order.process"),
        ({b"timeout": b"-1"}, ("timeout", "range"), "order.process"),
        ({b"enqueuedAt": b"yesterday"}, ("enqueuedAt", "integer"), "order.process"),
        ({b"enqueuedAt": b""}, ("enqueuedAt", "integer"), "order.process"),
        ({b"enqueuedAt": b"99999999999999999999"}, ("enqueuedAt", "range"), "order.process"),
        ({b"attempt": b"x"}, ("attempt", "integer"), "order.process"),
        ({b"backoff": b"{nope"}, ("backoff", "JSON"), "order.process"),
        ({b"backoff": b"[1000]"}, ("backoff", "object"), "order.process"),
        ({b"backoff": b'{"type":"linear","delay":1}'}, ("backoff", "linear"), "order.process"),
        ({b"backoff": b'{"type":"fixed","delay":-5}'}, ("backoff", "delay"), "order.process"),
        ({b"backoff": b'{"type":"fixed","delay":"5"}'}, ("backoff", "delay"), "order.process"),
        ({b"backoff": b'{"type":"fixed","delay":1,"maxDelay":true}'}, ("backoff", "maxDelay"), "order.process"),
    ],
)
def test_malformed_entry_names_the_problem(change: dict[bytes, bytes | None], words: tuple[str, ...], task: str | None) -> None:
    fields = dict(GOOD)
    for k, v in change.items():
        if v is None:
            del fields[k]
        else:
            fields[k] = v
    variants: list[dict[Any, Any]] = [fields]
    try:
        variants.append({k.decode(): v.decode() for k, v in fields.items()})
    except UnicodeDecodeError:
        pass  # not UTF-8: only a bytes-keyed map can carry it
    for variant in variants:
        m = decode_entry(variant)
        assert isinstance(m, Malformed), m
        for word in words:
            assert word in m.reason
        assert m.task == task


def test_malformed_vector_fields_in_str_map() -> None:
    m = decode_entry({"payload": "{}", "enqueuedAt": "1"})
    assert isinstance(m, Malformed)
    assert "taskName" in m.reason


_FIELD_NAMES = ["taskName", "payload", "enqueuedAt", "attempts", "backoff", "timeout", "jobId", "attempt", "workflowId"]

_keys = st.one_of(
    st.sampled_from(_FIELD_NAMES),
    st.sampled_from(_FIELD_NAMES).map(str.encode),
    st.text(max_size=12),
    st.binary(max_size=12),
)
_json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
_values = st.one_of(
    st.text(max_size=24),
    st.binary(max_size=24),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    _json_scalars.map(json.dumps),
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["fixed", "exponential", "linear", ""]) | st.integers(),
            "delay": st.integers(-5, 10**16) | st.floats() | st.text(max_size=3) | st.none(),
            "maxDelay": st.integers(-5, 10**16) | st.floats() | st.booleans() | st.none(),
            "jitter": st.booleans() | st.integers(),
        },
    ).map(lambda d: json.dumps(d)),
    st.sampled_from(["", "null", "{}", "0", "-1", " 7 ", "1e3", "NaN", "\x00"]),
)
_maybe_bytes = _values.flatmap(lambda v: st.sampled_from([v, v.encode("utf-8", "surrogatepass")]) if isinstance(v, str) else st.just(v))


_real_keys = st.sampled_from(_FIELD_NAMES) | st.sampled_from(_FIELD_NAMES).map(str.encode)
# Maps that do carry a taskName, so the decoder gets past its first check.
_around_real = st.builds(
    lambda name_key, name, rest: {**rest, name_key: name},
    st.sampled_from(["taskName", b"taskName"]),
    _maybe_bytes,
    st.dictionaries(_real_keys, _maybe_bytes, max_size=6),
)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.dictionaries(_keys, _maybe_bytes, max_size=8), _around_real))
def test_decode_entry_never_raises(fields: dict[Any, Any]) -> None:
    result = decode_entry(fields)
    assert isinstance(result, (Entry, Malformed))
    if isinstance(result, Entry):
        assert result.task
        orjson.loads(result.payload)  # an Entry always carries valid JSON
        assert result.attempt >= 1
    else:
        assert isinstance(result.reason, str) and result.reason


@settings(max_examples=100, deadline=None, database=None)
@given(st.fixed_dictionaries(
    {"taskName": st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=10)},
    optional={"payload": _json_values.map(json.dumps), "attempts": st.integers(1, 10**6).map(str)},
))
def test_well_formed_entries_decode(fields: dict[str, str]) -> None:
    e = decode_entry({k.encode(): v.encode() for k, v in fields.items()})
    assert isinstance(e, Entry)
    assert e.task == fields["taskName"]
    assert e.payload_value() == json.loads(fields.get("payload", "null"))


# -- backoff maths -------------------------------------------------------------------

def test_fixed_backoff_is_constant() -> None:
    b = Backoff.fixed(2.5)
    assert [b.seconds(n) for n in range(1, 8)] == [2.5] * 7


def test_exponential_backoff_doubles() -> None:
    b = Backoff.exponential(1)
    assert [b.seconds(n) for n in range(1, 7)] == [1, 2, 4, 8, 16, 32]


def test_exponential_backoff_cap() -> None:
    b = Backoff.exponential(0.5, max=3)
    assert [b.seconds(n) for n in range(1, 7)] == [0.5, 1, 2, 3, 3, 3]


def test_fixed_backoff_respects_cap() -> None:
    assert Backoff("fixed", 10, 4).seconds(1) == 4


def test_backoff_attempt_below_one_counts_as_first() -> None:
    b = Backoff.exponential(3)
    assert b.seconds(0) == 3
    assert b.seconds(-5) == 3


def test_backoff_huge_attempt_stays_finite() -> None:
    assert math.isfinite(Backoff.exponential(1).seconds(10_000))
    assert Backoff.exponential(1, max=60).seconds(10_000) == 60


@pytest.mark.parametrize("backoff", [Backoff.fixed(4, jitter=True), Backoff.exponential(1, max=30, jitter=True)])
def test_jitter_spreads_over_half_to_full(backoff: Backoff) -> None:
    rng = random.Random(1234)
    plain = Backoff(backoff.type, backoff.delay, backoff.max_delay, jitter=False)
    for attempt in range(1, 8):
        d = plain.seconds(attempt)
        samples = [backoff.seconds(attempt, rng) for _ in range(200)]
        assert all(d / 2 <= s <= d for s in samples), (attempt, d, min(samples), max(samples))
        assert min(samples) < d * 0.6  # really spread, not pinned to one end
        assert max(samples) > d * 0.9


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    b = Backoff.exponential(1, jitter=True)
    first = [b.seconds(n, random.Random(7)) for n in range(1, 6)]
    second = [b.seconds(n, random.Random(7)) for n in range(1, 6)]
    assert first == second


def test_jitter_of_zero_delay_is_zero() -> None:
    assert Backoff.fixed(0, jitter=True).seconds(3, random.Random(1)) == 0


@pytest.mark.parametrize(
    ("make", "word"),
    [
        (lambda: Backoff("linear"), "linear"),
        (lambda: Backoff.fixed(-1), "delay"),
        (lambda: Backoff.fixed(float("nan")), "delay"),
        (lambda: Backoff.fixed(float("inf")), "delay"),
        (lambda: Backoff.fixed("1"), "delay"),  # type: ignore[arg-type]
        (lambda: Backoff.fixed(True), "delay"),
        (lambda: Backoff.exponential(1, max=0), "max"),
        (lambda: Backoff.exponential(1, max=-2), "max"),
        (lambda: Backoff("fixed", 1, None, "yes"), "jitter"),  # type: ignore[arg-type]
    ],
)
def test_invalid_backoff_raises_invalid_job_error(make: Any, word: str) -> None:
    with pytest.raises(InvalidJobError, match=word) as info:
        make()
    assert isinstance(info.value, ValueError)


# -- dead letters --------------------------------------------------------------------

def test_dead_letter_fields_keep_the_original_and_add_every_wire_field() -> None:
    original = {
        b"taskName": b"order.process", b"payload": b'{"id":42}', b"enqueuedAt": b"1764370000123",
        b"attempts": b"3", b"jobId": b"j-1", b"custom": b"\x00kept",
    }
    snapshot = dict(original)
    out = dead_letter_fields(
        original, original_id="1764370000123-0", queue_key="backstage:default", reason="failed",
        delivery_count=3, consumer="host-123", error_type="ValueError", error_message="boom",
        traceback="Traceback...", dead_lettered_at=1764370090000,
    )
    assert original == snapshot  # not mutated
    for k, v in original.items():
        assert out[k] == v
    assert set(out) == set(original) | {name.encode() for name in DEAD_LETTER_FIELDS}
    assert out[b"originalId"] == b"1764370000123-0"
    assert out[b"deadLetteredAt"] == b"1764370090000"
    assert out[b"deliveryCount"] == b"3"
    assert out[b"queue"] == b"backstage:default"
    assert out[b"reason"] == b"failed"
    assert out[b"errorType"] == b"ValueError"
    assert out[b"errorMessage"] == b"boom"
    assert out[b"traceback"] == b"Traceback..."
    assert out[b"consumer"] == b"host-123"
    assert all(isinstance(v, bytes) for v in out.values())
    # a dead letter is still an entry: a requeue restores the job exactly
    e = _decoded(out)
    assert (e.task, e.payload, e.attempts, e.job_id) == ("order.process", b'{"id":42}', 3, "j-1")


def test_dead_letter_of_a_malformed_entry_fills_the_required_fields() -> None:
    before = now_ms()
    out = dead_letter_fields({b"payload": b"{broken"}, original_id="1-0", queue_key="p:default",
                             reason="malformed", delivery_count=1, consumer="c")
    after = now_ms()
    assert out[b"taskName"] == b""
    assert out[b"payload"] == b"{broken"  # raw, as it was
    assert out[b"enqueuedAt"] == b"0"
    assert before <= int(out[b"deadLetteredAt"]) <= after
    assert {name.encode() for name in DEAD_LETTER_FIELDS} <= set(out)


def test_reasons_cover_wire_md() -> None:
    assert {"failed", "max-deliveries", "timeout", "worker-lost", "malformed", "unknown-task"} <= REASONS
