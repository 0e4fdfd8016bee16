"""A real ``backstage-prefork`` for tests: start it for an app, drain the queues, stop it.

:func:`drain` starts the worker as a subprocess (real fork, real pipes,
real signals), waits until the app's ready streams and ``P:scheduled``
are empty, reads the master's own counters from its metrics endpoint,
collects the dead letters written meanwhile, and stops it with SIGTERM.

Runs in the test process; the worker imports the app by its module name.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import redis

from ..connections import redis_conn
from ..protocol.keys import PRIORITIES

if TYPE_CHECKING:
    from ..app import Backstage

__all__ = ["WorkerProcess", "DrainResult", "drain", "app_spec"]

_SAMPLE = re.compile(r'^backstage_jobs_(processed|failed|retried|dead_lettered)_total\{(.*)\} ([0-9.e+]+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def app_spec(app: "Backstage") -> str:
    """``module:attr`` naming ``app``, for the worker's command line."""
    modules = [t.func.__module__ for t in app.tasks.values()]
    candidates = [m for m in dict.fromkeys(modules) if m in sys.modules] + list(sys.modules)
    for name in candidates:
        mod = sys.modules.get(name)
        if mod is None or name == "__main__":
            continue
        for attr, value in list(vars(mod).items()):
            if value is app:
                return f"{name}:{attr}"
    raise LookupError("this Backstage app is not a global of any imported module (other than __main__): "
                      "define it at module level so that backstage-prefork can import it")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class DrainResult:
    """What a drained worker did, from its own counters (by task name)."""

    processed: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    retried: dict[str, int] = field(default_factory=dict)
    dead: dict[str, int] = field(default_factory=dict)
    #: dead-letter entries written while it ran (decoded field maps)
    dead_letters: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        """Jobs whose handler returned."""
        return sum(self.processed.values())


class WorkerProcess:
    """One ``backstage-prefork`` subprocess serving ``app`` on ``redis_url``.

    ``queues`` defaults to the priorities plus every custom queue of the
    app's tasks. Extra command-line options go in ``args``.
    """

    def __init__(self, app: "Backstage", redis_url: str, *, concurrency: int = 2,
                 queues: Sequence[str] | None = None, args: Sequence[str] = (),
                 log_path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.app = app
        self.redis_url = redis_url
        if queues is None:
            queues = list(PRIORITIES) + sorted({t.queue for t in app.tasks.values()
                                                if t.queue and t.queue not in PRIORITIES})
        self.queues = list(queues)
        self.metrics_port = _free_port()
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="backstage-worker-", suffix=".log")
            os.close(fd)
            log_path = name
        self.log_path = Path(log_path)
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        full_env["BACKSTAGE_REDIS_URL"] = redis_url  # the app's own client in the children, too
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        binary = Path(sys.executable).with_name("backstage-prefork")
        cmd = [str(binary)] if binary.exists() else [sys.executable, "-m", "backstage.prefork.cli"]
        cmd += ["--concurrency", str(concurrency), "--queues", ",".join(self.queues), "--redis-url", redis_url,
                "--prefix", app.prefix, "--group", app.group, "--metrics-port", str(self.metrics_port),
                "--metrics-host", "127.0.0.1", "--grace-period", "10", *args, app_spec(app)]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, env=full_env, stdout=self._log, stderr=subprocess.STDOUT)
        self._redis = redis_conn.sync_client(redis_url)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        """Everything the worker wrote so far."""
        return self.log_path.read_text(errors="replace")

    def _left(self) -> int:
        """Entries in the app's ready streams plus members of its scheduled set."""
        pipe = self._redis.pipeline(transaction=False)
        for q in self.queues:
            pipe.xlen(self.app.keys.stream(q))
        pipe.zcard(self.app.keys.scheduled)
        return sum(int(n) for n in pipe.execute())

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Return once the queues and the scheduled set are empty (every job
        settled: an entry leaves its stream when its outcome is committed)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"backstage-prefork exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            if self._left() == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"backstage-prefork did not drain in {timeout}s ({self._left()} entries left):\n"
                                   f"{self.log()[-4000:]}")
            time.sleep(0.01)

    def counters(self) -> DrainResult:
        """The master's job counters, read from its metrics endpoint."""
        deadline = time.monotonic() + 10.0
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
                    text = resp.read().decode()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        out = DrainResult()
        names = {"processed": out.processed, "failed": out.failed, "retried": out.retried, "dead_lettered": out.dead}
        for line in text.splitlines():
            m = _SAMPLE.match(line)
            if m:
                labels = dict(_LABEL.findall(m.group(2)))
                task = labels.get("task", "")
                counts = names[m.group(1)]
                counts[task] = counts.get(task, 0) + int(float(m.group(3)))
        return out

    def drain(self, timeout: float = 30.0) -> DrainResult:
        """Wait until nothing is left to run, then report what ran (the worker keeps running)."""
        t0 = time.monotonic()
        since = self._redis.time()
        since_ms = int(since[0]) * 1000 + int(since[1]) // 1000
        self.wait_idle(timeout)
        result = self.counters()
        result.seconds = time.monotonic() - t0
        result.dead_letters = self._dead_letters(since_ms)
        return result

    def _dead_letters(self, since_ms: int) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        for q in self.queues:
            entries: Any = self._redis.xrange(self.app.keys.dead_letter(q), min=f"{since_ms}-0")
            for _id, fields in entries:
                out.append({k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()})
        return out

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code (0: stopped cleanly)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.close()

    def close(self) -> None:
        """Kill the worker if it still runs and release its resources."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
        self._redis.close()

    def __enter__(self) -> "WorkerProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc.poll() is None:
            self.stop()
        else:
            self.close()


def drain(app: "Backstage", redis_url: str, *, concurrency: int = 2, timeout: float = 30.0,
          queues: Sequence[str] | None = None, args: Sequence[str] = ()) -> DrainResult:
    """Run the real ``backstage-prefork`` for ``app`` until its queues and
    scheduled set are empty; stop it; return what ran.

    Raises TimeoutError (with the worker's log) when jobs are still left
    after ``timeout`` seconds, RuntimeError when the worker exits early, and
    LookupError when the app is not importable by module name.
    """
    with WorkerProcess(app, redis_url, concurrency=concurrency, queues=queues, args=args) as w:
        result = w.drain(timeout)
        code = w.stop()
        if code != 0:
            raise RuntimeError(f"backstage-prefork stopped with exit code {code}:\n{w.log()[-4000:]}")
        try:
            os.unlink(w.log_path)
        except OSError:
            pass
        return result
