"""Redis Cluster: three masters, three replicas, started by the fixture.

Every key of a prefix carries one hash tag, so the producer, the worker and
the CLI talk to the master owning that slot; a failover of that master is
survived (its replica is promoted) and the chaos ledger still holds.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import redis
from redis.crc import key_slot

from backstage import Client, ConfigError
from backstage.connections.cluster import _slot_ranges
from backstage.protocol import scripts
from backstage.protocol.keys import Keys

from .helpers import wait_until
from .redis_server import RedisServer
from .test_chaos import Ledger, check_ledger, in_flight


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too (both under 65536)."""
    import random
    import socket

    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a cluster node")


class Cluster:
    def __init__(self, base: Path) -> None:
        self.nodes = [RedisServer(base / f"n{i}", aof=True, port=_cluster_port(),
                                  extra=("--cluster-enabled", "yes", "--cluster-node-timeout", "1000",
                                         "--cluster-config-file", "nodes.conf"))
                      for i in range(6)]

    def start(self) -> "Cluster":
        for n in self.nodes:
            n.start()
        subprocess.run([shutil.which("redis-cli") or "redis-cli", "--cluster", "create",
                        *(f"127.0.0.1:{n.port}" for n in self.nodes), "--cluster-replicas", "1", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        wait_until(lambda: all(self.ok(n) for n in self.nodes), 30, message="cluster_state:ok on every node")
        return self

    @staticmethod
    def ok(n: RedisServer) -> bool:
        r = n.client()
        try:
            return r.execute_command("CLUSTER INFO").get("cluster_state") == "ok"
        except redis.RedisError:
            return False
        finally:
            r.close()

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3]) + "/0"

    def owner(self, slot: int) -> RedisServer:
        for n in self.nodes:
            if n.proc is None or n.proc.poll() is not None:
                continue
            r = n.client()
            try:
                for start, end, _host, port in _slot_ranges(r.execute_command("CLUSTER SLOTS")):
                    if start <= slot <= end:
                        return next(x for x in self.nodes if x.port == port)
            except redis.RedisError:
                continue
            finally:
                r.close()
        raise AssertionError(f"no owner for slot {slot}")

    def stop(self) -> None:
        for n in self.nodes:
            n.kill()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is needed to create a cluster")
    c = Cluster(tmp_path_factory.mktemp("cluster")).start()
    yield c
    c.stop()


@pytest.fixture
def tag_prefix() -> str:
    return "{bt" + uuid.uuid4().hex[:10] + "}"


def test_prefix_without_hash_tag_is_refused(cluster: Cluster) -> None:
    with pytest.raises(ConfigError, match=r"hash tag, e.g. prefix='\{backstage\}'"):
        Client(cluster.url, prefix="backstage")


def test_jobs_run_on_a_cluster_and_survive_a_failover(cluster: Cluster, tag_prefix: str, start_worker,
                                                      tmp_path: Path) -> None:
    keys = Keys(tag_prefix)
    slot = key_slot(tag_prefix[1:-1].encode())
    owner = cluster.owner(slot)
    c = Client(cluster.url, prefix=tag_prefix)
    ids = [j for j in c.enqueue_many([("chaos.job", {"i": i, "s": 0.01}) for i in range(300)]) if j]
    delayed = c.enqueue("chaos.job", {"delayed": True}, delay=0.5)
    assert delayed is not None
    r = owner.client()
    r.execute_command("WAIT", 1, 5000)  # on the replica before the fault
    ledger = Ledger(tmp_path / "ledger.txt")
    w = start_worker("-c", "2", "--idle-timeout", "2", "--redis-timeout", "2", url=cluster.url,
                     app="apps.chaos", env={"BT_LEDGER": str(ledger.path), "BT_PREFIX": tag_prefix})
    wait_until(lambda: len(ledger.runs()) >= 60, 30, message=lambda: w.log()[-2000:])
    flight = in_flight(r, keys) | ledger.unfinished()
    r.close()
    owner.kill()  # the slot's master dies; its replica takes over
    wait_until(lambda: cluster.owner(slot) is not owner, 30, message="replica promoted")
    new = cluster.owner(slot).client()
    flight |= in_flight(new, keys)
    # the producer function library the worker loaded on the slot's owner reached its replica
    assert new.execute_command("FUNCTION", "LIST", "LIBRARYNAME", scripts.producer_library().name)
    late = c.enqueue("chaos.job", {"after": True})  # the producer follows the failover too
    assert late is not None
    check_ledger(new, keys, ledger, [*ids, delayed, late], flight, timeout=60)
    assert w.proc.poll() is None
    assert "Redis error" in w.log()
    new.close()
    c.close()
    owner.start()  # back as a replica of the new master, for the next tests
    wait_until(lambda: Cluster.ok(owner), 30)


def test_cli_inspect_on_a_cluster(cluster: Cluster, tag_prefix: str) -> None:
    import sys

    c = Client(cluster.url, prefix=tag_prefix)
    c.enqueue("x", 1, queue="reports")
    out = subprocess.run([str(Path(sys.executable).with_name("backstage")), "inspect", "--redis-url", cluster.url,
                          "--prefix", tag_prefix, "--json"], capture_output=True, text=True, timeout=30)
    c.close()
    assert out.returncode == 0, out.stderr
    assert '"queue":"reports","length":1' in out.stdout




def test_async_client_on_a_cluster(cluster: Cluster, tag_prefix: str) -> None:
    import asyncio

    from backstage import AsyncClient

    async def main() -> tuple[str | None, int]:
        async with AsyncClient(cluster.url, prefix=tag_prefix) as c:
            job = await c.enqueue("x", {"a": 1}, dedupe_key="d1")
            again = await c.enqueue("x", {"a": 1}, dedupe_key="d1")
            assert again is None
            return job, len(await c.enqueue_many([("x", i) for i in range(50)]))

    job, n = asyncio.run(main())
    assert job is not None and n == 50
    r = cluster.owner(key_slot(tag_prefix[1:-1].encode())).client()
    assert r.xlen(Keys(tag_prefix).stream("default")) == 51
    r.close()
