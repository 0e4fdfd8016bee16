"""pytest plugin: a private Redis and a real worker for tests of Backstage apps.

Loaded by its ``pytest11`` entry point once backstage is installed (or
explicitly with ``-p backstage.testing.pytest``). Fixtures:

- ``backstage_redis`` — a :class:`~backstage.testing.RedisProcess` started
  once per session (free port; ``--backstage-redis-unix`` for a unix
  socket), flushed before each test. ``backstage_redis.url`` is its URL;
  ``backstage_redis.connect(app)`` points an app's producer at it.
- ``backstage_redis_server`` — the same server, session-scoped and never
  flushed (for session or module fixtures that need its URL early).
- ``backstage_worker`` — a factory: ``backstage_worker(app, concurrency=2)``
  starts the real ``backstage-prefork`` for ``app`` on that Redis and
  returns a :class:`~backstage.testing.WorkerProcess` (``.drain()``,
  ``.log()``, ``.stop()``); every worker it started is stopped after the test.

The session server is started only by a test that asks for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest

from .server import RedisProcess
from .worker import WorkerProcess

if TYPE_CHECKING:
    from ..app import Backstage

__all__ = ["BackstageRedis", "backstage_redis", "backstage_redis_server", "backstage_worker"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("backstage")
    group.addoption("--backstage-redis-unix", action="store_true", default=False,
                    help="backstage_redis listens on a unix socket instead of a TCP port")


class BackstageRedis(RedisProcess):
    """The session's Redis, with a helper to point apps at it."""

    def connect(self, app: "Backstage") -> "Backstage":
        """Make ``app`` enqueue to this server (its client is re-made); returns the app."""
        if app._client is not None:
            app._client.close()
        app._client = None
        app.redis_url = self.url
        return app


@pytest.fixture(scope="session")
def backstage_redis_server(request: pytest.FixtureRequest,
                            tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackstageRedis]:
    """The session's private redis-server (started on first use, not flushed)."""
    server = BackstageRedis(tmp_path_factory.mktemp("backstage-redis"),
                            unix=bool(request.config.getoption("--backstage-redis-unix")))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def backstage_redis(backstage_redis_server: BackstageRedis) -> BackstageRedis:
    """A private redis-server for this session, empty at the start of each test."""
    backstage_redis_server.flush()
    return backstage_redis_server


@pytest.fixture
def backstage_worker(backstage_redis: BackstageRedis,
                     tmp_path: Any) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory starting the real backstage-prefork for an app on ``backstage_redis``."""
    started: list[WorkerProcess] = []

    def start(app: "Backstage", *, concurrency: int = 2, queues: Any = None, args: Any = (),
              env: dict[str, str] | None = None) -> WorkerProcess:
        w = WorkerProcess(app, backstage_redis.url, concurrency=concurrency, queues=queues, args=args,
                          log_path=tmp_path / f"backstage-worker-{len(started)}.log", env=env)
        started.append(w)
        return w

    yield start
    for w in started:
        if w.proc.poll() is None:
            w.stop()
        else:
            w.close()
