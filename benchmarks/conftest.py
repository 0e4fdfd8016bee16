"""Fixtures for the pytest-benchmark micro benchmarks.

One private redis-server per benchmark session (free TCP port on 127.0.0.1,
a temporary directory, no persistence: ``--save "" --appendonly no``), also
listening on a unix socket so each benchmark runs over both transports.
The server comes from ``tests/redis_server.py`` (imported, not copied).

Run by path, with benchmarking switched back on (pyproject's addopts say
``--benchmark-disable`` and ``testpaths = tests``)::

    .venv/bin/pytest benchmarks/ --benchmark-enable
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil
import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.redis_server import RedisServer  # noqa: E402

from backstage import Client  # noqa: E402

_LINES: list[str] = []
_OTHER: list[str] = []


@dataclass(frozen=True)
class BenchRedis:
    """The session's redis-server and its two addresses."""

    server: RedisServer
    socket_path: Path

    @property
    def tcp_url(self) -> str:
        return self.server.url

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket_path}?db=0"

    def url(self, transport: str) -> str:
        return self.tcp_url if transport == "tcp" else self.unix_url


def pytest_configure(config: pytest.Config) -> None:
    if shutil.which("redis-server") is None:
        raise pytest.UsageError("redis-server is not on PATH: the benchmarks start their own (apt-get install redis-server)")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _LINES:
        terminalreporter.section("backstage throughput (median round)")
        for line in _LINES:
            terminalreporter.write_line(line)
        if _OTHER:
            terminalreporter.write_line(_OTHER[0])


def _machine_busy() -> float:
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - sum(getattr(t, f, 0.0) for f in ("iowait", "guest", "guest_nice")))


def _own_cpu(server: RedisServer) -> float:
    total = 0.0
    for p in (psutil.Process(), psutil.Process(server.proc.pid)):  # type: ignore[union-attr]
        t = p.cpu_times()
        total += t.user + t.system
    return total


@pytest.fixture(scope="session")
def bench_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BenchRedis]:
    # unix socket paths are limited to ~107 bytes: keep this one short
    sock_dir = Path(tempfile.mkdtemp(prefix="bsbench-"))
    sock = sock_dir / "redis.sock"
    server = RedisServer(tmp_path_factory.mktemp("redis"),
                         extra=("--unixsocket", str(sock), "--unixsocketperm", "700"))
    server.start()
    t0, busy0, own0 = time.monotonic(), _machine_busy(), _own_cpu(server)
    try:
        yield BenchRedis(server, sock)
    finally:
        # how much CPU the rest of the machine used meanwhile: a busy box disturbs the figures
        other = _machine_busy() - busy0 - (_own_cpu(server) - own0)
        wall = time.monotonic() - t0
        _OTHER[:] = [f"other processes on this machine used {100 * max(0.0, other) / wall:.0f} % of a core "
                     f"during the benchmarks ({os.cpu_count()} cores)"]
        server.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)


@pytest.fixture(params=["tcp", "unix"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def redis_url(bench_redis: BenchRedis, transport: str) -> str:
    return bench_redis.url(transport)


@pytest.fixture
def prefix() -> str:
    return f"bb{uuid.uuid4().hex[:10]}"


@pytest.fixture
def r(bench_redis: BenchRedis) -> Iterator[redis.Redis]:
    """A plain redis-py client for clean-up and checks (TCP)."""
    client = bench_redis.server.client()
    yield client
    client.close()


@pytest.fixture
def client(redis_url: str, prefix: str, r: redis.Redis) -> Iterator[Client]:
    """A producer over the test's transport, already connected, version-checked
    and with enqueue.lua loaded, so none of that lands in a timed round."""
    c = Client(redis_url, prefix=prefix)
    c.ping()
    yield c
    c.close()
    drop_prefix(r, prefix)


def drop_prefix(r: redis.Redis, prefix: str) -> int:
    """UNLINK every key under ``prefix:`` (streams, dedupe markers, ...)."""
    n = 0
    batch: list[bytes] = []
    for key in r.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            n += r.unlink(*batch)
            batch.clear()
    if batch:
        n += r.unlink(*batch)
    return n


@pytest.fixture
def wipe(r: redis.Redis, prefix: str) -> Callable[..., None]:
    """Teardown for ``benchmark.pedantic``: delete the round's keys so memory stays flat."""

    def wipe_(*_args: Any, **_kwargs: Any) -> None:
        drop_prefix(r, prefix)

    return wipe_


@pytest.fixture
def report_rate(request: pytest.FixtureRequest) -> Callable[[Any, int], float | None]:
    """``report_rate(benchmark, jobs_per_round)``: put jobs/s (from the median
    round) in ``extra_info`` and print a line; None when benchmarking is off."""

    def report(benchmark: Any, jobs_per_round: int) -> float | None:
        meta = getattr(benchmark, "stats", None)
        if meta is None:  # --benchmark-disable: the target ran once, nothing was timed
            return None
        stats = meta.stats
        rate = jobs_per_round / stats.median
        best = jobs_per_round / stats.min
        benchmark.extra_info["jobs_per_round"] = jobs_per_round
        benchmark.extra_info["jobs_per_s"] = round(rate)
        benchmark.extra_info["jobs_per_s_best"] = round(best)
        line = (f"{request.node.name}: {rate:,.0f} jobs/s (median of {stats.rounds} rounds of "
                f"{jobs_per_round:,} jobs; best round {best:,.0f} jobs/s)")
        print(line)
        _LINES.append(line)
        return rate

    return report
