"""Redis connections: URL resolution, TLS, Sentinel, the version check,
error translation.

Every Redis client Backstage makes (producer, async producer, master, CLI)
comes from here, so connection errors read the same everywhere: they name
``host:port``, the unix socket or ``sentinel:<service>@<sentinels>`` and
never a password. URLs understood:

- ``redis://[user:pass@]host:port/db``, ``unix:///path/redis.sock``;
- ``rediss://…`` (TLS) with ``?ssl_ca_certs=…&ssl_certfile=…&ssl_keyfile=…
  &ssl_cert_reqs=required|optional|none`` (or :class:`TlsSettings`);
- ``redis+sentinel://[user:pass@]h1:26379,h2:26379/<service>[/<db>]`` and
  ``rediss+sentinel://…``: the sentinels are asked for the master of
  ``<service>``, again at every new connection, so clients follow a
  failover. The URL's ``user:pass`` authenticate to the master (the data
  node); ``?sentinel_username=…&sentinel_password=…`` to the sentinels.
  TLS options apply to both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl as _ssl
from dataclasses import dataclass, field
from typing import Any, Iterator
from urllib.parse import parse_qsl, unquote, urlencode

import redis
import redis.asyncio
import redis.asyncio.connection
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.backoff
import redis.connection
import redis.retry
import redis.sentinel

from . import cluster
from ..errors import BrokerError, ConfigError, RedisUnavailable, RedisVersionError

__all__ = [
    "TlsSettings",
    "SentinelTarget",
    "resolve_url",
    "redact_url",
    "with_tls",
    "parse_sentinel_url",
    "sync_client",
    "async_client",
    "endpoint",
    "check_version",
    "translate_errors",
    "translate",
    "MIN_VERSION",
    "SENTINEL_SCHEMES",
]

MIN_VERSION = (6, 2, 0)
DEFAULT_URL = "redis://localhost:6379/0"
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SENTINEL_PORT = 26379
_TLS_SCHEMES = ("rediss", "rediss+sentinel")
_CERT_REQS = ("required", "optional", "none")
_FILE_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_SSL_OPTIONS = (*_FILE_OPTIONS, "ssl_cert_reqs", "ssl_check_hostname")
_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password", *_SSL_OPTIONS)


@dataclass(frozen=True)
class TlsSettings:
    """TLS files for ``rediss://`` and ``rediss+sentinel://`` connections.

    Args:
        ca: PEM file of the CA that signed the server's certificate
            (default: the system's trust store).
        cert: PEM client certificate, for servers that check clients
            (``tls-auth-clients yes|optional``); needs ``key``.
        key: PEM private key of ``cert``.

    Paths may be ``str`` or ``os.PathLike``. Each field set here replaces the same option in the URL
    (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``).
    """

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        for name in ("ca", "cert", "key"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (str, os.PathLike)) or not str(value)):
                raise ConfigError(f"TlsSettings.{name}={value!r}: expected the path of a PEM file")
            if value is not None and not isinstance(value, str):
                object.__setattr__(self, name, os.fspath(value))
        if (self.cert is None) != (self.key is None):
            given, missing = ("cert", "key") if self.key is None else ("key", "cert")
            raise ConfigError(f"TlsSettings: {given} given without {missing}: a client certificate needs both")

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.ca, self.cert, self.key))

    def query(self) -> dict[str, str]:
        """The URL query options these settings stand for."""
        out = {}
        for name, option in (("ca", "ssl_ca_certs"), ("cert", "ssl_certfile"), ("key", "ssl_keyfile")):
            value = getattr(self, name)
            if value is not None:
                out[option] = value
        return out


@dataclass(frozen=True)
class SentinelTarget:
    """A parsed ``redis+sentinel://`` URL (see the module docstring)."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    tls: bool = False
    ssl: tuple[tuple[str, Any], ...] = ()

    def describe(self) -> str:
        """``sentinel:<service>@h1:p1,h2:p2`` (no credentials)."""
        return f"sentinel:{self.service}@{_hosts(self.sentinels)}"


def _hosts(pairs: Any) -> str:
    return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in pairs)


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def redact_url(url: str) -> str:
    """``url`` with its password(s) replaced by ``***``, for messages."""
    if not isinstance(url, str):
        return repr(type(url))
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    base, qsep, query = rest.partition("?")
    netloc, slash, path = base.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}{':***' if colon else ''}@{hosts}"
    if qsep:
        pairs = [(k, "***" if "password" in k.lower() else v) for k, v in parse_qsl(query, keep_blank_values=True)]
        query = urlencode(pairs, safe="*/")
    return f"{head}{sep}{netloc}{slash}{path}{qsep}{query}"


def resolve_url(url: str | None) -> str:
    """The URL to use: ``url``, else $BACKSTAGE_REDIS_URL, else $REDIS_URL, else localhost."""
    if url is None:
        url = os.environ.get("BACKSTAGE_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_URL
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"redis_url={redact_url(url) if isinstance(url, str) else url!r}: expected a URL like "
            "redis://host:6379/0, rediss://host:6380/0, unix:///path/redis.sock or "
            "redis+sentinel://host:26379/mymaster"
        )
    return url


def with_tls(url: str, tls: TlsSettings | None) -> str:
    """``url`` with the options of ``tls`` in its query (they replace the URL's own).

    Raises:
        ConfigError: ``tls`` is set but ``url`` is not ``rediss://`` or ``rediss+sentinel://``.
    """
    if not tls:
        return url
    scheme = _scheme(url)
    if scheme not in _TLS_SCHEMES:
        raise ConfigError(
            f"TLS options (CA, client certificate) were given but the Redis URL is {scheme or '?'}://…: "
            "use rediss://host:port (or rediss+sentinel://…) for TLS, or drop the TLS options"
        )
    base, _, query = url.partition("?")
    given = tls.query()
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in given]
    pairs += list(given.items())
    return f"{base}?{urlencode(pairs)}"


def _check_userinfo(url: str) -> None:
    """A raw '/', '?' or '#' in the password ends the host part early: the
    rest of the password would then be read as a path, port or service name
    (and could be echoed in messages). Refuse such a URL."""
    if _scheme(url) == "unix":
        return
    rest = url.split("://", 1)[1]
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    if "@" in rest[cut:]:
        raise ConfigError("redis_url: the user name or password holds a '/', '?' or '#': percent-encode "
                          "them in the URL (%2F, %3F, %23)")


def _ssl_options(options: dict[str, str], scheme: str) -> dict[str, Any]:
    """Checked TLS keyword arguments for redis-py from URL query options."""
    ssl: dict[str, Any] = {k: v for k, v in options.items() if k in _SSL_OPTIONS}
    if ssl and scheme not in _TLS_SCHEMES:
        raise ConfigError(f"redis_url: {', '.join(sorted(ssl))} need a TLS URL (rediss://…), not {scheme}://")
    for name in _FILE_OPTIONS:
        if name in ssl and not os.path.isfile(ssl[name]):
            raise ConfigError(f"redis_url: {name}={ssl[name]}: no such file")
    reqs = ssl.get("ssl_cert_reqs")
    if reqs is not None and reqs not in _CERT_REQS:
        raise ConfigError(f"redis_url: ssl_cert_reqs={reqs!r}: use required, optional or none")
    if "ssl_check_hostname" in ssl:
        flag = ssl["ssl_check_hostname"].lower()
        if flag not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"redis_url: ssl_check_hostname={ssl['ssl_check_hostname']!r}: use true or false")
        ssl["ssl_check_hostname"] = flag in ("true", "1", "yes")
    return ssl


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Parse ``redis+sentinel://[user:pass@]h1:p1,h2:p2/<service>[/<db>][?options]``.

    Raises:
        ConfigError naming what is wrong (never the password).
    """
    scheme = _scheme(url)
    if scheme not in SENTINEL_SCHEMES:
        raise ConfigError(f"redis_url: {scheme}:// is not a Sentinel URL (redis+sentinel://…)")
    _check_userinfo(url)
    rest = url.split("://", 1)[1].partition("#")[0]
    base, _, query = rest.partition("?")
    netloc, _, path = base.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if colon else None
    sentinels: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):
            host, _, tail = item[1:].partition("]")
            port_text = tail[1:] if tail.startswith(":") else ""
        else:
            host, _, port_text = item.partition(":")
        try:
            port = int(port_text) if port_text else SENTINEL_PORT
        except ValueError:
            raise ConfigError(f"redis_url: sentinel {host!r}: the port must be a number") from None
        if not host or not 0 < port < 65536:
            raise ConfigError(f"redis_url: sentinel {host!r}: expected host:port with a port 1-65535")
        sentinels.append((host, port))
    if not sentinels:
        raise ConfigError("redis_url: a Sentinel URL needs at least one sentinel: redis+sentinel://host:26379/mymaster")
    parts = [unquote(p) for p in path.split("/") if p]
    if not parts or len(parts) > 2:
        raise ConfigError(
            "redis_url: a Sentinel URL names the service after the sentinels, then optionally the db: "
            "redis+sentinel://host:26379/mymaster/0"
        )
    db = 0
    if len(parts) == 2:
        try:
            db = int(parts[1])
        except ValueError:
            raise ConfigError(f"redis_url: database {parts[1]!r} of the Sentinel URL must be a number") from None
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(_SENTINEL_OPTIONS))
    if unknown:
        raise ConfigError(f"redis_url: unknown Sentinel URL option(s) {', '.join(unknown)}; "
                          f"known: {', '.join(_SENTINEL_OPTIONS)}")
    ssl = _ssl_options(options, scheme)
    return SentinelTarget(
        sentinels=tuple(sentinels), service=parts[0], db=db, username=username, password=password,
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
        tls=scheme == "rediss+sentinel", ssl=tuple(ssl.items()),
    )


def _pool_kwargs(socket_timeout: float | None) -> dict[str, Any]:
    return {"decode_responses": False, "socket_connect_timeout": 5.0, "socket_timeout": socket_timeout}


def _sentinel_kwargs(t: SentinelTarget, socket_timeout: float | None, *,
                     asyncio: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(keyword arguments of the master's connections, those of the sentinels')."""
    ssl = dict(t.ssl)
    if asyncio:
        conn_class: type = _AsyncMasterSSLConnection if t.tls else _AsyncMasterConnection
        no_retry: Any = redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0)
    else:
        conn_class = _MasterSSLConnection if t.tls else _MasterConnection
        no_retry = redis.retry.Retry(redis.backoff.NoBackoff(), 0)
    master = {**_pool_kwargs(socket_timeout), "db": t.db, "username": t.username, "password": t.password,
              "connection_class": conn_class, **ssl}
    # no retries on a sentinel: discovery moves on to the next one (redis-py's default of
    # 10 retries with backoff would stall every reconnect for seconds while one is down)
    sentinel = {"socket_connect_timeout": 5.0, "socket_timeout": min(socket_timeout or 5.0, 5.0),
                "username": t.sentinel_username, "password": t.sentinel_password, "retry": no_retry,
                "ssl": t.tls, **ssl}
    return master, sentinel


def _not_master(reply: Any, host: str, port: int) -> str | None:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    for line in text.splitlines():
        if line.startswith("role:"):
            role = line[5:].strip()
            return None if role == "master" else f"{host}:{port} is a {role}, not the master; asking the sentinels again"
    return None


class _MasterConnection(redis.sentinel.SentinelManagedConnection):
    """A connection to the service's master that asks the sentinels at every
    (re)connect, whichever way redis-py gets there, and checks that the node
    it reached says ``role:master``.

    Two gaps of redis-py's ``SentinelManagedConnection`` are closed here:

    - only its ``connect()`` asks the sentinels; ``send_packed_command`` on a
      closed connection reconnects through ``connect_check_health`` to the
      last address (or localhost:6379 if it never connected). Connections
      kept outside the pool (the master's exchange connection, a pinned
      producer connection) take that path after an error, and would never
      leave a dead or demoted master;
    - for about a second after a promotion the sentinels still name the old
      master, which may be a replica by then: redis-py notices that on a
      write (READONLY), but a blocking XREAD is a read and would sit on the
      replica. INFO is already needed for the version check, so the role
      check costs no extra ACL permission.
    """

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if not self._sock:
            self.connect()  # type: ignore[no-untyped-call]  # → connect_to(the master the sentinels name)

    def connect_to(self, address: Any) -> None:
        self.host, self.port = address
        # the plain TCP/TLS connect, skipping our override above (it would recurse)
        super(redis.sentinel.SentinelManagedConnection, self).connect_check_health(
            check_health=self.connection_pool.check_connection, retry_socket_connect=False)
        if self.connection_pool.is_master:
            self.send_command("INFO", "replication", check_health=False)  # type: ignore[no-untyped-call]
            why = _not_master(self.read_response(), *address)
            if why is not None:
                self.disconnect()  # type: ignore[no-untyped-call]
                raise redis.ConnectionError(why)


_TLS_HINT = ("is that port plain-text Redis? rediss:// needs the server's TLS port (tls-port); "
             "for a plain-text port use redis://")


class _TlsConnection(redis.connection.SSLConnection):
    """A TLS connection whose handshake is bounded by the connect timeout.

    redis-py runs the handshake under the (long) command timeout; a plain-text
    Redis never answers a ClientHello, so ``rediss://`` to its port would hang
    for the whole command timeout and then blame the network. Here it fails
    within ``socket_connect_timeout`` and says TLS.
    """

    def _wrap_socket_with_ssl(self, sock: Any) -> Any:
        sock.settimeout(self.socket_connect_timeout)
        try:
            wrapped = super()._wrap_socket_with_ssl(sock)  # type: ignore[no-untyped-call]
        except (TimeoutError, socket.timeout):
            raise redis.ConnectionError(
                f"TLS handshake with {self.host}:{self.port} got no answer within "
                f"{self.socket_connect_timeout:g}s: {_TLS_HINT}") from None
        except _ssl.SSLError as exc:
            if "WRONG_VERSION_NUMBER" in str(exc) or "record layer" in str(exc):
                raise redis.ConnectionError(
                    f"TLS handshake with {self.host}:{self.port} failed ({exc.reason}): {_TLS_HINT}") from None
            raise
        wrapped.settimeout(self.socket_timeout)
        return wrapped


class _AsyncTlsConnection(redis.asyncio.connection.SSLConnection):
    """asyncio twin of :class:`_TlsConnection` (there the connect timeout already
    bounds the handshake; only the message is ours)."""

    async def _connect(self) -> None:
        try:
            await super()._connect()  # type: ignore[no-untyped-call]
        except (TimeoutError, asyncio.TimeoutError):
            raise redis.ConnectionError(
                f"TLS handshake with {self.host}:{self.port} got no answer within "
                f"{self.socket_connect_timeout:g}s: {_TLS_HINT}") from None


class _MasterSSLConnection(_MasterConnection, redis.connection.SSLConnection):
    pass


class _AsyncMasterConnection(redis.asyncio.sentinel.SentinelManagedConnection):
    """asyncio twin of :class:`_MasterConnection`."""

    async def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if not self.is_connected:
            await self.connect()  # type: ignore[no-untyped-call]

    async def connect_to(self, address: Any) -> None:
        self.host, self.port = address
        await super(redis.asyncio.sentinel.SentinelManagedConnection, self).connect_check_health(
            check_health=self.connection_pool.check_connection, retry_socket_connect=False)
        if self.connection_pool.is_master:
            await self.send_command("INFO", "replication", check_health=False)
            why = _not_master(await self.read_response(), *address)
            if why is not None:
                await self.disconnect()
                raise redis.ConnectionError(why)


class _AsyncMasterSSLConnection(_AsyncMasterConnection, redis.asyncio.connection.SSLConnection):
    pass


class _SentinelRedis(redis.Redis):
    """A master client that also closes its sentinel connections."""

    def close(self) -> None:
        try:
            super().close()
        finally:
            getattr(self.connection_pool, "sentinel_manager").close()


class _AsyncSentinelRedis(redis.asyncio.Redis):
    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            await getattr(self.connection_pool, "sentinel_manager").aclose()


def _direct_kwargs(url: str) -> dict[str, Any]:
    """Check the TLS options of a redis://, rediss:// or unix:// URL (redis-py parses the rest)."""
    _check_userinfo(url)
    _, _, query = url.partition("?")
    return _ssl_options(dict(parse_qsl(query.partition("#")[0], keep_blank_values=True)), _scheme(url))


def sync_client(url: str, *, socket_timeout: float | None = 30.0, tls: TlsSettings | None = None,
                slot_key: str | None = None) -> "redis.Redis":
    """A ``redis.Redis`` for ``url`` (see the module docstring), bytes replies.

    ``slot_key`` is the key prefix: with a ``redis+cluster://`` URL the client
    talks to the owner of its hash-tag slot (see :mod:`backstage.connections.cluster`).

    Raises:
        ConfigError: the URL or a TLS option is invalid.
    """
    if _scheme(url) in cluster.CLUSTER_SCHEMES:
        return cluster.sync_client(url, slot_key, socket_timeout)
    url = with_tls(url, tls)
    if _scheme(url) in SENTINEL_SCHEMES:
        t = parse_sentinel_url(url)
        master, sentinel = _sentinel_kwargs(t, socket_timeout, asyncio=False)
        manager = redis.sentinel.Sentinel(list(t.sentinels), sentinel_kwargs=sentinel, **master)  # type: ignore[no-untyped-call]
        client: redis.Redis = manager.master_for(t.service, redis_class=_SentinelRedis)  # type: ignore[no-untyped-call]
        return client
    ssl = _direct_kwargs(url)
    if _scheme(url) == "rediss":
        ssl["connection_class"] = _TlsConnection
    try:
        return redis.Redis.from_url(url, **_pool_kwargs(socket_timeout), **ssl)
    except ValueError as exc:
        raise ConfigError(f"redis_url: {exc}") from None


def async_client(url: str, *, socket_timeout: float | None = 30.0,
                 tls: TlsSettings | None = None, slot_key: str | None = None) -> "redis.asyncio.Redis":
    """asyncio twin of :func:`sync_client`."""
    if _scheme(url) in cluster.CLUSTER_SCHEMES:
        return cluster.async_client(url, slot_key, socket_timeout)
    url = with_tls(url, tls)
    if _scheme(url) in SENTINEL_SCHEMES:
        t = parse_sentinel_url(url)
        master, sentinel = _sentinel_kwargs(t, socket_timeout, asyncio=True)
        manager = redis.asyncio.sentinel.Sentinel(list(t.sentinels), sentinel_kwargs=sentinel, **master)  # type: ignore[no-untyped-call]
        client: redis.asyncio.Redis = manager.master_for(t.service, redis_class=_AsyncSentinelRedis)
        return client
    ssl = _direct_kwargs(url)
    try:
        aclient = redis.asyncio.Redis.from_url(url, **_pool_kwargs(socket_timeout), **ssl)
    except ValueError as exc:
        raise ConfigError(f"redis_url: {exc}") from None
    pool = aclient.connection_pool
    if pool.connection_class is redis.asyncio.connection.SSLConnection:  # the URL's choice wins over kwargs
        pool.connection_class = _AsyncTlsConnection
    return aclient


def endpoint(client: Any) -> str:
    """Where a redis-py client points, without credentials: ``host:port``,
    ``unix:<path>``, ``sentinel:<service>@<sentinel host:port,…>`` or
    ``cluster:<host:port,…>#slot<n>``."""
    where = getattr(client, "backstage_where", None)
    if where is not None:
        return str(where)
    pool = client.connection_pool
    if isinstance(pool, (redis.sentinel.SentinelConnectionPool, redis.asyncio.sentinel.SentinelConnectionPool)):
        kws = [s.connection_pool.connection_kwargs for s in pool.sentinel_manager.sentinels]
        return f"sentinel:{pool.service_name}@{_hosts((kw.get('host', 'localhost'), kw.get('port')) for kw in kws)}"
    kw = pool.connection_kwargs
    if "path" in kw:
        return f"unix:{kw['path']}"
    return f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"


def translate(exc: BaseException, where: str) -> BrokerError:
    """Our error for a redis-py exception; the message never carries a password."""
    if isinstance(exc, redis.AuthenticationError):
        return RedisUnavailable(f"Redis at {where} refused the credentials ({exc}); "
                                "check the username and password in the Redis URL")
    if isinstance(exc, (redis.sentinel.MasterNotFoundError, redis.asyncio.sentinel.MasterNotFoundError)):
        return RedisUnavailable(f"cannot reach Redis at {where}: no sentinel answered with a healthy master "
                                "(are the sentinels running, is the service name right, do they need "
                                "?sentinel_password=, is a failover under way?)")
    text = str(exc)
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError)):
        detail = type(exc).__name__
        # redis-py messages name host:port only; strip anything URL-shaped just in case
        if "@" not in text:
            detail = f"{detail}: {text}"
        hint = "is redis-server running?"
        if "TLS handshake" in text:
            return RedisUnavailable(f"cannot reach Redis at {where}: {text}")
        if "SSL" in text or "certificate" in text.lower():
            hint = ("check the TLS options: the CA file (--tls-ca, ssl_ca_certs) must have signed the "
                    "server's certificate, and a client certificate needs its key")
        return RedisUnavailable(f"cannot reach Redis at {where} ({detail}); {hint}")
    if (isinstance(exc, redis.exceptions.NoPermissionError) or text.startswith("NOPERM")
            or "user executing the script can't" in text):
        return BrokerError(f"Redis at {where} refused the command: {exc} (the Redis user lacks a permission; "
                           "`backstage acl worker` and `backstage acl producer` print the rules each side needs)")
    return BrokerError(f"Redis at {where} refused the command: {exc}")


@contextlib.contextmanager
def translate_errors(where: str) -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise translate(exc, where) from None


def parse_version(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for p in text.split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def check_version(info: dict[Any, Any], where: str) -> tuple[int, ...]:
    """Raise RedisVersionError unless INFO server says 6.2 or newer."""
    raw = info.get("redis_version") or info.get(b"redis_version") or "0"
    if isinstance(raw, bytes):
        raw = raw.decode()
    version = parse_version(str(raw))
    if version < MIN_VERSION:
        raise RedisVersionError(
            f"Redis {raw} at {where} is too old: Backstage needs Redis 6.2 or newer "
            "(it uses XAUTOCLAIM to recover jobs of dead workers); upgrade Redis "
            "or run `docker compose up -d` for Redis 7"
        )
    return version
