"""Redis Sentinel: ``redis+sentinel://`` URLs, and a failover in the middle
of a run of the real ``backstage-prefork``.

Each test that needs servers gets its own topology (a failover changes it):
one master, one replica, three sentinels (quorum 2, down-after 1 s), all on
loopback ports in the test's temp dir. The chaos suite's ledger checks
(``test_chaos.py``) then hold across the failover: every job ran, every job
settled, duplicates only among jobs pending at the fault.

Replication is asynchronous: a write acknowledged by the master may be lost
in a failover. So the tests ``WAIT`` for the replica after enqueueing, and
just before the fault they briefly pause writes on the old master and let
the replica catch up, so that "pending at the fault" is the same set on
both sides and the ledger check stays exact.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import redis

from backstage import AsyncClient, Backstage, Client, ConfigError, RedisUnavailable
from backstage.connections import redis_conn
from backstage.protocol import scripts
from backstage.protocol.keys import Keys
from backstage.connections.resp import pack_command

from .helpers import wait_until
from .redis_server import RedisServer, SentinelServer, free_port, start_sentinels
from .test_chaos import FAST, Ledger, check_ledger, enqueue_jobs, in_flight

SERVICE = "mymaster"
SECRET = "s3ntinel-Secret-pw"


@dataclass
class Topology:
    master: RedisServer
    replica: RedisServer
    sentinels: list[SentinelServer]

    def url(self, auth: str = "", path: str = SERVICE, query: str = "") -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{auth}{hosts}/{path}{query}"

    def role(self, server: RedisServer) -> str:
        c = server.client(socket_timeout=1)
        try:
            return str(c.info("replication")["role"])
        except redis.ConnectionError:
            return "down"
        finally:
            c.close()

    def sentinels_say(self, server: RedisServer) -> bool:
        """Every sentinel names ``server`` as the master."""
        for s in self.sentinels:
            c = s.client(socket_timeout=1)
            try:
                addr = c.sentinel_get_master_addr_by_name(SERVICE)
            finally:
                c.close()
            if not addr or int(addr[1]) != server.port:
                return False
        return True


def _sentinels_ready(sentinels: list[SentinelServer]) -> bool:
    for s in sentinels:
        c = s.client(socket_timeout=1)
        try:
            state = c.sentinel_master(SERVICE)
        finally:
            c.close()
        if state["num-other-sentinels"] < len(sentinels) - 1 or state["num-slaves"] < 1:
            return False
    return True


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    fast_sync = ("--repl-diskless-sync-delay", "0")
    master = RedisServer(tmp_path / "master", extra=fast_sync).start()
    replica = RedisServer(tmp_path / "replica", extra=(*fast_sync, "--replicaof", "127.0.0.1", str(master.port)))
    sentinels: list[SentinelServer] = []
    try:
        replica.start()
        rc = replica.client()
        try:
            wait_until(lambda: rc.info("replication").get("master_link_status") == "up", 10, message="replica in sync")
        finally:
            rc.close()
        sentinels = start_sentinels(tmp_path, master.port, down_after_ms=1000, failover_timeout_ms=3000)
        wait_until(lambda: _sentinels_ready(sentinels), 10, message="sentinels that know each other and the replica")
        yield Topology(master, replica, sentinels)
    finally:
        for s in sentinels:
            s.stop()
        master.kill()
        replica.kill()


def _sync_and_freeze(old: redis.Redis, new: redis.Redis, ms: int) -> None:
    """Pause writes on the old master and wait until the replica has all of them."""
    old.execute_command("CLIENT", "PAUSE", ms, "WRITE")
    offset = int(old.info("replication")["master_repl_offset"])
    wait_until(lambda: int(new.info("replication")["slave_repl_offset"]) >= offset, 5, message="replica caught up")


def _blocked_xread_on(r: redis.Redis) -> bool:
    return any(c.get("cmd") == "xread" and "b" in c.get("flags", "") for c in r.client_list())


# -- URLs, without servers ------------------------------------------------------------------------

def test_sentinel_url_parsing() -> None:
    t = redis_conn.parse_sentinel_url(
        "redis+sentinel://jobs:p%40ss@127.0.0.1:26379,127.0.0.1:26380,[::1]/mymaster/3"
        "?sentinel_username=watch&sentinel_password=w%2Fpw")
    assert t.sentinels == (("127.0.0.1", 26379), ("127.0.0.1", 26380), ("::1", 26379))
    assert (t.service, t.db, t.username, t.password) == ("mymaster", 3, "jobs", "p@ss")
    assert (t.sentinel_username, t.sentinel_password, t.tls) == ("watch", "w/pw", False)
    assert t.describe() == "sentinel:mymaster@127.0.0.1:26379,127.0.0.1:26380,[::1]:26379"
    assert redis_conn.parse_sentinel_url("rediss+sentinel://h/svc").tls
    assert "p@ss" not in repr(t) and "w/pw" not in repr(t)


@pytest.mark.parametrize(("url", "words"), [
    ("redis+sentinel://:pw-LEAK@127.0.0.1:26379", "names the service"),
    ("redis+sentinel://:pw-LEAK@/mymaster", "at least one sentinel"),
    ("redis+sentinel://:pw-LEAK@127.0.0.1:port/mymaster", "port must be a number"),
    ("redis+sentinel://:pw-LEAK@127.0.0.1/mymaster/zero", "must be a number"),
    ("redis+sentinel://127.0.0.1/mymaster?password=pw-LEAK", "unknown Sentinel URL option(s) password"),
    ("redis+sentinel://127.0.0.1/mymaster?ssl_ca_certs=/x", "need a TLS URL"),
    ("rediss+sentinel://127.0.0.1/mymaster?ssl_ca_certs=/no/such/ca.pem", "no such file"),
    ("redis+sentinel://u:pw/LEAK@127.0.0.1/mymaster", "percent-encode"),
    ("redis://u:pw/LEAK@127.0.0.1:6379/0", "percent-encode"),
    ("rediss://u:pw?LEAK@127.0.0.1:6379/0", "percent-encode"),
])
def test_bad_sentinel_urls_say_why_without_the_password(url: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        Client(url)
    assert words in str(info.value)
    assert "LEAK" not in str(info.value)


def test_redact_url_hides_every_password() -> None:
    url = "redis+sentinel://u:pw-LEAK@h:1,h:2/svc?sentinel_password=pw-LEAK2&ssl_cert_reqs=none"
    text = redis_conn.redact_url(url)
    assert "pw-LEAK" not in text and "u:***@h:1,h:2/svc" in text and "ssl_cert_reqs=none" in text
    with pytest.raises(ConfigError) as info:
        Client("u:pw-LEAK@localhost:6379")  # no scheme
    assert "pw-LEAK" not in str(info.value) and "u:***@localhost" in str(info.value)


def test_unreachable_sentinels_name_themselves_not_the_password() -> None:
    ports = [free_port(), free_port()]
    url = f"redis+sentinel://app:{SECRET}@127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/mymaster?sentinel_password={SECRET}"
    with Client(url) as c:
        assert c.where == f"sentinel:mymaster@127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}"
        with pytest.raises(RedisUnavailable) as info:
            c.enqueue("t", 1)
    assert c.where in str(info.value) and "no sentinel answered" in str(info.value)
    assert SECRET not in str(info.value)


# -- against a real Sentinel setup ------------------------------------------------------------------

def test_producers_and_app_go_through_sentinel(topology: Topology, prefix: str) -> None:
    keys = Keys(prefix)
    admin = topology.master.client()
    try:
        with Client(topology.url(), prefix=prefix) as c:
            assert c.where.startswith("sentinel:mymaster@127.0.0.1:")
            job = c.enqueue("t", {"a": 1}, result_ttl=60)
            assert c.enqueue("t", 2, delay=30) and c.status(job) == "queued"

        async def produce() -> str | None:
            async with AsyncClient(topology.url(), prefix=prefix) as ac:
                assert ac.where == c.where
                return await ac.enqueue("t", 3, dedupe_key="k")

        assert asyncio.run(produce())
        app = Backstage(topology.url(path=f"{SERVICE}/0"), prefix=prefix)
        assert app.enqueue("t", 4)
        app.client.close()
        assert admin.xlen(keys.stream("default")) == 3 and admin.zcard(keys.scheduled) == 1
    finally:
        admin.close()


def test_sentinel_and_master_passwords(topology: Topology, prefix: str) -> None:
    """The URL's user:pass go to the master, ?sentinel_password= to the sentinels."""
    admin = topology.master.client()
    try:
        admin.execute_command("ACL", "SETUSER", "app", "on", f">{SECRET}", "~*", "+@all")
    finally:
        admin.close()
    for s in topology.sentinels:  # this topology is thrown away after the test: no need to undo
        sc = s.client()
        try:
            sc.execute_command("ACL", "SETUSER", "default", "on", f">{SECRET}-sentinel")
        finally:
            sc.close()
    good = topology.url(f"app:{SECRET}@", query=f"?sentinel_password={SECRET}-sentinel")
    with Client(good, prefix=prefix) as c:
        assert c.enqueue("t", 1)
    wrong_master = topology.url(f"app:nope-{SECRET}@", query=f"?sentinel_password={SECRET}-sentinel")
    with Client(wrong_master, prefix=prefix) as c, pytest.raises(RedisUnavailable) as info:
        c.enqueue("t", 1)
    assert "refused the credentials" in str(info.value) and SECRET not in str(info.value)
    without_sentinel_pw = topology.url(f"app:{SECRET}@")
    with Client(without_sentinel_pw, prefix=prefix) as c, pytest.raises(RedisUnavailable) as info:
        c.enqueue("t", 1)
    assert "no sentinel answered" in str(info.value) and SECRET not in str(info.value)


def test_a_kept_connection_reconnects_through_the_sentinels(topology: Topology, prefix: str) -> None:
    """redis-py reconnects a closed connection on send without asking the
    sentinels (to its last address, or localhost:6379 if it never connected);
    ours always ask: the master's exchange connection is kept outside the pool."""
    with Client(topology.url(), prefix=prefix) as c:
        conn = c.redis.connection_pool.make_connection()
        try:
            for _ in range(2):
                conn.send_packed_command([pack_command((b"INCR", f"{prefix}:n".encode()))])
                conn.read_response()
                assert (conn.host, conn.port) == ("127.0.0.1", topology.master.port)
                conn.disconnect()
                conn.port = free_port()  # a stale address: it must be asked for again
        finally:
            conn.disconnect()
    admin = topology.master.client()
    try:
        assert admin.get(f"{prefix}:n") == b"2"
    finally:
        admin.close()


def test_failover_by_sigkill_mid_run_loses_nothing(topology: Topology, prefix: str, tmp_path: Path,
                                                   start_worker) -> None:
    keys = Keys(prefix)
    ledger = Ledger(tmp_path / "ledger.txt")
    old, new = topology.master.client(), topology.replica.client()
    try:
        with Client(topology.url(), prefix=prefix) as c:
            ids = enqueue_jobs(c, 300, s=0.01)
        assert old.execute_command("WAIT", 1, 5000) == 1  # every job is on the replica too
        w = start_worker(*FAST, "-c", "2", url=topology.url(), app="apps.chaos",
                         env={"BT_LEDGER": str(ledger.path)})
        wait_until(lambda: len(ledger.runs()) >= 60, 30, message=lambda: w.log()[-2000:])
        _sync_and_freeze(old, new, 5000)
        flight = in_flight(old, keys)
        topology.master.kill()
        wait_until(lambda: topology.role(topology.replica) == "master", 20, message="the replica promoted")
        flight |= in_flight(new, keys)  # before the worker is back (sentinels announce it ~1 s later)
        # the producer function library the worker loaded reached the new master by replication
        assert new.execute_command("FUNCTION", "LIST", "LIBRARYNAME", scripts.producer_library().name)
        check_ledger(new, keys, ledger, ids, flight, timeout=30)
        assert topology.sentinels_say(topology.replica)
        log = w.log()
        assert "Redis error" in log and "is back" in log and w.proc.poll() is None
        # the blocking XREAD came from the pool too: it now waits on the new master
        wait_until(lambda: _blocked_xread_on(new), 10, message="a blocked XREAD on the new master")
        with Client(topology.url(), prefix=prefix) as c:
            late = c.enqueue("chaos.job", {"s": 0})
        wait_until(lambda: late in ledger.runs(), 10, message="a job enqueued after the failover ran")
        assert w.stop() == 0
    finally:
        old.close()
        new.close()


def test_sentinel_failover_command_mid_run(topology: Topology, prefix: str, tmp_path: Path, start_worker) -> None:
    """SENTINEL FAILOVER: the old master lives on and becomes a replica; the
    worker must leave it, its blocking XREAD included.

    Sentinel demotes the old master (REPLICAOF, then CLIENT KILL TYPE normal)
    only at its next configuration check, some 8 s after the switch; the test
    sends those same commands itself right after the promotion. Until then a
    client still connected to the old master could write to it, and those
    writes would be lost: the README recommends ``min-replicas-to-write``.
    """
    keys = Keys(prefix)
    ledger = Ledger(tmp_path / "ledger.txt")
    old, new = topology.master.client(), topology.replica.client()
    sentinel = topology.sentinels[0].client()
    try:
        with Client(topology.url(), prefix=prefix) as c:
            ids = enqueue_jobs(c, 300, s=0.01)
        assert old.execute_command("WAIT", 1, 5000) == 1
        w = start_worker(*FAST, "-c", "2", url=topology.url(), app="apps.chaos",
                         env={"BT_LEDGER": str(ledger.path)})
        wait_until(lambda: len(ledger.runs()) >= 60, 30, message=lambda: w.log()[-2000:])
        _sync_and_freeze(old, new, 10_000)
        flight = in_flight(old, keys)
        assert sentinel.execute_command("SENTINEL", "FAILOVER", SERVICE)
        wait_until(lambda: topology.role(topology.replica) == "master", 20, message="the replica promoted")
        flight |= in_flight(new, keys)
        old.execute_command("REPLICAOF", "127.0.0.1", topology.replica.port)
        old.execute_command("CLIENT", "KILL", "TYPE", "normal")
        old.execute_command("CLIENT", "UNPAUSE")
        check_ledger(new, keys, ledger, ids, flight, timeout=30)
        assert w.proc.poll() is None
        wait_until(lambda: _blocked_xread_on(new), 10, message="a blocked XREAD on the new master")
        assert not _blocked_xread_on(old)
        with Client(topology.url(), prefix=prefix) as c:
            late = c.enqueue("chaos.job", {"s": 0})
        wait_until(lambda: late in ledger.runs(), 10, message="a job enqueued after the failover ran")
        w.signal(signal.SIGTERM)
        assert w.wait(30) == 0
    finally:
        sentinel.close()
        old.close()
        new.close()
