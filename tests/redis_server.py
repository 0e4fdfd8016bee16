"""A private redis-server for tests: free port, temp dir, optional AOF; kill and restart."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process owned by the test session.

    ``aof=True`` turns on the append-only file with ``appendfsync always`` so
    that a SIGKILL loses nothing that was acknowledged.
    """

    def __init__(self, directory: Path, *, aof: bool = False, port: int | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not on PATH: install it (apt-get install redis-server) "
                "or run `docker compose up -d` and point BACKSTAGE_REDIS_URL at it"
            )
        self.binary = binary
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.aof = aof
        self.port = port or free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
            "--save", "", "--daemonize", "no", "--logfile", str(self.dir / "redis.log"),
            "--appendonly", "yes" if self.aof else "no",
        ]
        if self.aof:
            args += ["--appendfsync", "always"]
        args += list(self.extra)
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        r = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        try:
            while True:
                try:
                    if r.ping():
                        # a server loading its AOF answers LOADING until done
                        if r.info("persistence").get("loading", 0) == 0:
                            return self
                except (redis.ConnectionError, redis.BusyLoadingError):
                    pass
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}; see {self.dir / 'redis.log'}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not start in {timeout}s")
                time.sleep(0.01)
        finally:
            r.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown save, like a crash."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> "RedisServer":
        self.kill()
        return self.start()

    def client(self) -> "redis.Redis":
        return redis.Redis(host="127.0.0.1", port=self.port)
