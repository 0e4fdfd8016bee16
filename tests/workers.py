"""Run the real ``backstage-prefork`` as a subprocess for process tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import psutil
import redis

from .helpers import wait_until

BIN = Path(sys.executable).with_name("backstage-prefork")
TESTS = Path(__file__).resolve().parent


class Worker:
    """One backstage-prefork process with its log file."""

    def __init__(self, url: str, prefix: str, log_path: Path, *args: str, app: str = "apps.jobs",
                 env: dict[str, str] | None = None) -> None:
        self.url = url
        self.prefix = prefix
        self.log_path = log_path
        full_env = dict(os.environ)
        full_env.update({"BT_REDIS_URL": url, "BT_PREFIX": prefix, "PYTHONPATH": str(TESTS),
                         "PYTHONUNBUFFERED": "1"})
        full_env.update(env or {})
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen([str(BIN), *args, app], env=full_env, cwd=str(TESTS),
                                     stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []

    def wait_children(self, n: int, timeout: float = 10.0) -> list[psutil.Process]:
        def have() -> list[psutil.Process] | None:
            kids = self.children()
            return kids if len(kids) == n else None

        return wait_until(have, timeout,
                          message=lambda: f"{n} children (have {len(self.children())}); log:\n{self.log()[-3000:]}")

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the master (its children exit when their pipes close)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def cleanup(self) -> None:
        kids = self.children()
        self.kill()
        for k in kids:
            try:
                k.kill()
            except psutil.NoSuchProcess:
                pass
        self._log.close()


def ledger(r: redis.Redis, prefix: str) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in r.lrange(f"{prefix}:ledger", 0, -1)]


def pending(r: redis.Redis, stream: str, group: str = "backstage-workers") -> int:
    try:
        return int(r.xpending(stream, group)["pending"])
    except redis.ResponseError:
        return 0
