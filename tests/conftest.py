"""Fixtures: a private redis-server per session, a fresh key prefix per test,
and function-scoped servers with AOF for fault tests."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis

from backstage import Client
from backstage.protocol.keys import Keys

from .redis_server import RedisServer


def pytest_configure(config: pytest.Config) -> None:
    if shutil.which("redis-server") is None:
        raise pytest.UsageError(
            "redis-server is not on PATH. The tests start their own private redis-server: "
            "install it with `apt-get install redis-server` (or run ./scripts/test, which does it on CI)."
        )


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def r(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture
def prefix() -> str:
    return f"bt{uuid.uuid4().hex[:12]}"


@pytest.fixture
def keys(prefix: str) -> Keys:
    return Keys(prefix)


@pytest.fixture
def client(redis_url: str, prefix: str) -> Iterator[Client]:
    c = Client(redis_url, prefix=prefix)
    yield c
    c.close()


@pytest.fixture
def aof_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test's own, with AOF on, that the test may kill and restart."""
    server = RedisServer(tmp_path / "redis-aof", aof=True).start()
    yield server
    server.kill()


@pytest.fixture
def start_worker(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Any]:
    """Factory: ``start_worker("-c", "2", url=..., env=...)`` runs the real backstage-prefork."""
    from .workers import Worker

    started: list[Worker] = []

    def start(*args: str, url: str | None = None, app: str = "apps.jobs",
              env: dict[str, str] | None = None) -> Worker:
        w = Worker(url or redis_url, prefix, tmp_path / f"worker-{len(started)}.log", *args, app=app, env=env)
        started.append(w)
        return w

    yield start
    for w in started:
        w.cleanup()
