"""The Backstage app object: task registry, task defaults on enqueue,
settings, Next(...), and the public surface of the package."""

from __future__ import annotations

import asyncio
import builtins
import importlib
import inspect
import types
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
import redis

import backstage
from backstage import (
    AppNotFound,
    Backoff,
    Backstage,
    BackstageError,
    BrokerError,
    ConfigError,
    InvalidJobError,
    Job,
    Next,
    PayloadError,
    RedisUnavailable,
    RedisVersionError,
    Reject,
    Retry,
    Task,
    TaskNotFound,
    WireError,
)
from backstage.protocol.keys import Keys
from backstage.protocol.wire import Entry, decode_entry, decode_scheduled


@pytest.fixture
def app(redis_url: str, prefix: str) -> Iterator[Backstage]:
    a = Backstage(redis_url, prefix=prefix)
    yield a
    a.client.close()


def _entries(r: redis.Redis, key: str) -> list[dict[bytes, bytes]]:
    return [f for _, f in r.xrange(key)]


def _only(r: redis.Redis, key: str) -> dict[bytes, bytes]:
    entries = _entries(r, key)
    assert len(entries) == 1, entries
    return entries[0]


# -- registry ----------------------------------------------------------------------------

def test_task_with_options_registers_a_task(app: Backstage) -> None:
    backoff = Backoff.exponential(2, max=60)

    @app.task("order.process", timeout=30, attempts=3, backoff=backoff, queue="reports")
    def process(payload: dict[str, int]) -> int:
        return payload["id"] * 2

    assert isinstance(process, Task)
    assert app.tasks == {"order.process": process}
    assert process.name == "order.process"
    assert (process.timeout, process.attempts, process.backoff, process.queue) == (30, 3, backoff, "reports")
    assert process.app is app
    assert process.is_async is False
    assert process({"id": 21}) == 42  # calling the Task calls the function
    assert process.func.__name__ == "process"


def test_bare_task_is_named_module_dot_qualname(app: Backstage) -> None:
    @app.task
    def handle(payload: Any) -> Any:
        return ("handled", payload)

    expected = f"{__name__}.test_bare_task_is_named_module_dot_qualname.<locals>.handle"
    assert isinstance(handle, Task)
    assert handle.name == expected
    assert app.tasks[expected] is handle
    assert (handle.queue, handle.timeout, handle.attempts, handle.backoff) == (None, None, None, None)
    assert handle(5) == ("handled", 5)


def test_task_without_name_in_parentheses(app: Backstage) -> None:
    @app.task(attempts=2)
    def work(payload: Any) -> None:
        return None

    assert work.name.endswith(".<locals>.work")
    assert work.name.startswith(__name__ + ".")
    assert work.attempts == 2


def test_priority_is_the_default_queue(app: Backstage, r: redis.Redis, keys: Keys) -> None:
    @app.task("ping", priority="urgent")
    def ping(payload: Any) -> None:
        return None

    assert ping.queue == "urgent"
    app.enqueue("ping")
    assert _only(r, keys.stream("urgent"))[b"taskName"] == b"ping"


def test_async_def_is_detected_and_runs(app: Backstage) -> None:
    @app.task("async.work")
    async def work(payload: int) -> int:
        await asyncio.sleep(0)
        return payload + 1

    @app.task("sync.work")
    def sync(payload: int) -> int:
        return payload - 1

    assert work.is_async is True
    assert sync.is_async is False
    coro = work(1)
    assert inspect.iscoroutine(coro)
    assert asyncio.run(coro) == 2
    assert sync(10) == 9


def test_registering_the_same_function_twice_is_harmless(app: Backstage) -> None:
    def f(payload: Any) -> None:
        return None

    first = app.task("same")(f)
    second = app.task("same")(f)
    assert app.tasks["same"] is second
    assert first.func is second.func


def test_registering_another_function_under_the_same_name_fails(app: Backstage) -> None:
    @app.task("dup.name")
    def first(payload: Any) -> None:
        return None

    with pytest.raises(ConfigError, match="dup.name") as info:
        @app.task("dup.name")
        def second(payload: Any) -> None:
            return None

    assert "twice" in str(info.value)
    assert app.tasks["dup.name"] is first


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"timeout": 0}, ("timeout",)),
        ({"timeout": -1}, ("timeout",)),
        ({"timeout": "30"}, ("timeout",)),
        ({"timeout": True}, ("timeout",)),
        ({"attempts": 0}, ("attempts",)),
        ({"attempts": 2.5}, ("attempts",)),
        ({"attempts": True}, ("attempts",)),
        ({"priority": "urgent", "queue": "reports"}, ("priority", "queue")),
        ({"queue": "a:b"}, ("queue", "a:b")),
        ({"queue": "has space"}, ("queue",)),
        ({"queue": "scheduled"}, ("scheduled", "reserved")),
        ({"priority": "high"}, ("priority", "high")),
        ({"backoff": 5}, ("backoff", "Backoff")),
        ({"backoff": "fixed"}, ("backoff",)),
    ],
)
def test_bad_task_options_raise_config_error(app: Backstage, options: dict[str, Any], words: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as info:
        app.task("bad.options", **options)
    assert isinstance(info.value, ValueError)
    for word in words:
        assert word in str(info.value)
    assert "bad.options" not in app.tasks


@pytest.mark.parametrize("name", ["", 123])
def test_bad_task_name(app: Backstage, name: Any) -> None:
    with pytest.raises(ConfigError, match="name"):
        app.task(name)(lambda payload: None)
    assert app.tasks == {}


def test_decorating_a_non_callable_fails(app: Backstage) -> None:
    with pytest.raises(ConfigError, match="not callable"):
        app.task("x")(42)  # type: ignore[arg-type]


# -- enqueue with task defaults ---------------------------------------------------------------

@pytest.fixture
def report(app: Backstage) -> Task:
    @app.task("report.build", queue="reports", attempts=3, backoff=Backoff.exponential(1, max=10), timeout=30)
    def build(payload: Any) -> None:
        return None

    return build


def test_enqueue_applies_task_defaults(app: Backstage, report: Task, r: redis.Redis, keys: Keys, prefix: str) -> None:
    job_id = app.enqueue("report.build", {"kind": "daily"})
    fields = _only(r, keys.stream("reports"))
    assert fields[b"jobId"].decode() == job_id
    assert fields[b"attempts"] == b"3"
    assert fields[b"timeout"] == b"30000"
    assert orjson.loads(fields[b"backoff"]) == {"type": "exponential", "delay": 1000, "maxDelay": 10000}
    assert set(r.keys(f"{prefix}:*")) == {keys.stream("reports").encode()}


def test_per_call_options_override_task_defaults(app: Backstage, report: Task, r: redis.Redis, keys: Keys) -> None:
    app.enqueue("report.build", 1, queue="other", attempts=1, backoff=Backoff.fixed(5), timeout=2)
    fields = _only(r, keys.stream("other"))
    assert (fields[b"attempts"], fields[b"timeout"]) == (b"1", b"2000")
    assert orjson.loads(fields[b"backoff"]) == {"type": "fixed", "delay": 5000}
    app.enqueue("report.build", 2, priority="urgent")
    urgent = _only(r, keys.stream("urgent"))
    assert urgent[b"attempts"] == b"3"  # the other defaults still apply
    assert r.xlen(keys.stream("reports")) == 0


def test_task_enqueue(app: Backstage, report: Task, r: redis.Redis, keys: Keys, prefix: str) -> None:
    job_id = report.enqueue({"kind": "weekly"})
    fields = _only(r, keys.stream("reports"))
    assert fields[b"jobId"].decode() == job_id
    assert fields[b"payload"] == b'{"kind":"weekly"}'
    later = report.enqueue(None, delay=60)
    [member] = r.zrange(keys.scheduled, 0, -1)
    m = decode_scheduled(member, prefix)
    assert (m.stream_key, m.entry.job_id, m.entry.attempts, m.entry.timeout_ms) == (keys.stream("reports"), later, 3, 30000)
    assert m.entry.backoff == Backoff.exponential(1, max=10)


def test_task_enqueue_dedupe(app: Backstage, report: Task, r: redis.Redis, keys: Keys) -> None:
    assert report.enqueue(1, dedupe_key="daily") is not None
    assert report.enqueue(1, dedupe_key="daily") is None
    assert r.xlen(keys.stream("reports")) == 1


def test_task_without_app_cannot_enqueue() -> None:
    t = Task("orphan", lambda payload: None)
    with pytest.raises(ConfigError, match="orphan"):
        t.enqueue(1)


def test_unknown_task_is_refused_with_a_hint(app: Backstage, report: Task, r: redis.Redis, prefix: str) -> None:
    with pytest.raises(InvalidJobError, match=r"'report.biuld' is not registered.*did you mean 'report.build'.*"
                                              r"external_tasks"):
        app.enqueue("report.biuld", 1)
    with pytest.raises(InvalidJobError, match="nobody.knows"):
        app.enqueue_many([("report.build", 1), ("nobody.knows", 2)])

    async def main() -> None:
        c = app.async_client()
        try:
            with pytest.raises(InvalidJobError, match="nobody.knows"):
                await c.enqueue("nobody.knows", 1)
        finally:
            await c.aclose()

    asyncio.run(main())
    assert r.keys(f"{prefix}:*") == []  # nothing was written


def test_an_app_without_tasks_enqueues_any_name(redis_url: str, prefix: str, r: redis.Redis, keys: Keys) -> None:
    producer = Backstage(redis_url, prefix=prefix)  # a pure producer cannot know who serves what
    assert producer.enqueue("served.elsewhere", 1)
    assert r.xlen(keys.stream("default")) == 1
    producer.client.close()


def test_external_tasks_allow_names_served_elsewhere(redis_url: str, prefix: str, r: redis.Redis, keys: Keys) -> None:
    app = Backstage(redis_url, prefix=prefix, external_tasks=["go.*", "email.send"])
    app.task("local")(lambda p: None)
    assert app.enqueue("go.resize", 1) and app.enqueue("email.send", 2) and app.enqueue("local", 3)
    with pytest.raises(InvalidJobError, match="email.sned"):
        app.enqueue("email.sned", 4)
    anything = Backstage(redis_url, prefix=prefix, external_tasks=True)
    anything.task("local")(lambda p: None)
    assert anything.enqueue("whatever", 5)
    assert r.xlen(keys.stream("default")) == 4
    with pytest.raises(ConfigError, match="external_tasks"):
        Backstage(redis_url, external_tasks="go.*")
    app.client.close()
    anything.client.close()


def test_unknown_task_enqueues_with_no_defaults(app: Backstage, report: Task, r: redis.Redis, keys: Keys) -> None:
    app.external_tasks = ("nobody.knows", "other.task")
    job_id = app.enqueue("nobody.knows", [1])
    fields = _only(r, keys.stream("default"))
    assert set(fields) == {b"taskName", b"payload", b"enqueuedAt", b"jobId"}
    e = decode_entry(fields)
    assert isinstance(e, Entry)
    assert (e.task, e.job_id, e.attempts, e.backoff, e.timeout_ms) == ("nobody.knows", job_id, None, None, None)


def test_enqueue_many_applies_task_defaults(app: Backstage, report: Task, r: redis.Redis, keys: Keys) -> None:
    app.external_tasks = ("other.task",)
    ids = app.enqueue_many([("report.build", 1), ("other.task", 2), Job("report.build", 3, attempts=9)])
    assert None not in ids
    reports = _entries(r, keys.stream("reports"))
    assert [(f[b"payload"], f[b"attempts"]) for f in reports] == [(b"1", b"3"), (b"3", b"9")]
    other = _only(r, keys.stream("default"))
    assert b"attempts" not in other


def test_app_broadcast(app: Backstage, r: redis.Redis, keys: Keys) -> None:
    sid = app.broadcast("cache.clear", {"scope": "all"})
    [(entry_id, fields)] = r.xrange(keys.broadcast)
    assert entry_id.decode() == sid
    assert (fields[b"taskName"], fields[b"payload"]) == (b"cache.clear", b'{"scope":"all"}')


def test_app_async_client_applies_task_defaults(app: Backstage, report: Task, r: redis.Redis, keys: Keys) -> None:
    async def main() -> Any:
        c = app.async_client()
        try:
            return await c.enqueue("report.build", 1)
        finally:
            await c.aclose()

    job_id = asyncio.run(main())
    fields = _only(r, keys.stream("reports"))
    assert (fields[b"jobId"].decode(), fields[b"attempts"]) == (job_id, b"3")


def test_app_enqueue_errors_are_the_clients(app: Backstage, report: Task, r: redis.Redis, prefix: str) -> None:
    with pytest.raises(PayloadError, match="report.build"):
        app.enqueue("report.build", {1, 2})
    with pytest.raises(InvalidJobError, match="attempts"):
        report.enqueue(1, attempts=0)
    assert r.keys(f"{prefix}:*") == []


def test_app_client_is_made_once_and_remade_after_fork(app: Backstage) -> None:
    c = app.client
    assert app.client is c
    assert c.keys.prefix == app.prefix
    app._after_fork()
    assert app.client is not c
    c.close()


# -- settings -----------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["nope", "", "localhost:6379"])
def test_bad_redis_url(url: str) -> None:
    with pytest.raises(ConfigError, match="redis_url"):
        Backstage(redis_url=url)


def test_bad_prefix_and_group(redis_url: str) -> None:
    with pytest.raises(ConfigError, match="prefix"):
        Backstage(redis_url, prefix="")
    with pytest.raises(ConfigError, match="prefix"):
        Backstage(redis_url, prefix="has space")
    with pytest.raises(ConfigError, match="group"):
        Backstage(redis_url, group="")


def test_settings_are_kept(redis_url: str) -> None:
    a = Backstage(redis_url, prefix="myapp", group="my-workers", name="shop")
    assert (a.redis_url, a.prefix, a.group, a.name) == (redis_url, "myapp", "my-workers", "shop")
    assert a.keys.stream("default") == "myapp:default"


def test_defaults_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("BACKSTAGE_REDIS_URL", raising=False)
    a = Backstage()
    assert a.redis_url == "redis://localhost:6379/0"
    assert (a.prefix, a.group) == ("backstage", "backstage-workers")


def test_redis_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BACKSTAGE_REDIS_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://from-redis-url:6380/1")
    a = Backstage()
    assert a.redis_url == "redis://from-redis-url:6380/1"
    assert a.client.where == "from-redis-url:6380"  # no connection is made to find this out
    a.client.close()

    monkeypatch.setenv("BACKSTAGE_REDIS_URL", "redis://from-backstage:6381/2")
    assert Backstage().redis_url == "redis://from-backstage:6381/2"  # BACKSTAGE_REDIS_URL wins
    assert Backstage("redis://explicit:1/0").redis_url == "redis://explicit:1/0"  # an argument beats both

    monkeypatch.setenv("BACKSTAGE_REDIS_URL", "nope")
    with pytest.raises(ConfigError, match="redis_url"):
        Backstage()


def test_unreachable_app_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    from .redis_server import free_port

    port = free_port()
    monkeypatch.setenv("BACKSTAGE_REDIS_URL", f"redis://:pw-do-not-show@127.0.0.1:{port}/0")
    a = Backstage()
    try:
        with pytest.raises(RedisUnavailable) as info:
            a.enqueue("t")
        assert f"127.0.0.1:{port}" in str(info.value)
        assert "pw-do-not-show" not in str(info.value)
    finally:
        a.client.close()


# -- Next ----------------------------------------------------------------------------------------

def test_next_fields() -> None:
    n = Next("invoice.send", {"order": 1}, delay=5, queue="reports")
    assert (n.task, n.payload, n.delay, n.queue) == ("invoice.send", {"order": 1}, 5, "reports")
    assert Next("t") == Next("t", None, 0.0, None)
    with pytest.raises(AttributeError):
        n.task = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("args", "kwargs", "words"),
    [
        (("",), {}, ("task",)),
        ((None,), {}, ("task",)),
        (("t",), {"delay": -1}, ("delay",)),
        (("t",), {"delay": float("nan")}, ("delay",)),
        (("t",), {"delay": "5"}, ("delay",)),
        (("t",), {"delay": True}, ("delay",)),
        (("t",), {"queue": "a:b"}, ("queue", "a:b")),
        (("t",), {"queue": "a b"}, ("queue",)),
        (("t",), {"queue": "broadcast"}, ("broadcast", "reserved")),
    ],
)
def test_next_validation(args: tuple[Any, ...], kwargs: dict[str, Any], words: tuple[str, ...]) -> None:
    with pytest.raises(InvalidJobError) as info:
        Next(*args, **kwargs)
    assert isinstance(info.value, ValueError)
    for word in words:
        assert word in str(info.value)


# -- public surface --------------------------------------------------------------------------------

def test_all_is_exactly_the_public_names() -> None:
    public = {
        name for name, value in vars(backstage).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert len(backstage.__all__) == len(set(backstage.__all__))
    assert set(backstage.__all__) == public | {"__version__"}


def test_every_exported_name_is_importable() -> None:
    namespace: dict[str, Any] = {}
    exec("from backstage import *", namespace)  # noqa: S102 - what a user's star-import sees
    for name in backstage.__all__:
        assert getattr(backstage, name) is not None
        if name != "__version__":
            assert namespace[name] is getattr(backstage, name)
    assert isinstance(backstage.__version__, str) and backstage.__version__


def test_exported_callables_have_docstrings() -> None:
    for name in backstage.__all__:
        obj = getattr(backstage, name)
        if callable(obj):
            assert inspect.getdoc(obj), f"backstage.{name} has no docstring"


@pytest.mark.parametrize("module", ["ops.acl", "app", "client", "context", "groups", "cancels", "results", "errors", "protocol.keys", "connections.redis_conn", "connections.resp",
                                    "protocol.scripts", "protocol.wire"])
def test_submodule_all_names_exist(module: str) -> None:
    mod = importlib.import_module(f"backstage.{module}")
    assert len(mod.__all__) == len(set(mod.__all__))
    for name in mod.__all__:
        assert hasattr(mod, name), f"backstage.{module}.__all__ lists missing {name!r}"


@pytest.mark.parametrize(
    ("error", "builtin_base"),
    [
        (ConfigError, ValueError),
        (AppNotFound, ConfigError),
        (InvalidJobError, ValueError),
        (PayloadError, TypeError),
        (PayloadError, InvalidJobError),
        (WireError, ValueError),
        (RedisUnavailable, ConnectionError),
        (RedisUnavailable, BrokerError),
        (RedisVersionError, BrokerError),
        (TaskNotFound, LookupError),
        (Retry, BackstageError),
        (Reject, BackstageError),
    ],
)
def test_error_tree(error: type[BaseException], builtin_base: type[BaseException]) -> None:
    assert issubclass(error, BackstageError)
    assert issubclass(error, builtin_base)
    assert getattr(builtins, error.__name__, None) is None  # no shadowing of builtins


def test_retry_and_reject() -> None:
    assert Retry().delay is None
    assert Retry(2.5).delay == 2.5
    with pytest.raises(InvalidJobError, match="delay"):
        Retry(-1)
    with pytest.raises(InvalidJobError, match="delay"):
        Retry(float("nan"))
    assert Reject("bad input").reason == "bad input"
    assert str(Reject("bad input")) == "bad input"


def test_pyproject_license_is_an_spdx_string() -> None:
    # the TOML-table form makes setuptools print a deprecation warning on every install
    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).resolve().parent.parent
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "MIT"
    assert any(req.startswith("setuptools>=") and int(req.split(">=")[1].split(".")[0]) >= 77
               for req in meta["build-system"]["requires"])
