"""Hostile clients (issue 13, items 9 and 10): what a leaked producer password can do.

Each test makes ACL users on the session's redis-server with exactly the
rules ``backstage acl`` prints for a fresh prefix (user names unique to the
test), and runs the real ``backstage-prefork`` as the worker user.

- A producer cannot command workers: control goes through ``P:control``,
  which its key patterns do not match, and a control message it smuggles in
  as a broadcast is ignored. An admin can, and the worker obeys it without
  one ACL denial; concurrency values are bounded.
- A producer cannot run Lua of its own (no EVAL, EVALSHA, SCRIPT, FUNCTION
  LOAD) yet enqueues with dedupe, delay and result tracking through FCALL
  of the library the worker (or ``backstage functions load``) loads.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
import redis

from backstage import AsyncClient, BrokerError, Client, InvalidJobError
from backstage.ops import acl, control
from backstage.protocol import scripts
from backstage.protocol.keys import Keys

from .helpers import wait_until
from .redis_server import RedisServer
from .workers import TESTS

BACKSTAGE = Path(sys.executable).with_name("backstage")


@dataclass
class Users:
    server: RedisServer
    tag: str
    password: str

    def name(self, role: str) -> str:
        return f"{role}-{self.tag}"

    def url(self, role: str) -> str:
        return f"redis://{self.name(role)}:{self.password}@127.0.0.1:{self.server.port}/0"

    def denials(self, role: str) -> list[dict[Any, Any]]:
        admin = self.server.client()
        try:
            name = self.name(role)
            return [e for e in admin.acl_log(count=1000) if e.get("username") in (name, name.encode())]
        finally:
            admin.close()


def make_users(server: RedisServer, prefix: str, *, selectors: bool = True) -> Users:
    users = Users(server, uuid.uuid4().hex[:10], f"pw-{uuid.uuid4().hex}")
    admin = server.client()
    try:
        for role in acl.ROLES:
            admin.execute_command("ACL", "SETUSER", users.name(role), *acl.rules(role, prefix, selectors=selectors),
                                  f">{users.password}")
    finally:
        admin.close()
    return users


@pytest.fixture
def users(redis_server: RedisServer, prefix: str) -> Iterator[Users]:
    u = make_users(redis_server, prefix)
    yield u
    admin = redis_server.client()
    try:
        for role in acl.ROLES:
            admin.execute_command("ACL", "DELUSER", u.name(role))
    finally:
        admin.close()


def test_only_an_admin_commands_workers_and_the_worker_obeys(users: Users, prefix: str, start_worker) -> None:
    keys = Keys(prefix)
    w = start_worker("-c", "1", "--heartbeat-interval", "0.3", url=users.url("worker"))
    w.wait_children(1)
    with Client(users.url("producer"), prefix=prefix) as p, Client(users.url("admin"), prefix=prefix) as a:
        wait_until(lambda: len(a.workers()) == 1, 10, message=lambda: w.log()[-2000:])
        # the producer cannot write the control stream, nor send control through the client
        with pytest.raises(redis.exceptions.NoPermissionError):
            p.redis.xadd(keys.control, {"payload": orjson.dumps({"cmd": "shutdown"})})
        with pytest.raises(redis.exceptions.NoPermissionError):  # nor forge our masters' registry
            p.redis.zadd(keys.workers, {"ts-worker-1": 0})
        with pytest.raises(BrokerError) as info:
            p.control("concurrency", 3)
        assert "admin" in str(info.value)
        # ... and a control message smuggled in as a broadcast is ignored, not obeyed
        p.broadcast(control.CONTROL_TASK, {"cmd": "shutdown"})
        p.broadcast(control.CONTROL_TASK, {"cmd": "concurrency", "value": 1000})
        wait_until(lambda: w.log().count("ignored a control command sent as a broadcast") == 2, 10,
                   message=lambda: w.log()[-2000:])
        assert w.proc.poll() is None and len(w.children()) == 1
        # the admin can, and the worker obeys it
        answers = a.control("concurrency", 2, timeout=5)
        assert [x["ok"] for x in answers] == [True] and answers[0]["concurrency"] == 2
        w.wait_children(2)
        assert a.control("pause", "low", timeout=5)[0]["paused"] == ["low"]
        assert a.control("resume", "low", timeout=5)[0]["paused"] == []
        # concurrency is bounded, on both sides
        for bad in (0, 1025, True, "8"):
            with pytest.raises(InvalidJobError) as bad_info:
                a.control("concurrency", bad)
            assert "1 to 1024" in str(bad_info.value)
        reply = keys.worker_reply("raw")
        control.send(a.redis, keys, {"cmd": "concurrency", "value": 100_000, "reply_to": reply})
        answer = control.collect_replies(a.redis, reply, 1, 5)
        assert answer and answer[0]["ok"] is False and "1 to 1024" in answer[0]["error"]
        assert len(w.children()) == 2
        # the operator's CLI runs as the admin user (the control stream is not a queue to inspect)
        def cli(*args: str) -> str:
            out = subprocess.run([str(BACKSTAGE), *args, "--redis-url", users.url("admin"), "--prefix", prefix],
                                 capture_output=True, text=True, timeout=30, cwd=str(TESTS))
            assert out.returncode == 0, out.stderr
            return out.stdout

        assert '"queue":"control"' not in cli("inspect", "--json") and a.redis.exists(keys.control)
        assert '"consumer"' in cli("workers", "--json")
        cli("dlq", "list", "default")
        cli("control", "ping", "--timeout", "5")
        cli("control", "shutdown", "--timeout", "5")  # ... and shutdown stops the worker
    assert w.wait(20) == 0
    assert users.denials("worker") == []
    # the admin rules leave CONFIG out (CONFIG GET reads passwords): inspect asks, is refused, says unknown
    assert {e["object"] for e in users.denials("admin")} <= {"config|get"}
    assert {e["object"] for e in users.denials("producer")} == {keys.control, keys.workers, "zrangebyscore"}


def _enqueue_everything(c: Client) -> list[str | None]:
    return [c.enqueue("sec.t", {"n": 1}), c.enqueue("sec.t", {"n": 2}, dedupe_key="k"),
            c.enqueue("sec.t", {"n": 3}, dedupe_key="k"), c.enqueue("sec.t", {"n": 4}, delay=30, dedupe_key="later"),
            c.enqueue("sec.t", {"n": 5}, result_ttl=60), c.enqueue("sec.t", {"n": 6}, delay=30, result_ttl=60)]


def test_a_producer_runs_our_scripts_and_no_other_lua(users: Users, prefix: str, redis_server: RedisServer) -> None:
    keys = Keys(prefix)
    root = redis_server.client()
    library = scripts.producer_library()
    try:
        root.execute_command("FUNCTION", "DELETE", library.name)
    except redis.ResponseError:
        pass  # not loaded yet
    try:
        with Client(users.url("producer"), prefix=prefix) as p:
            hostile = (("EVAL", "while true do end", 0), ("EVAL", "return 1", 0),
                       ("SCRIPT", "LOAD", "while true do end"), ("EVALSHA", "a" * 40, 0),
                       ("FUNCTION", "LOAD", "#!lua name=evil\nredis.register_function('evil', function() end)"),
                       ("FUNCTION", "DELETE", library.name), ("FUNCTION", "FLUSH"), ("SCRIPT", "FLUSH"))
            for command in hostile:
                with pytest.raises(redis.exceptions.NoPermissionError):
                    p.redis.execute_command(*command)
            # nobody loaded the functions yet: a clear error, then the admin CLI loads them
            with pytest.raises(BrokerError) as info:
                p.enqueue("sec.t", {"n": 0}, dedupe_key="first")
            assert "backstage functions load" in str(info.value)
            assert p.enqueue("sec.t", {"plain": 1})  # a plain XADD needs no function
            out = subprocess.run([str(BACKSTAGE), "functions", "load", "--redis-url", users.url("admin")],
                                 capture_output=True, text=True, timeout=30, cwd=str(TESTS))
            assert out.returncode == 0 and "loaded" in out.stdout, out.stderr
            ids = _enqueue_everything(p)
            assert ids[2] is None and all(ids[i] for i in (0, 1, 3, 4, 5))
            assert p.status(ids[4] or "") == "queued" and p.status(ids[5] or "") == "scheduled"

        async def produce() -> list[str | None]:
            async with AsyncClient(users.url("producer"), prefix=prefix) as ap:
                return [await ap.enqueue("sec.t", {"a": 1}, dedupe_key="ak"),
                        await ap.enqueue("sec.t", {"a": 2}, dedupe_key="ak"),
                        await ap.enqueue("sec.t", {"a": 3}, delay=30, result_ttl=60)]

        got = asyncio.run(produce())
        assert got[0] and got[1] is None and got[2]
        assert root.xlen(keys.stream("default")) == 5 and root.zcard(keys.scheduled) == 3
        denied = {e["object"] for e in users.denials("producer")}
        assert denied == {"eval", "script|load", "evalsha", "function|load", "function|delete", "function|flush",
                          "script|flush"}, denied
    finally:
        root.close()


def test_redis_6_2_path_evalsha_under_the_flat_rules(redis_server: RedisServer, prefix: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis 6.2 has no functions: producers fall back to EVALSHA, the flat rules grant it
    (the documented trade-off), and ``--no-scripts`` takes all Lua away from plain producers."""
    monkeypatch.setattr(scripts, "FUNCTIONS_VERSION", (99, 0, 0))  # this server plays 6.2
    u = make_users(redis_server, prefix, selectors=False)
    root = redis_server.client()
    try:
        with Client(u.url("producer"), prefix=prefix) as p:
            ids = _enqueue_everything(p)
            assert ids[2] is None and all(ids[i] for i in (0, 1, 3, 4, 5))
            with pytest.raises(redis.exceptions.NoPermissionError):
                p.redis.xadd(Keys(prefix).control, {"payload": b"{}"})  # control stays out of reach
        name = f"plain-{u.tag}"
        root.execute_command("ACL", "SETUSER", name, *acl.rules("producer", prefix, selectors=False, scripts=False),
                             f">{u.password}")
        with Client(f"redis://{name}:{u.password}@127.0.0.1:{redis_server.port}/0", prefix=prefix) as plain:
            assert plain.enqueue("sec.t", {"n": 1}) and plain.enqueue("sec.t", {"n": 2}, delay=30)
            with pytest.raises(redis.exceptions.NoPermissionError):
                plain.redis.execute_command("EVAL", "return 1", 0)
        root.execute_command("ACL", "DELUSER", name, *(u.name(r) for r in acl.ROLES))
    finally:
        root.close()


def test_a_server_without_functions_falls_back_to_evalsha(tmp_path: Path, prefix: str) -> None:
    """Some Redis-compatible services report 7.x but disable functions: producers use EVALSHA there."""
    server = RedisServer(tmp_path / "nofn", extra=("--rename-command", "FCALL", "",
                                                   "--rename-command", "FUNCTION", "")).start()
    try:
        with Client(server.url, prefix=prefix) as c:
            ids = _enqueue_everything(c)
            assert ids[2] is None and all(ids[i] for i in (0, 1, 3, 4, 5))

        async def produce() -> list[str | None]:
            async with AsyncClient(server.url, prefix=prefix) as ac:
                return [await ac.enqueue("sec.t", 1, dedupe_key="ak"), await ac.enqueue("sec.t", 2, dedupe_key="ak")]

        got = asyncio.run(produce())
        assert got[0] and got[1] is None
    finally:
        server.stop()
