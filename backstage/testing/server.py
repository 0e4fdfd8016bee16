"""A private ``redis-server`` for tests: a temp dir, a free port (or a unix socket), no persistence.

Used by the pytest plugin's ``backstage_redis`` fixture; runs in the test process.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

__all__ = ["RedisProcess"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    """One ``redis-server`` owned by the caller; ``unix=True`` listens on a socket file only."""

    def __init__(self, directory: str | Path | None = None, *, unix: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH: install it (apt-get install redis-server, "
                               "brew install redis) to use backstage.testing's Redis fixture")
        self.binary = binary
        self._tmp = None if directory is not None else tempfile.TemporaryDirectory(prefix="backstage-redis-")
        self.dir = Path(directory if directory is not None else self._tmp.name)  # type: ignore[union-attr]
        self.dir.mkdir(parents=True, exist_ok=True)
        self.unix = unix
        self.port = 0 if unix else _free_port()
        self.socket_path = self.dir / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL producers and workers use."""
        return f"unix://{self.socket_path}" if self.unix else f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs: Any) -> "redis.Redis":
        """An administrative client (bytes replies)."""
        if self.unix:
            return redis.Redis(unix_socket_path=str(self.socket_path), **kwargs)
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def start(self, timeout: float = 10.0) -> "RedisProcess":
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", str(self.dir / "redis.log")]
        if self.unix:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r = self.client(socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if r.ping():
                        return self
                except (redis.ConnectionError, redis.BusyLoadingError):
                    pass
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}; see {self.dir / 'redis.log'}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer within {timeout}s")
                time.sleep(0.01)
        finally:
            r.close()

    def flush(self) -> None:
        """FLUSHALL: every test starts from an empty server."""
        r = self.client()
        try:
            r.flushall()
        finally:
            r.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
