"""Redis Cluster: every key of one prefix in one slot, served by its owner.

Backstage keeps all keys of a prefix under one hash tag (prefix
``{backstage}``), so every Lua script and every pipeline touches a single
slot. A client for ``redis+cluster://host:port,host:port`` therefore talks
to one node: the master that owns that slot. Its connections find the owner
(``CLUSTER SLOTS`` asked of the known nodes) each time they connect, and a
``MOVED``/``ASK``/``CLUSTERDOWN``/``TRYAGAIN`` reply (a failover or a
resharding) drops the connection and surfaces as :class:`SlotMoved`: the
command did not run, so it is safe to send again, and the next connection
goes to the new owner. Used by :mod:`backstage.connections.redis_conn` for producers,
the master and the CLI alike.
"""

from __future__ import annotations

from typing import Any, Sequence
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.connection
import redis.connection
from redis.crc import key_slot

from ..errors import ConfigError

__all__ = ["CLUSTER_SCHEMES", "SlotMoved", "ClusterTarget", "parse_cluster_url", "hash_tag", "sync_client",
           "async_client"]

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_MOVED = ("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN")


class SlotMoved(redis.ConnectionError):
    """The slot's owner changed: the command did not run; send it again."""


def hash_tag(key: str) -> str | None:
    """The part of ``key`` Redis Cluster hashes (``{...}``), or None without one."""
    start = key.find("{")
    if start == -1:
        return None
    end = key.find("}", start + 1)
    if end <= start + 1:
        return None
    return key[start + 1:end]


class ClusterTarget:
    """The nodes to ask, the slot to serve, and how to log in."""

    def __init__(self, nodes: Sequence[tuple[str, int]], username: str | None, password: str | None,
                 tls: bool) -> None:
        self.nodes = list(nodes)
        self.username = username
        self.password = password
        self.tls = tls

    def describe(self, slot: int) -> str:
        return "cluster:" + ",".join(f"{h}:{p}" for h, p in self.nodes) + f"#slot{slot}"


def parse_cluster_url(url: str) -> ClusterTarget:
    """``redis+cluster://[user:pass@]h1:p1,h2:p2[/0]`` → :class:`ClusterTarget`."""
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, _, hosts = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, _, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) or None
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"cluster URL: node {item!r} is not host:port "
                              "(expected redis+cluster://host:port,host:port)")
        nodes.append((host.strip("[]"), int(port)))
    db = parts.path.strip("/")
    if db not in ("", "0"):
        raise ConfigError(f"cluster URL: database {db!r}: Redis Cluster has only database 0")
    return ClusterTarget(nodes, username, password, parts.scheme.startswith("rediss"))


def _slot_ranges(reply: Any) -> list[tuple[int, int, str, int]]:
    """(first slot, last slot, master host, master port) from CLUSTER SLOTS, raw or
    as redis-py parses it ({(first, last): {"primary": (host, port), ...}})."""
    out = []
    if isinstance(reply, dict):
        for (start, end), info in reply.items():
            host, port = info["primary"][:2]
            out.append((int(start), int(end), host.decode() if isinstance(host, bytes) else str(host), int(port)))
    else:
        for start, end, master, *_ in reply:
            host = master[0]
            out.append((int(start), int(end), host.decode() if isinstance(host, bytes) else str(host), int(master[1])))
    return out


def _owner(target: ClusterTarget, slot: int, known: Sequence[tuple[str, int]], timeout: float | None
           ) -> tuple[str, int]:
    """Ask the known nodes, then the seed nodes, who owns ``slot`` now."""
    errors = []
    for host, port in [*known, *target.nodes]:
        r = redis.Redis(host=host, port=port, username=target.username, password=target.password,
                        ssl=target.tls, socket_connect_timeout=min(timeout or 2.0, 2.0), socket_timeout=2.0)
        try:
            for start, end, h, p in _slot_ranges(r.execute_command("CLUSTER SLOTS")):  # type: ignore[no-untyped-call]
                if start <= slot <= end:
                    return (h or host), p
        except redis.RedisError as exc:
            errors.append(f"{host}:{port}: {type(exc).__name__}")
        finally:
            r.close()
    raise redis.ConnectionError(f"no cluster node knows the owner of slot {slot} ({'; '.join(errors) or 'unassigned'})")


class _SlotConnection(redis.connection.Connection):
    """Connects to whichever master owns the slot at connect time."""

    def __init__(self, *, cluster: ClusterTarget, slot: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self.cluster = cluster
        self.slot = slot

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if self._sock is None:
            self.host, self.port = _owner(self.cluster, self.slot, [(self.host, self.port)], self.socket_connect_timeout)
        super().connect_check_health(check_health=check_health, retry_socket_connect=retry_socket_connect)

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except redis.ResponseError as exc:
            if str(exc).startswith(_MOVED):
                self.disconnect()  # type: ignore[no-untyped-call]
                raise SlotMoved(f"slot {self.slot} moved: {exc}") from None
            raise


class _AsyncSlotConnection(redis.asyncio.connection.Connection):
    def __init__(self, *, cluster: ClusterTarget, slot: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cluster = cluster
        self.slot = slot

    async def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if not self.is_connected:
            # a short blocking look-up, done only when (re)connecting
            self.host, self.port = _owner(self.cluster, self.slot, [(self.host, self.port)], self.socket_connect_timeout)
        await super().connect_check_health(check_health=check_health, retry_socket_connect=retry_socket_connect)

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except redis.ResponseError as exc:
            if str(exc).startswith(_MOVED):
                await self.disconnect()
                raise SlotMoved(f"slot {self.slot} moved: {exc}") from None
            raise


class _ClusterRedis(redis.Redis):
    def close(self) -> None:
        super().close()
        self.connection_pool.disconnect()  # the pool is ours: close it with the client


class _AsyncClusterRedis(redis.asyncio.Redis):
    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool=True)


def _slot(slot_key: str | None) -> int:
    tag = hash_tag(slot_key or "")
    if tag is None:
        raise ConfigError(
            f"Redis Cluster needs every key of a prefix in one slot: use a prefix with a hash tag, "
            f"e.g. prefix='{{{slot_key or 'backstage'}}}' (got {slot_key!r}); other SDKs sharing the "
            "queues must use the same prefix")
    return int(key_slot(tag.encode()))


def _kwargs(t: ClusterTarget, socket_timeout: float | None) -> dict[str, Any]:
    host, port = t.nodes[0]
    return {"host": host, "port": port, "username": t.username, "password": t.password,
            "socket_connect_timeout": 5.0, "socket_timeout": socket_timeout}


def sync_client(url: str, slot_key: str | None, socket_timeout: float | None) -> "redis.Redis":
    t = parse_cluster_url(url)
    slot = _slot(slot_key)
    if t.tls:
        raise ConfigError("rediss+cluster:// is not supported yet: use TLS-terminating nodes or redis+cluster://")
    pool = redis.ConnectionPool(connection_class=_SlotConnection, cluster=t, slot=slot,
                                **_kwargs(t, socket_timeout))
    client = _ClusterRedis(connection_pool=pool)
    client.backstage_where = t.describe(slot)  # type: ignore[attr-defined]
    return client


def async_client(url: str, slot_key: str | None, socket_timeout: float | None) -> "redis.asyncio.Redis":
    t = parse_cluster_url(url)
    slot = _slot(slot_key)
    if t.tls:
        raise ConfigError("rediss+cluster:// is not supported yet: use TLS-terminating nodes or redis+cluster://")
    pool = redis.asyncio.ConnectionPool(connection_class=_AsyncSlotConnection, cluster=t, slot=slot,
                                        **_kwargs(t, socket_timeout))
    client = _AsyncClusterRedis(connection_pool=pool)
    client.backstage_where = t.describe(slot)  # type: ignore[attr-defined]
    return client
