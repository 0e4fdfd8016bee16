"""TLS, ACL users and passwords.

One TLS-only redis-server for the module (no plain-text port), with a CA,
server and client certificates made by the fixture with ``openssl``. ACL
users get exactly the rules ``backstage acl`` prints: the producer can
enqueue but cannot read a queue; the worker runs a real ``backstage-prefork``
end to end (retries, dead letters, chains, results, cron, broadcast,
presence, remote control) without a single ACL denial. And no password
ever shows up in an error, a log line, a process title or ``--help``.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest
import redis

from backstage import AsyncClient, Backstage, BrokerError, Client, ConfigError, Job, RedisUnavailable, TlsSettings
from backstage.ops import acl
from backstage.protocol import scripts
from backstage.connections import redis_conn
from backstage.protocol.keys import Keys

from .helpers import wait_until
from .redis_server import RedisServer, TlsFiles, free_port, make_tls_files
from .workers import BIN as PREFORK, TESTS

BACKSTAGE = Path(sys.executable).with_name("backstage")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-tls"), tls=tls_files).start()
    yield server
    server.stop()


@dataclass
class Users:
    """ACL users with the rules of ``backstage acl`` for this test's prefix."""

    server: RedisServer
    password: str

    def url(self, user: str, password: str | None = None) -> str:
        return f"rediss://{user}:{password or self.password}@127.0.0.1:{self.server.port}/0"


@pytest.fixture
def users(tls_server: RedisServer, prefix: str) -> Iterator[Users]:
    password = f"pw-{uuid.uuid4().hex}"  # unique: a grep for it cannot match anything else
    admin = tls_server.client()
    try:
        for role in acl.ROLES:
            admin.execute_command("ACL", "SETUSER", role, *acl.rules(role, prefix), f">{password}")
        admin.execute_command("ACL", "LOG", "RESET")
        yield Users(tls_server, password)
    finally:
        admin.close()


def acl_denials(server: RedisServer, user: str) -> list[dict[Any, Any]]:
    admin = server.client()
    try:
        return [e for e in admin.acl_log(count=1000) if e.get("username") in (user, user.encode())]
    finally:
        admin.close()


def run(binary: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("BACKSTAGE_")}
    full.update(PYTHONPATH=str(TESTS), **(env or {}))
    return subprocess.run([str(binary), *args], env=full, cwd=str(TESTS), capture_output=True, text=True, timeout=30)


# -- TLS -----------------------------------------------------------------------------------------------

def test_tls_needs_the_ca_and_takes_it_from_the_url_or_settings(tls_server: RedisServer, tls_files: TlsFiles,
                                                               prefix: str) -> None:
    url = tls_server.url
    with Client(url, prefix=prefix) as c, pytest.raises(RedisUnavailable) as info:
        c.enqueue("t", 1)  # the system trust store does not know our throwaway CA
    assert f"127.0.0.1:{tls_server.port}" in str(info.value) and "--tls-ca" in str(info.value)
    with Client(f"{url}?ssl_ca_certs={tls_files.ca}", prefix=prefix) as c:
        assert c.enqueue("t", 1)
    with Client(url, prefix=prefix, tls=TlsSettings(ca=str(tls_files.ca))) as c:
        assert c.enqueue("t", 2, delay=30, dedupe_key="k")
    with Client(f"{url}?ssl_cert_reqs=none", prefix=prefix) as c:  # no verification: works, insecure
        assert c.enqueue("t", 3)

    async def produce() -> str | None:
        async with AsyncClient(url, prefix=prefix, tls=TlsSettings(ca=tls_files.ca)) as ac:
            return await ac.enqueue("t", 4, result_ttl=60)

    assert asyncio.run(produce())
    app = Backstage(url, prefix=prefix, tls=TlsSettings(ca=str(tls_files.ca)))
    assert app.enqueue("t", 5)
    app.client.close()
    admin = tls_server.client()
    try:
        assert admin.xlen(Keys(prefix).stream("default")) == 4 and admin.zcard(Keys(prefix).scheduled) == 1
    finally:
        admin.close()


def test_client_certificates_are_sent_and_checked(tls_server: RedisServer, tls_files: TlsFiles, prefix: str) -> None:
    good = TlsSettings(ca=str(tls_files.ca), cert=str(tls_files.client_cert), key=str(tls_files.client_key))
    with Client(tls_server.url, prefix=prefix, tls=good) as c:
        assert c.enqueue("t", 1)
    # tls-auth-clients optional: no certificate is fine, one the CA did not sign is refused
    rogue = TlsSettings(ca=str(tls_files.ca), cert=str(tls_files.rogue_cert), key=str(tls_files.rogue_key))
    with Client(tls_server.url, prefix=prefix, tls=rogue) as c, pytest.raises(RedisUnavailable):
        c.enqueue("t", 1)


@pytest.mark.parametrize(("make", "words"), [
    (lambda f: Client("redis://u:pw-LEAK@127.0.0.1:6379/0", tls=TlsSettings(ca=str(f.ca))), "use rediss://"),
    (lambda f: Client("redis://u:pw-LEAK@127.0.0.1:6379/0?ssl_ca_certs=/x"), "need a TLS URL"),
    (lambda f: Client("rediss://u:pw-LEAK@127.0.0.1:6379/0?ssl_ca_certs=/no/such.pem"), "no such file"),
    (lambda f: Client("rediss://u:pw-LEAK@127.0.0.1:6379/0?ssl_cert_reqs=maybe"), "required, optional or none"),
    (lambda f: TlsSettings(ca=str(f.ca), cert=str(f.client_cert)), "cert given without key"),
    (lambda f: TlsSettings(ca=""), "path of a PEM file"),
])
def test_bad_tls_options_say_what_is_wrong(tls_files: TlsFiles, make: Any, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        make(tls_files)
    assert words in str(info.value) and "pw-LEAK" not in str(info.value)


def test_rediss_to_a_plain_text_port_fails_fast_and_says_tls(redis_server: RedisServer) -> None:
    # a plain-text Redis never answers a ClientHello: the handshake is bounded by the
    # connect timeout (5 s) instead of the command timeout (30 s), and the error says TLS
    exe = str(Path(sys.executable).with_name("backstage"))
    out = subprocess.run([exe, "inspect", "--redis-url", f"rediss://127.0.0.1:{redis_server.port}/0"],
                         capture_output=True, text=True, timeout=25)
    assert out.returncode == 1
    [line] = out.stderr.strip().splitlines()
    assert f"TLS handshake with 127.0.0.1:{redis_server.port} got no answer" in line
    assert "plain-text Redis" in line and "use redis://" in line and "is redis-server running" not in line


def test_with_tls_replaces_the_url_options() -> None:
    url = redis_conn.with_tls("rediss://h:1/0?ssl_ca_certs=/old.pem&ssl_cert_reqs=required",
                              TlsSettings(ca="/new.pem"))
    assert url == "rediss://h:1/0?ssl_cert_reqs=required&ssl_ca_certs=%2Fnew.pem"
    assert redis_conn.with_tls("redis://h:1/0", None) == "redis://h:1/0"
    assert redis_conn.with_tls("redis://h:1/0", TlsSettings()) == "redis://h:1/0"


# -- ACL rule sets ------------------------------------------------------------------------------------

def test_acl_cli_prints_rules_redis_accepts(tls_server: RedisServer, tls_files: TlsFiles) -> None:
    admin = tls_server.client()
    try:
        for role in acl.ROLES:
            for extra in ((), ("--no-selectors",)):
                out = run(BACKSTAGE, "acl", role, "--prefix", "shop", "--user", f"cli-{role}", *extra)
                assert out.returncode == 0, out.stderr
                line = out.stdout.strip()
                assert line == acl.setuser(role, "shop", f"cli-{role}", selectors=not extra)
                assert admin.execute_command(*shlex.split(line)) in (b"OK", "OK", True)
                user = admin.acl_getuser(f"cli-{role}")
                # admin, the read-only viewer (and a 6.2 worker) reach the whole prefix; the others
                # every key under it but P:control
                whole = role in ("admin", "viewer") or (role == "worker" and bool(extra))
                assert ("~shop:*" if whole else "~shop:[^c]*") in user["keys"]
                assert "~shop:control" not in user["keys"] and not user["passwords"]  # no password: cannot log in
        producer = admin.acl_getuser("cli-producer")  # (set last without selectors)
        assert "+xadd" in producer["commands"] and "+xreadgroup" not in producer["commands"]
    finally:
        admin.close()


def test_readme_shows_the_rules_the_cli_prints() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for role in acl.ROLES:
        assert acl.setuser(role) in readme.splitlines()


def test_producer_user_enqueues_but_cannot_read_or_destroy_queues(users: Users, tls_files: TlsFiles,
                                                                  prefix: str) -> None:
    keys = Keys(prefix)
    tls = TlsSettings(ca=str(tls_files.ca))
    admin = users.server.client()
    admin.xgroup_create(keys.stream("default"), "backstage-workers", id="0", mkstream=True)
    with Client(users.url("producer"), prefix=prefix, tls=tls) as p:
        assert p.enqueue("t", {"now": 1})
        assert p.enqueue("t", {"later": 1}, delay=30)
        assert p.enqueue("t", {"d": 1}, dedupe_key="once") and p.enqueue("t", {"d": 2}, dedupe_key="once") is None
        assert p.enqueue("t", {"d": 3}, dedupe_key="later", delay=30)
        job = p.enqueue("t", {"tracked": 1}, result_ttl=60)
        assert job and p.status(job) == "queued"
        assert all(p.enqueue_many([("t", i) for i in range(10)] + [("t", 99)], queue="reports"))
        assert p.broadcast("cache.clear", {})
        stream = keys.stream("default")
        for command in (("XREADGROUP", "GROUP", "backstage-workers", "c", "STREAMS", stream, ">"),
                        ("XRANGE", stream, "-", "+"), ("XREAD", "STREAMS", stream, "0"),
                        ("XLEN", stream), ("ZRANGE", keys.scheduled, 0, -1),
                        ("DEL", stream), ("SET", stream, "x"), ("EXPIRE", stream, 1),  # cannot destroy a queue
                        ("XADD", "other-app:default", "*", "k", "v"), ("KEYS", "*"), ("FLUSHALL",)):
            with pytest.raises(redis.exceptions.NoPermissionError):
                p.redis.execute_command(*command)
        with pytest.raises(BrokerError) as info, redis_conn.translate_errors(p.where):
            p.redis.xrange(stream)
        assert "`backstage acl worker`" in str(info.value)

    async def async_produce() -> str | None:
        async with AsyncClient(users.url("producer"), prefix=prefix, tls=tls) as ap:
            return await ap.enqueue("t", {"async": 1}, dedupe_key="async", result_ttl=60)

    assert asyncio.run(async_produce())
    try:
        assert admin.xlen(keys.stream("default")) == 4 and admin.zcard(keys.scheduled) == 2
        assert admin.xlen(keys.stream("reports")) == 11
        denied = {e["object"] for e in acl_denials(users.server, "producer")}
        assert denied == {"xreadgroup", "xrange", "xread", "xlen", "zrange", stream, "expire", "other-app:default",
                          "keys", "flushall"}  # only what the test tried on purpose
    finally:
        admin.close()


def test_worker_user_runs_everything_end_to_end(users: Users, tls_files: TlsFiles, prefix: str, tmp_path: Path,
                                                start_worker) -> None:
    keys = Keys(prefix)
    ledger_path = tmp_path / "ledger.txt"
    tls = TlsSettings(ca=str(tls_files.ca))
    admin_url = f"rediss://127.0.0.1:{users.server.port}/0"
    # producers run enqueue.lua as a function they may call but not load: an admin loads it
    # when producers start before any worker did (the worker loads it at start too)
    out = run(BACKSTAGE, "functions", "load", "--redis-url", admin_url, "--tls-ca", str(tls_files.ca))
    assert out.returncode == 0 and "loaded" in out.stdout, out.stderr
    with Client(users.url("producer"), prefix=prefix, tls=tls) as p:
        p.enqueue_many([("acl.ok", {"i": i}) for i in range(20)])
        p.enqueue("acl.ok", {"i": "delayed"}, delay=0.3)
        p.enqueue("acl.ok", {"i": "deduped"}, dedupe_key="d")
        for task in ("acl.flaky", "acl.fail", "acl.reject", "acl.chain", "no.such.task"):
            p.enqueue(task, {})
        p.enqueue("acl.enqueue", {"key": "from-child"})
        tracked = p.enqueue("acl.result", {"xs": [1, 2, 3]})
        worker_url = users.url("worker")
        # the password on the command line on purpose: the process title must hide it
        w = start_worker("-c", "2", "--redis-url", worker_url, "--tls-ca", str(tls_files.ca), "--log-level", "debug",
                         "--heartbeat-interval", "0.5", "--idle-timeout", "2", url=worker_url, app="apps.acl_app",
                         env={"BT_LEDGER": str(ledger_path), "BT_CRON": "1"})

        def lines() -> list[str]:
            return ledger_path.read_text().splitlines() if ledger_path.exists() else []

        def details(kind: str) -> list[str]:
            return [ln.split(" ", 2)[2] for ln in lines() if ln.startswith(kind + " ")]

        wait_until(lambda: {"delayed", "deduped", "chained", "from-child", "cron", *map(str, range(20))}
                   <= set(details("ok")), 20, message=lambda: f"{lines()}\n{w.log()[-3000:]}")
        assert p.result(tracked, timeout=10) == {"sum": 6}
        assert details("flaky") == ["1", "2"] and details("fail") == ["", ""]
        with Client(admin_url, prefix=prefix, tls=tls) as admin:
            wait_until(lambda: admin.redis.xlen(keys.dead_letter("default")) == 3, 10)
            reasons = sorted(f[b"reason"] for _, f in admin.redis.xrange(keys.dead_letter("default")))
            assert reasons == [b"failed", b"failed", b"unknown-task"]  # Reject dead-letters as failed
            wait_until(lambda: len(admin.workers()) == 1, 10)  # presence
            assert [a["consumer"] for a in admin.control("ping")] == [admin.workers()[0]["consumer"]]
            assert admin.control("pause", "low")[0]["paused"] == ["low"]
            assert admin.control("resume", "low")[0]["paused"] == []
            p.broadcast("acl.hello", {"n": 1})
            wait_until(lambda: details("broadcast") == ["1", "1"], 10)  # once per child
        titles = [" ".join(proc.cmdline()) for proc in [psutil.Process(w.pid), *w.children()]]
        assert any("backstage-prefork: master" in t for t in titles), titles
        assert all(users.password not in t for t in titles), titles
        assert w.stop() == 0
    log = w.log()
    assert "dead-lettered" in log and users.password not in log
    assert acl_denials(users.server, "worker") == []  # not one command refused, in Lua or not
    assert acl_denials(users.server, "producer") == []


# -- passwords never leak ---------------------------------------------------------------------------------

def test_help_never_shows_a_password_from_the_environment(users: Users) -> None:
    env = {"BACKSTAGE_REDIS_URL": users.url("worker"), "REDIS_URL": users.url("producer")}
    for binary, args in ((PREFORK, ["--help"]), (BACKSTAGE, ["--help"]), (BACKSTAGE, ["inspect", "--help"]),
                         (BACKSTAGE, ["dlq", "requeue", "--help"]), (BACKSTAGE, ["acl", "--help"])):
        out = run(binary, *args, env=env)
        assert out.returncode == 0, out.stderr
        assert users.password not in out.stdout + out.stderr
    assert "--tls-ca" in run(PREFORK, "--help").stdout and "--tls-ca" in run(BACKSTAGE, "inspect", "--help").stdout


def test_cli_errors_never_show_a_password(users: Users, tls_files: TlsFiles, prefix: str) -> None:
    ca = str(tls_files.ca)
    wrong = users.url("worker", password=f"wrong-{users.password}")
    out = run(BACKSTAGE, "inspect", "--redis-url", wrong, "--tls-ca", ca, "--prefix", prefix)
    assert out.returncode == 1 and "refused the credentials" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and users.password not in out.stderr + out.stdout
    out = run(BACKSTAGE, "inspect", "--prefix", prefix, env={"BACKSTAGE_REDIS_URL": users.url("producer")})
    assert out.returncode == 1 and "TLS options" in out.stderr and users.password not in out.stderr
    out = run(BACKSTAGE, "enqueue", "t", "--prefix", prefix,
              env={"BACKSTAGE_REDIS_URL": users.url("producer"), "BACKSTAGE_TLS_CA": ca})
    assert out.returncode == 0, out.stderr
    out = run(BACKSTAGE, "inspect", "--prefix", prefix, env={"BACKSTAGE_REDIS_URL": users.url("producer"),
                                                             "BACKSTAGE_TLS_CA": ca})
    assert out.returncode == 1 and "`backstage acl" in out.stderr and users.password not in out.stderr
    out = run(BACKSTAGE, "inspect", "--redis-url", f"redis://:{users.password}@127.0.0.1:{users.server.port}/0",
              "--tls-ca", ca)
    assert out.returncode == 1 and "use rediss://" in out.stderr and users.password not in out.stderr

    env = {"BT_REDIS_URL": wrong, "BT_PREFIX": prefix}
    out = run(PREFORK, "--tls-ca", ca, "apps.acl_app", env=env)
    assert out.returncode == 4 and "refused the credentials" in out.stderr
    assert users.password not in out.stderr + out.stdout
    out = run(PREFORK, "--tls-ca", "/no/such/ca.pem", "apps.acl_app", env=env)
    assert out.returncode == 2 and "no such file" in out.stderr and users.password not in out.stderr
    out = run(PREFORK, "apps.acl_app", env={**env, "BACKSTAGE_TLS_CERT": str(tls_files.client_cert)})
    assert out.returncode == 2 and "cert given without key" in out.stderr
    port = free_port()
    sentinel = f"redis+sentinel://u:{users.password}@127.0.0.1:{port}/mymaster?sentinel_password={users.password}"
    out = run(PREFORK, "--redis-url", sentinel, "apps.acl_app", env=env)
    assert out.returncode == 4 and f"sentinel:mymaster@127.0.0.1:{port}" in out.stderr
    assert users.password not in out.stderr + out.stdout


def test_workflows_under_least_privilege_users(users: Users, tls_files: TlsFiles, prefix: str,
                                               start_worker) -> None:
    """Groups, chords, cancels, progress and unique ids with the producer and worker rules: no denial."""
    keys = Keys(prefix)
    tls = TlsSettings(ca=str(tls_files.ca))
    loader = users.server.client()
    try:
        scripts.load_library(loader)  # as `backstage functions load` does: the producer may only FCALL
    finally:
        loader.close()
    with Client(users.url("producer"), prefix=prefix, tls=tls) as p:
        assert p.enqueue("noop", 1, job_id="acl-u", unique=True) == "acl-u"
        assert p.enqueue("noop", 1, job_id="acl-u", unique=True) is None
        chord = p.enqueue_chord([("double", {"n": i}) for i in range(5)], callback=Job("merge", {}, result_ttl=60))
        group = p.enqueue_group([("noop", i) for i in range(3)])
        assert p.group_status(chord)["pending"] == 5
        later = p.enqueue("record", {"n": "never"}, delay=30, result_ttl=60)
        assert p.cancel(later)["status"] == "scheduled"
        spin = p.enqueue("spin", {"s": 60})
        progress = p.enqueue("steps", {"k": "acl"})
        worker_url = users.url("worker")
        w = start_worker("-c", "2", "--redis-url", worker_url, "--tls-ca", str(tls_files.ca), url=worker_url,
                         app="apps.flows", env={"BT_REDIS_URL": worker_url})
        assert p.result(chord, timeout=20) == {"n": 5, "failures": 0}
        wait_until(lambda: p.group_status(group)["done"] == 3, 10)
        assert p.result(progress, timeout=20) == "finished"
        assert p.status(progress, detail=True).progress == 1.0
        wait_until(lambda: p.status(spin) == "running", 10, message=lambda: w.log()[-2000:])
        p.cancel(spin)
        wait_until(lambda: p.status(spin) == "cancelled", 10, message=lambda: w.log()[-2000:])
        wait_until(lambda: p.status(later) == "cancelled", 10)
        assert w.stop() == 0
    admin = users.server.client()
    try:
        assert not admin.exists(keys.unique("acl-u")) and admin.zcard(keys.cancels) == 1  # `later` is not due yet
    finally:
        admin.close()
    assert acl_denials(users.server, "worker") == []
    assert acl_denials(users.server, "producer") == []
