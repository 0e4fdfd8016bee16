"""Producers against a real redis-server: what `Client` and `AsyncClient`
write (WIRE.md), dedupe, bulk enqueue, argument errors and Redis failures."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import math
import re
import time
import traceback
import uuid
from typing import Any, Iterator

import orjson
import pytest
import redis

from backstage import (
    AsyncClient,
    Backoff,
    Backstage,
    BackstageError,
    BrokerError,
    Client,
    ConfigError,
    InvalidJobError,
    Job,
    PayloadError,
    Priority,
    RedisUnavailable,
    RedisVersionError,
)
from backstage.connections import redis_conn
from backstage.protocol.keys import Keys
from backstage.protocol.wire import Entry, decode_entry, decode_scheduled, now_ms

from .redis_server import RedisServer, free_port


def _stream(r: redis.Redis, key: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return r.xrange(key)


def _only_entry(r: redis.Redis, key: str) -> dict[bytes, bytes]:
    entries = _stream(r, key)
    assert len(entries) == 1, entries
    return entries[0][1]


def _scheduled(r: redis.Redis, keys: Keys) -> list[tuple[bytes, float]]:
    return r.zrange(keys.scheduled, 0, -1, withscores=True)


def _prefix_keys(r: redis.Redis, prefix: str) -> set[bytes]:
    return set(r.keys(f"{prefix}:*"))


def _entry(fields: dict[bytes, bytes]) -> Entry:
    e = decode_entry(fields)
    assert isinstance(e, Entry), e
    return e


# -- immediate enqueue -----------------------------------------------------------------

def test_enqueue_immediate_writes_one_entry(client: Client, r: redis.Redis, keys: Keys, prefix: str) -> None:
    before = now_ms()
    job_id = client.enqueue("order.process", {"id": 42, "total": 19.99})
    after = now_ms()
    assert isinstance(job_id, str) and job_id
    fields = _only_entry(r, keys.stream("default"))
    assert set(fields) == {b"taskName", b"payload", b"enqueuedAt", b"jobId"}
    assert fields[b"taskName"] == b"order.process"
    assert orjson.loads(fields[b"payload"]) == {"id": 42, "total": 19.99}
    assert before <= int(fields[b"enqueuedAt"]) <= after
    assert fields[b"jobId"] == job_id.encode()
    e = _entry(fields)
    assert (e.task, e.job_id, e.attempts, e.backoff, e.timeout_ms) == ("order.process", job_id, None, None, None)
    # nothing else written: no scheduled member, no dedupe marker
    assert _prefix_keys(r, prefix) == {keys.stream("default").encode()}


def test_job_ids_are_unique(client: Client) -> None:
    ids = {client.enqueue("t", i) for i in range(50)}
    assert len(ids) == 50
    assert None not in ids


@pytest.mark.parametrize(
    ("options", "queue"),
    [
        ({"priority": "urgent"}, "urgent"),
        ({"priority": Priority.LOW}, "low"),
        ({"priority": "default"}, "default"),
        ({"queue": "reports"}, "reports"),
        ({"queue": "urgent"}, "urgent"),
        ({"priority": "urgent", "queue": "urgent"}, "urgent"),
        ({"queue": "a.b-c_9"}, "a.b-c_9"),
    ],
)
def test_priority_and_queue_route_to_their_stream(
    client: Client, r: redis.Redis, keys: Keys, prefix: str, options: dict[str, str], queue: str
) -> None:
    job_id = client.enqueue("t", 1, **options)
    fields = _only_entry(r, keys.stream(queue))
    assert fields[b"jobId"] == job_id.encode()  # type: ignore[union-attr]
    assert _prefix_keys(r, prefix) == {keys.stream(queue).encode()}


def test_options_appear_on_the_wire(client: Client, r: redis.Redis, keys: Keys) -> None:
    client.enqueue("payment.charge", {"id": 7}, attempts=3, backoff=Backoff.exponential(1, max=60), timeout=30)
    fields = _only_entry(r, keys.stream("default"))
    assert fields[b"attempts"] == b"3"
    assert fields[b"timeout"] == b"30000"  # ms
    assert orjson.loads(fields[b"backoff"]) == {"type": "exponential", "delay": 1000, "maxDelay": 60000}
    e = _entry(fields)
    assert (e.attempts, e.timeout_ms, e.backoff) == (3, 30000, Backoff.exponential(1, max=60))


def test_numeric_backoff_is_fixed_and_tiny_timeout_rounds_up(client: Client, r: redis.Redis, keys: Keys) -> None:
    client.enqueue("t", None, backoff=2.5, timeout=0.0001)
    fields = _only_entry(r, keys.stream("default"))
    assert orjson.loads(fields[b"backoff"]) == {"type": "fixed", "delay": 2500}
    assert fields[b"timeout"] == b"1"


def test_backoff_without_cap_omits_max_delay(client: Client, r: redis.Redis, keys: Keys) -> None:
    client.enqueue("t", None, backoff=Backoff.exponential(2))
    assert b"maxDelay" not in _only_entry(r, keys.stream("default"))[b"backoff"]


# -- payloads ---------------------------------------------------------------------------

@dataclasses.dataclass
class _Point:
    x: int
    y: int


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (None, b"null"),
        ({"a": {"b": [1, {"c": None}]}, "d": True}, b'{"a":{"b":[1,{"c":null}]},"d":true}'),
        ("h\u00e9llo \u2713 \u65e5\u672c", '"h\u00e9llo \u2713 \u65e5\u672c"'.encode()),
        (dt.datetime(2026, 11, 28, 12, 30, tzinfo=dt.timezone.utc), b'"2026-11-28T12:30:00+00:00"'),
        (uuid.UUID("12345678-1234-5678-1234-567812345678"), b'"12345678-1234-5678-1234-567812345678"'),
        (_Point(1, 2), b'{"x":1,"y":2}'),
        ([1, 2.5, "x"], b'[1,2.5,"x"]'),
        (0, b"0"),
    ],
)
def test_payload_kinds(client: Client, r: redis.Redis, keys: Keys, payload: Any, expected: bytes) -> None:
    client.enqueue("t", payload)
    fields = _only_entry(r, keys.stream("default"))
    assert fields[b"payload"] == expected
    assert _entry(fields).payload == expected


# -- delayed -----------------------------------------------------------------------------

def test_delay_puts_a_member_in_scheduled(client: Client, r: redis.Redis, keys: Keys, prefix: str) -> None:
    before = now_ms()
    job_id = client.enqueue("reminder.send", {"user": 9}, delay=60, attempts=2, timeout=5)
    after = now_ms()
    [(member, score)] = _scheduled(r, keys)
    assert before + 60_000 <= score <= after + 60_000
    assert not r.exists(keys.stream("default"))
    raw = orjson.loads(member)
    assert raw["payload"] == '{"user":9}'  # double-encoded
    assert raw["streamKey"] == keys.stream("default")
    assert raw["priority"] == "default"
    assert raw["jobId"] == job_id
    assert isinstance(raw["enqueuedAt"], int) and before <= raw["enqueuedAt"] <= after
    m = decode_scheduled(member, prefix)
    assert m.stream_key == keys.stream("default")
    assert (m.entry.task, m.entry.payload_value(), m.entry.job_id) == ("reminder.send", {"user": 9}, job_id)
    assert (m.entry.attempts, m.entry.timeout_ms) == (2, 5000)


@pytest.mark.parametrize(("options", "queue"), [({"queue": "reports"}, "reports"), ({"priority": "urgent"}, "urgent")])
def test_delayed_member_routes_to_its_queue(
    client: Client, r: redis.Redis, keys: Keys, prefix: str, options: dict[str, str], queue: str
) -> None:
    client.enqueue("t", 1, delay=10, backoff=Backoff.fixed(1), **options)
    [(member, _score)] = _scheduled(r, keys)
    raw = orjson.loads(member)
    assert (raw["streamKey"], raw["priority"]) == (keys.stream(queue), queue)
    assert raw["backoff"] == '{"type":"fixed","delay":1000}'
    m = decode_scheduled(member, prefix)
    assert m.stream_key == keys.stream(queue)
    assert m.entry.backoff == Backoff.fixed(1)


@pytest.mark.parametrize(
    "tz", [dt.timezone.utc, dt.timezone(dt.timedelta(hours=5, minutes=30)), dt.timezone(dt.timedelta(hours=-8))]
)
def test_at_aware_datetime(client: Client, r: redis.Redis, keys: Keys, prefix: str, tz: dt.tzinfo) -> None:
    due = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).astimezone(tz)
    client.enqueue("t", 1, at=due, queue="reports")
    [(member, score)] = _scheduled(r, keys)
    assert score == round(due.timestamp() * 1000)
    assert decode_scheduled(member, prefix).stream_key == keys.stream("reports")


def test_at_epoch_seconds(client: Client, r: redis.Redis, keys: Keys, prefix: str) -> None:
    due = time.time() + 3600.25
    client.enqueue("t", 1, at=due)
    [(member, score)] = _scheduled(r, keys)
    assert score == round(due * 1000)
    assert decode_scheduled(member, prefix).stream_key == keys.stream("default")


@pytest.mark.parametrize("options", [{"delay": 0}, {"at": 1_000_000_000.0}, {"at": dt.datetime(2001, 1, 1, tzinfo=dt.timezone.utc)}])
def test_due_now_or_in_the_past_goes_straight_to_the_stream(
    client: Client, r: redis.Redis, keys: Keys, options: dict[str, Any]
) -> None:
    client.enqueue("t", 1, **options)
    assert r.xlen(keys.stream("default")) == 1
    assert r.zcard(keys.scheduled) == 0


def test_identical_delayed_jobs_in_the_same_ms_stay_two_members(client: Client, r: redis.Redis, keys: Keys) -> None:
    ids = client.enqueue_many([Job("t", {"same": True}, delay=30), Job("t", {"same": True}, delay=30)])
    assert len(set(ids)) == 2 and None not in ids
    members = _scheduled(r, keys)
    assert len(members) == 2
    assert members[0][1] == members[1][1]  # same score, still two members
    due = time.time() + 100
    client.enqueue("u", None, at=due)
    client.enqueue("u", None, at=due)
    assert r.zcount(keys.scheduled, round(due * 1000), round(due * 1000)) == 2


# -- dedupe -------------------------------------------------------------------------------

def test_dedupe_skips_the_second_job(client: Client, r: redis.Redis, keys: Keys) -> None:
    first = client.enqueue("order.process", {"id": 42}, dedupe_key="order-42")
    second = client.enqueue("order.process", {"id": 42}, dedupe_key="order-42")
    assert first is not None
    assert second is None
    assert r.xlen(keys.stream("default")) == 1
    assert _only_entry(r, keys.stream("default"))[b"jobId"] == first.encode()
    marker = keys.dedupe("order-42")
    assert r.get(marker) == b"1"  # same marker value as the Go SDK
    assert 3_599_000 <= r.pttl(marker) <= 3_600_000  # default dedupe_ttl: one hour
    # another key is another job
    assert client.enqueue("order.process", {"id": 43}, dedupe_key="order-43") is not None
    assert r.xlen(keys.stream("default")) == 2


def test_dedupe_ttl_per_call_and_per_client(client: Client, r: redis.Redis, keys: Keys, redis_url: str, prefix: str) -> None:
    client.enqueue("t", 1, dedupe_key="short", dedupe_ttl=30)
    assert 29_000 <= r.pttl(keys.dedupe("short")) <= 30_000
    client.enqueue("t", 1, dedupe_key="tiny", dedupe_ttl=0.0001)  # rounds up to 1 ms, never 0
    assert r.pttl(keys.dedupe("tiny")) in (-2, 0, 1)
    with Client(redis_url, prefix=prefix, dedupe_ttl=5) as c:
        c.enqueue("t", 1, dedupe_key="client-default")
    assert 4_000 <= r.pttl(keys.dedupe("client-default")) <= 5_000


def test_dedupe_works_for_delayed_jobs(client: Client, r: redis.Redis, keys: Keys) -> None:
    assert client.enqueue("t", 1, delay=60, dedupe_key="d", dedupe_ttl=120) is not None
    assert client.enqueue("t", 1, delay=60, dedupe_key="d") is None
    assert client.enqueue("t", 1, dedupe_key="d") is None  # the key is shared with immediate jobs
    assert r.zcard(keys.scheduled) == 1
    assert not r.exists(keys.stream("default"))
    assert 119_000 <= r.pttl(keys.dedupe("d")) <= 120_000


def test_dedupe_marker_expiry_allows_the_job_again(client: Client, r: redis.Redis, keys: Keys) -> None:
    assert client.enqueue("t", 1, dedupe_key="k") is not None
    r.delete(keys.dedupe("k"))  # as if the TTL ran out
    assert client.enqueue("t", 1, dedupe_key="k") is not None
    assert r.xlen(keys.stream("default")) == 2


def test_failed_enqueue_leaves_no_dedupe_marker(client: Client, r: redis.Redis, keys: Keys) -> None:
    r.set(keys.stream("default"), "x")
    with pytest.raises(BrokerError, match="WRONGTYPE") as info:
        client.enqueue("t", 1, dedupe_key="k")
    assert not isinstance(info.value, RedisUnavailable)
    assert not r.exists(keys.dedupe("k"))
    # and the job can be enqueued once the stream is usable again
    r.delete(keys.stream("default"))
    assert client.enqueue("t", 1, dedupe_key="k") is not None
    assert r.exists(keys.dedupe("k"))


def test_failed_delayed_enqueue_leaves_no_dedupe_marker(client: Client, r: redis.Redis, keys: Keys) -> None:
    r.set(keys.scheduled, "x")
    with pytest.raises(BrokerError, match="WRONGTYPE"):
        client.enqueue("t", 1, delay=5, dedupe_key="k")
    assert not r.exists(keys.dedupe("k"))


def test_failed_plain_enqueue_raises_broker_error(client: Client, r: redis.Redis, keys: Keys) -> None:
    r.set(keys.stream("default"), "x")
    with pytest.raises(BrokerError, match="WRONGTYPE"):
        client.enqueue("t", 1)
    assert r.get(keys.stream("default")) == b"x"


# -- enqueue_many ---------------------------------------------------------------------------

def test_enqueue_many_5000_in_order(client: Client, r: redis.Redis, keys: Keys) -> None:
    ids = client.enqueue_many(("bulk.item", {"i": i}) for i in range(5000))
    assert len(ids) == 5000
    assert None not in ids
    assert len(set(ids)) == 5000
    entries = _stream(r, keys.stream("default"))
    assert len(entries) == 5000
    assert [orjson.loads(f[b"payload"])["i"] for _, f in entries] == list(range(5000))
    assert [f[b"jobId"].decode() for _, f in entries] == ids
    assert all(f[b"taskName"] == b"bulk.item" for _, f in entries)
    assert all(isinstance(decode_entry(f), Entry) for _, f in entries[:: 499])


def test_enqueue_many_shared_options(client: Client, r: redis.Redis, keys: Keys) -> None:
    client.enqueue_many([("a", 1), ("b", 2), ("a", 3)], priority="urgent", attempts=2, backoff=1, timeout=9)
    entries = _stream(r, keys.stream("urgent"))
    assert [(f[b"taskName"], f[b"payload"]) for _, f in entries] == [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")]
    for _, f in entries:
        assert (f[b"attempts"], f[b"timeout"]) == (b"2", b"9000")
        assert orjson.loads(f[b"backoff"]) == {"type": "fixed", "delay": 1000}


def test_enqueue_many_shared_delay(client: Client, r: redis.Redis, keys: Keys, prefix: str) -> None:
    ids = client.enqueue_many([("a", 1), ("a", 2)], delay=30, queue="reports")
    members = _scheduled(r, keys)
    assert len(members) == 2
    assert {decode_scheduled(m, prefix).entry.job_id for m, _ in members} == set(ids)
    assert all(decode_scheduled(m, prefix).stream_key == keys.stream("reports") for m, _ in members)


def test_enqueue_many_jobs_with_mixed_options(client: Client, r: redis.Redis, keys: Keys, prefix: str) -> None:
    ids = client.enqueue_many([
        Job("later", 1, delay=60),
        Job("once", 2, dedupe_key="k1"),
        Job("report", 3, queue="reports", attempts=4),
        Job("once", 4, dedupe_key="k1"),  # same key in the same batch
        ("plain", 5),
        Job("fast", 6, priority="urgent", timeout=1.5),
    ])
    assert len(ids) == 6
    assert ids[3] is None
    assert all(i is not None for k, i in enumerate(ids) if k != 3)
    [(member, _)] = _scheduled(r, keys)
    assert decode_scheduled(member, prefix).entry.job_id == ids[0]
    default = [f for _, f in _stream(r, keys.stream("default"))]
    assert [(f[b"taskName"], f[b"jobId"].decode()) for f in default] == [(b"once", ids[1]), (b"plain", ids[4])]
    report = _only_entry(r, keys.stream("reports"))
    assert (report[b"jobId"].decode(), report[b"attempts"]) == (ids[2], b"4")
    fast = _only_entry(r, keys.stream("urgent"))
    assert (fast[b"jobId"].decode(), fast[b"timeout"]) == (ids[5], b"1500")
    assert r.exists(keys.dedupe("k1"))


def test_enqueue_many_invalid_item_writes_nothing(client: Client, r: redis.Redis, keys: Keys, prefix: str) -> None:
    client.enqueue("seed", 0)
    before = _prefix_keys(r, prefix)
    with pytest.raises(PayloadError, match="set"):
        client.enqueue_many([("t", 1), ("t", 2), ("t", {1, 2}), ("t", 4)])
    with pytest.raises(InvalidJobError, match="queue"):
        client.enqueue_many([Job("t", 1, dedupe_key="x"), Job("t", 2, queue="bad queue")])
    with pytest.raises(InvalidJobError, match="Job"):
        client.enqueue_many([("t", 1), "not a job"])  # type: ignore[list-item]
    assert r.xlen(keys.stream("default")) == 1
    assert _prefix_keys(r, prefix) == before  # in particular no dedupe marker for "x"


def test_enqueue_many_empty(client: Client) -> None:
    assert client.enqueue_many([]) == []
    assert client.enqueue_many(iter(())) == []


def test_enqueue_many_empty_needs_no_redis() -> None:
    c = Client(f"redis://127.0.0.1:{free_port()}/0")
    try:
        assert c.enqueue_many([]) == []
    finally:
        c.close()


# -- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize("payload,where", [
    (math.nan, "payload=nan"), ({"a": [1, math.inf]}, "payload['a'][1]=inf"),
    ([{"x": -math.inf}], "payload[0]['x']=-inf"),
])
def test_nan_and_infinity_are_refused(client: Client, r: redis.Redis, prefix: str, payload: Any, where: str) -> None:
    with pytest.raises(PayloadError, match=re.escape(where)):
        client.enqueue("order.process", payload)
    with pytest.raises(PayloadError, match="finite"):
        client.enqueue_many([("order.process", 1), ("order.process", payload)])
    with pytest.raises(PayloadError, match="finite"):
        client.broadcast("cache.clear", payload)
    assert client.enqueue("order.process", {"n": None, "s": "null"})  # a real null is fine
    assert _prefix_keys(r, prefix) == {f"{prefix}:default".encode()}


def test_oversize_payload_is_refused_before_writing(redis_url: str, r: redis.Redis, prefix: str) -> None:
    big = "x" * (16 * 1024 * 1024)  # its JSON (with the quotes) passes the workers' 16 MiB default
    with Client(redis_url, prefix=prefix) as c:
        with pytest.raises(PayloadError, match=r"16777218 bytes.*16777216-byte limit.*max_payload_bytes"):
            c.enqueue("blob.store", big)
        with pytest.raises(PayloadError, match="limit"):
            c.enqueue_many([("blob.store", 1), ("blob.store", big)])
    with Client(redis_url, prefix=prefix, max_payload_bytes=10) as small:
        assert small.enqueue("blob.store", "12345678")  # 10 bytes of JSON
        with pytest.raises(PayloadError, match="11 bytes"):
            small.enqueue("blob.store", "123456789")
    assert r.xlen(f"{prefix}:default") == 1
    with pytest.raises(ConfigError, match="max_payload_bytes"):
        Client(redis_url, max_payload_bytes=0)
    app = Backstage(redis_url, prefix=prefix, max_payload_bytes=5)
    with pytest.raises(PayloadError, match="5-byte limit"):
        app.enqueue("blob.store", "123456")
    app.client.close()


def test_control_of_an_unknown_worker_names_the_live_ones(client: Client, r: redis.Redis, keys: Keys) -> None:
    r.zadd(f"{keys.prefix}:workers", {"host-1": now_ms() + 60_000, "host-2": now_ms() + 60_000})
    with pytest.raises(InvalidJobError, match=r"no live worker named 'host-1234'; live workers: host-1, host-2"):
        client.control("ping", target="host-1234")
    r.delete(f"{keys.prefix}:workers")
    with pytest.raises(InvalidJobError, match="live workers: none"):
        client.control("ping", target="host-1")


@pytest.mark.parametrize(
    ("payload", "type_name"),
    [({1, 2}, "set"), (object(), "object"), ({"nested": {"deep": {3}}}, "set"), (2**70, "int"), (b"raw", "bytes")],
)
def test_unserializable_payload(client: Client, r: redis.Redis, prefix: str, payload: Any, type_name: str) -> None:
    with pytest.raises(PayloadError) as info:
        client.enqueue("order.process", payload)
    message = str(info.value)
    assert "order.process" in message
    assert type_name in message
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, InvalidJobError)
    assert isinstance(info.value, BackstageError)
    assert _prefix_keys(r, prefix) == set()


NAIVE = dt.datetime(2030, 1, 1, 12, 0)


@pytest.mark.parametrize(
    ("args", "options", "words"),
    [
        (("t", 1), {"priority": "high"}, ("priority", "high")),
        (("t", 1), {"priority": "reports"}, ("priority", "queue=")),
        (("t", 1), {"priority": "urgent", "queue": "low"}, ("priority", "queue")),
        (("t", 1), {"queue": "a:b"}, ("queue", "a:b")),
        (("t", 1), {"queue": "a b"}, ("queue", "a b")),
        (("t", 1), {"queue": ""}, ("queue",)),
        (("t", 1), {"queue": 5}, ("queue",)),
        (("t", 1), {"queue": "scheduled"}, ("scheduled", "reserved")),
        (("t", 1), {"queue": "dedupe"}, ("dedupe", "reserved")),
        (("t", 1), {"delay": -1}, ("delay", ">= 0")),
        (("t", 1), {"delay": float("nan")}, ("delay", "finite")),
        (("t", 1), {"delay": float("inf")}, ("delay", "finite")),
        (("t", 1), {"delay": "5"}, ("delay",)),
        (("t", 1), {"delay": 5, "at": time.time() + 5}, ("delay", "at")),
        (("t", 1), {"at": NAIVE}, ("naive", "tzinfo")),
        (("t", 1), {"at": -5.0}, ("at",)),
        (("t", 1), {"at": "tomorrow"}, ("at",)),
        (("t", 1), {"backoff": "5"}, ("backoff", "Backoff.fixed")),
        (("t", 1), {"backoff": -1}, ("backoff",)),
        (("t", 1), {"backoff": True}, ("backoff",)),
        (("t", 1), {"attempts": 0}, ("attempts", ">= 1")),
        (("t", 1), {"attempts": 1.5}, ("attempts",)),
        (("t", 1), {"attempts": True}, ("attempts",)),
        (("t", 1), {"timeout": 0}, ("timeout", "> 0")),
        (("t", 1), {"timeout": -3}, ("timeout",)),
        (("t", 1), {"dedupe_ttl": 10}, ("dedupe_ttl", "dedupe_key")),
        (("t", 1), {"dedupe_key": ""}, ("dedupe_key",)),
        (("t", 1), {"dedupe_key": "k", "dedupe_ttl": 0}, ("dedupe_ttl",)),
        (("", 1), {}, ("task name",)),
        ((None, 1), {}, ("task name",)),
    ],
)
def test_bad_enqueue_arguments(
    client: Client, r: redis.Redis, prefix: str, args: tuple[Any, ...], options: dict[str, Any], words: tuple[str, ...]
) -> None:
    with pytest.raises(InvalidJobError) as info:
        client.enqueue(*args, **options)
    assert isinstance(info.value, ValueError)
    assert not isinstance(info.value, PayloadError)
    for word in words:
        assert word in str(info.value)
    assert _prefix_keys(r, prefix) == set()  # nothing written


@pytest.mark.parametrize("option", ["dedupe_key", "retries"])
def test_enqueue_many_unknown_option(client: Client, r: redis.Redis, prefix: str, option: str) -> None:
    with pytest.raises(InvalidJobError, match=option):
        client.enqueue_many([("t", 1)], **{option: "x"})
    assert _prefix_keys(r, prefix) == set()


def test_client_rejects_bad_dedupe_ttl(redis_url: str) -> None:
    with pytest.raises(ValueError, match="dedupe_ttl"):
        Client(redis_url, dedupe_ttl=0)


# -- Redis unreachable, too old, restarted -------------------------------------------------------

def test_unreachable_redis_names_host_port_not_password() -> None:
    port = free_port()
    c = Client(f"redis://:s3cret@127.0.0.1:{port}/0")
    try:
        for call in (lambda: c.enqueue("t", 1), lambda: c.enqueue_many([("t", 1)]), lambda: c.broadcast("t"), c.ping):
            with pytest.raises(RedisUnavailable) as info:
                call()
            assert isinstance(info.value, ConnectionError)
            assert isinstance(info.value, BrokerError)
            assert f"127.0.0.1:{port}" in str(info.value)
            shown = "".join(traceback.format_exception(info.value))
            assert "s3cret" not in shown
            assert "s3cret" not in repr(info.value)
    finally:
        c.close()


def test_unix_socket_url_is_named_by_path() -> None:
    c = Client("unix:///nonexistent/dir/redis.sock")
    try:
        with pytest.raises(RedisUnavailable, match="/nonexistent/dir/redis.sock"):
            c.enqueue("t", 1)
    finally:
        c.close()


@pytest.mark.parametrize(
    "info", [{"redis_version": "6.0.16"}, {b"redis_version": b"6.0.16"}, {"redis_version": "5.0.7"}, {}]
)
def test_version_gate_rejects_old_redis(info: dict[Any, Any]) -> None:
    with pytest.raises(RedisVersionError) as exc:
        redis_conn.check_version(info, "db.example:6379")
    assert "6.2" in str(exc.value)
    assert "db.example:6379" in str(exc.value)
    assert isinstance(exc.value, BrokerError)
    if info:
        assert "6.0.16" in str(exc.value) or "5.0.7" in str(exc.value)


@pytest.mark.parametrize("version", ["6.2.0", "6.2.14", "7.0.15", "7.4.0-rc1", "10.0.0"])
def test_version_gate_accepts_6_2_and_newer(version: str) -> None:
    assert redis_conn.check_version({"redis_version": version}, "h:1") >= (6, 2, 0)


def test_version_gate_accepts_the_real_server(r: redis.Redis) -> None:
    info = r.info("server")
    assert redis_conn.check_version(info, "here") >= (6, 2, 0)


def test_noscript_recovery_after_script_flush(client: Client, r: redis.Redis, keys: Keys) -> None:
    assert client.enqueue("t", 1, dedupe_key="a") is not None
    r.script_flush()
    assert client.enqueue("t", 2, dedupe_key="b") is not None
    assert r.exists(keys.dedupe("b"))
    assert client.enqueue("t", 3, dedupe_key="b") is None  # the reloaded script still dedupes
    r.script_flush()
    ids = client.enqueue_many([Job("t", 4, dedupe_key="c"), Job("t", 5, dedupe_key="c"), Job("t", 6, dedupe_key="e")])
    assert ids[0] is not None and ids[1] is None and ids[2] is not None
    assert [f[b"payload"] for _, f in _stream(r, keys.stream("default"))] == [b"1", b"2", b"4", b"6"]


def test_enqueue_survives_a_redis_restart(aof_server: RedisServer, prefix: str) -> None:
    keys = Keys(prefix)
    c = Client(aof_server.url, prefix=prefix)
    try:
        assert c.enqueue("t", 1, dedupe_key="before") is not None
        aof_server.restart()  # kill -9; AOF brings the data back, the script cache is empty
        assert c.enqueue("t", 2, dedupe_key="after") is not None
        assert c.enqueue("t", 3, dedupe_key="before") is None
        r = aof_server.client()
        try:
            assert [f[b"payload"] for _, f in r.xrange(keys.stream("default"))] == [b"1", b"2"]
            assert r.exists(keys.dedupe("before"), keys.dedupe("after")) == 2
        finally:
            r.close()
    finally:
        c.close()


def test_client_accepts_an_existing_redis(r: redis.Redis, keys: Keys, redis_server: RedisServer, prefix: str) -> None:
    c = Client(redis=redis_server.client(), prefix=prefix)
    try:
        assert c.where == f"127.0.0.1:{redis_server.port}"
        job_id = c.enqueue("t", 1, dedupe_key="k")
        assert _only_entry(r, keys.stream("default"))[b"jobId"] == job_id.encode()  # type: ignore[union-attr]
    finally:
        c.close()


# -- broadcast ----------------------------------------------------------------------------------

def test_broadcast_writes_the_three_fields(client: Client, r: redis.Redis, keys: Keys, prefix: str) -> None:
    before = now_ms()
    sid = client.broadcast("cache.clear", {"scope": "all"})
    after = now_ms()
    [(entry_id, fields)] = _stream(r, keys.broadcast)
    assert entry_id.decode() == sid
    assert set(fields) == {b"taskName", b"payload", b"enqueuedAt"}
    assert fields[b"taskName"] == b"cache.clear"
    assert fields[b"payload"] == b'{"scope":"all"}'
    assert before <= int(fields[b"enqueuedAt"]) <= after
    assert _entry(fields).task == "cache.clear"
    assert _prefix_keys(r, prefix) == {keys.broadcast.encode()}


def test_broadcast_bad_input(client: Client, r: redis.Redis, prefix: str) -> None:
    with pytest.raises(PayloadError, match="cache.clear"):
        client.broadcast("cache.clear", {1})
    with pytest.raises(InvalidJobError, match="task name"):
        client.broadcast("")
    assert _prefix_keys(r, prefix) == set()


# -- AsyncClient --------------------------------------------------------------------------------

@pytest.fixture
def run_async(redis_url: str, prefix: str) -> Iterator[Any]:
    """Run ``body(client)`` with a fresh AsyncClient on this test's prefix."""

    def run(body: Any, url: str | None = None) -> Any:
        async def main() -> Any:
            c = AsyncClient(url or redis_url, prefix=prefix)
            try:
                return await body(c)
            finally:
                await c.aclose()

        return asyncio.run(main())

    yield run


def test_async_enqueue(run_async: Any, r: redis.Redis, keys: Keys) -> None:
    async def body(c: AsyncClient) -> Any:
        return await c.enqueue("order.process", {"id": 1}, priority="urgent", attempts=2, timeout=3)

    job_id = run_async(body)
    fields = _only_entry(r, keys.stream("urgent"))
    assert fields[b"jobId"].decode() == job_id
    e = _entry(fields)
    assert (e.task, e.payload_value(), e.attempts, e.timeout_ms) == ("order.process", {"id": 1}, 2, 3000)


def test_async_delayed_and_dedupe(run_async: Any, r: redis.Redis, keys: Keys, prefix: str) -> None:
    async def body(c: AsyncClient) -> Any:
        first = await c.enqueue("t", 1, delay=60, dedupe_key="k", queue="reports")
        second = await c.enqueue("t", 1, delay=60, dedupe_key="k", queue="reports")
        return first, second

    before = now_ms()
    first, second = run_async(body)
    after = now_ms()
    assert first is not None and second is None
    [(member, score)] = _scheduled(r, keys)
    assert before + 60_000 <= score <= after + 60_000
    m = decode_scheduled(member, prefix)
    assert (m.stream_key, m.entry.job_id) == (keys.stream("reports"), first)
    assert r.exists(keys.dedupe("k"))


def test_async_enqueue_many_and_broadcast(run_async: Any, r: redis.Redis, keys: Keys) -> None:
    async def body(c: AsyncClient) -> Any:
        ids = await c.enqueue_many([("t", i) for i in range(2500)] + [Job("t", "x", dedupe_key="d"), Job("t", "y", dedupe_key="d")])
        empty = await c.enqueue_many([])
        sid = await c.broadcast("cache.clear", None)
        return ids, empty, sid

    ids, empty, sid = run_async(body)
    assert empty == []
    assert len(ids) == 2502 and ids[-1] is None and None not in ids[:-1]
    entries = _stream(r, keys.stream("default"))
    assert [f[b"jobId"].decode() for _, f in entries] == ids[:-1]
    [(bid, bfields)] = _stream(r, keys.broadcast)
    assert bid.decode() == sid
    assert (bfields[b"taskName"], bfields[b"payload"]) == (b"cache.clear", b"null")


def test_async_noscript_recovery(run_async: Any, r: redis.Redis, keys: Keys) -> None:
    async def body(c: AsyncClient) -> Any:
        await c.enqueue("t", 1, dedupe_key="a")
        r.script_flush()
        return await c.enqueue("t", 2, dedupe_key="b")

    assert run_async(body) is not None
    assert r.xlen(keys.stream("default")) == 2


def test_async_bad_input_raises_before_redis(run_async: Any, r: redis.Redis, prefix: str) -> None:
    async def body(c: AsyncClient) -> Any:
        with pytest.raises(PayloadError, match="set"):
            await c.enqueue("t", {1})
        with pytest.raises(InvalidJobError, match="priority"):
            await c.enqueue("t", 1, priority="high")
        with pytest.raises(InvalidJobError, match="retries"):
            await c.enqueue_many([("t", 1)], retries=2)
        return True

    assert run_async(body)
    assert _prefix_keys(r, prefix) == set()


def test_async_unreachable_redis(run_async: Any) -> None:
    port = free_port()

    async def body(c: AsyncClient) -> Any:
        errors = []
        for call in (lambda: c.enqueue("t", 1), lambda: c.broadcast("t"), lambda: c.enqueue_many([("t", 1)]), c.ping):
            with pytest.raises(RedisUnavailable) as info:
                await call()
            errors.append(info.value)
        return errors

    errors = run_async(body, f"redis://:s3cret@127.0.0.1:{port}/0")
    assert len(errors) == 4
    for exc in errors:
        assert isinstance(exc, ConnectionError)
        assert f"127.0.0.1:{port}" in str(exc)
        assert "s3cret" not in "".join(traceback.format_exception(exc))


def test_async_context_manager_closes(redis_url: str, prefix: str, r: redis.Redis, keys: Keys) -> None:
    async def main() -> Any:
        async with AsyncClient(redis_url, prefix=prefix) as c:
            return await c.enqueue("t", math.pi)

    job_id = asyncio.run(main())
    assert _only_entry(r, keys.stream("default"))[b"jobId"].decode() == job_id


def test_async_client_has_workers_control_and_close(redis_url: str, prefix: str, r: redis.Redis, keys: Keys) -> None:
    # a fake live master: presence entry, answers nobody (the real one is in test_housekeeping)
    r.zadd(f"{keys.prefix}:workers", {"m-1": now_ms() + 60_000})
    r.set(keys.worker("m-1"), orjson.dumps({"consumer": "m-1", "busy": 0}))

    async def main() -> Any:
        c = AsyncClient(redis_url, prefix=prefix)
        workers = await c.workers()
        with pytest.raises(InvalidJobError, match="live workers: m-1"):
            await c.control("ping", target="nobody")
        with pytest.raises(InvalidJobError, match="control command"):
            await c.control("reboot")
        answers = await c.control("pause", "low", timeout=0.05)
        await c.close()  # the same as aclose(), for symmetry with Client.close()
        return workers, answers

    workers, answers = asyncio.run(main())
    assert workers == [{"consumer": "m-1", "busy": 0}]
    assert answers == []  # no real master to answer
    assert r.smembers(f"{keys.prefix}:workers:paused") == {b"low"}
    assert [f[b"taskName"] for _, f in r.xrange(keys.broadcast)] == [b"backstage.control"]
    assert set(dir(AsyncClient)) >= {"workers", "control", "close", "aclose", "status", "result"}
