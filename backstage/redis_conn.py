"""Redis connections: URL resolution, the version check, error translation.

Every Redis client Backstage makes (producer, async producer, master, CLI)
comes from here, so connection errors read the same everywhere: they name
``host:port`` (or the socket path) and never the password.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

import redis
import redis.asyncio

from .errors import BrokerError, ConfigError, RedisUnavailable, RedisVersionError

__all__ = [
    "resolve_url",
    "sync_client",
    "async_client",
    "endpoint",
    "check_version",
    "translate_errors",
    "translate",
    "MIN_VERSION",
]

MIN_VERSION = (6, 2, 0)
DEFAULT_URL = "redis://localhost:6379/0"


def resolve_url(url: str | None) -> str:
    """The URL to use: ``url``, else $BACKSTAGE_REDIS_URL, else $REDIS_URL, else localhost."""
    if url is None:
        url = os.environ.get("BACKSTAGE_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_URL
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"redis_url={url!r}: expected a URL like redis://host:6379/0 or unix:///path/redis.sock")
    return url


def _pool_kwargs(socket_timeout: float | None) -> dict[str, Any]:
    return {"decode_responses": False, "socket_connect_timeout": 5.0, "socket_timeout": socket_timeout}


def sync_client(url: str, *, socket_timeout: float | None = 30.0) -> "redis.Redis":
    try:
        return redis.Redis.from_url(url, **_pool_kwargs(socket_timeout))
    except ValueError as exc:
        raise ConfigError(f"redis_url: {exc}") from None


def async_client(url: str, *, socket_timeout: float | None = 30.0) -> "redis.asyncio.Redis":
    try:
        return redis.asyncio.Redis.from_url(url, **_pool_kwargs(socket_timeout))
    except ValueError as exc:
        raise ConfigError(f"redis_url: {exc}") from None


def endpoint(client: Any) -> str:
    """``host:port`` (or the unix socket path) of a redis-py client; no credentials."""
    kw = client.connection_pool.connection_kwargs
    if "path" in kw:
        return f"unix:{kw['path']}"
    return f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"


def translate(exc: BaseException, where: str) -> BrokerError:
    """Our error for a redis-py exception; the message never carries a password."""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError)):
        detail = type(exc).__name__
        text = str(exc)
        # redis-py messages name host:port only; strip anything URL-shaped just in case
        if "@" not in text:
            detail = f"{detail}: {text}"
        return RedisUnavailable(f"cannot reach Redis at {where} ({detail}); is redis-server running?")
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
