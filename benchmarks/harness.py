"""Process plumbing for ``e2e.py``: the worker subprocess, the private
redis-server bundle, drain polling, CPU accounting and py-spy sampling."""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import redis  # noqa: E402

from backstage import Client  # noqa: E402
from backstage.protocol.keys import DEFAULT_GROUP  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

#: the drain is polled (XLEN + XPENDING) every POLL until it is seen to move;
#: then a quarter of the time the rest should take at the rate seen so far,
#: within [POLL_MIN, POLL_MAX]: the end is seen within about a millisecond
#: (a plain 10 ms poll added 5-9 ms, ~1 %, to a CPU run) while the script
#: polls a few times less than every 10 ms (it shares the cores with the worker)
POLL = 0.010
POLL_MIN = 0.001
POLL_MAX = 0.050


class BenchError(RuntimeError):
    pass


# -- processes -------------------------------------------------------------------
def _prefork_command() -> list[str]:
    sibling = Path(sys.executable).with_name("backstage-prefork")
    if sibling.exists():
        return [str(sibling)]
    found = shutil.which("backstage-prefork")
    return [found] if found else [sys.executable, "-m", "backstage.prefork.cli"]


def cpu_seconds(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


def cpu_now(master: psutil.Process, kids: Sequence[psutil.Process], redis_ps: psutil.Process) -> dict[str, float]:
    """CPU seconds so far of each party to a run (this script included) and of the whole machine."""
    return {"master": cpu_seconds(master), "children_total": sum(cpu_seconds(k) for k in kids),
            "redis_server": cpu_seconds(redis_ps), "bench_script_polling": cpu_seconds(psutil.Process()),
            "machine": machine_busy_seconds()}


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each party used between two :func:`cpu_now` readings;
    ``other_processes`` is the rest of what the machine was busy with."""
    used = {who: after[who] - before[who] for who in before if who != "machine"}
    used["other_processes"] = max(0.0, after["machine"] - before["machine"] - sum(used.values()))
    return used


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores; idle and iowait excluded)."""
    t = psutil.cpu_times()
    # guest time is already counted in user/nice on Linux
    not_busy = t.idle + sum(getattr(t, f, 0.0) for f in ("iowait", "guest", "guest_nice"))
    return float(sum(t) - not_busy)


def wait_quiet(max_wait: float, threshold_pct: float = 10.0, need: int = 2) -> float:
    """Wait (up to max_wait s) until the machine has been under threshold_pct busy
    for ``need`` 0.5 s windows in a row; returns the seconds waited."""
    t0 = time.monotonic()
    ok = 0
    psutil.cpu_percent(None)
    while ok < need and time.monotonic() - t0 < max_wait:
        time.sleep(0.5)
        ok = ok + 1 if psutil.cpu_percent(None) < threshold_pct else 0
    return time.monotonic() - t0


def _title(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


class Worker:
    """One ``backstage-prefork`` subprocess in its own session (Ctrl-C reaches
    only this script, which then stops the worker itself)."""

    def __init__(self, url: str, prefix: str, concurrency: int, log_path: Path, *extra: str,
                 env_extra: dict[str, str] | None = None) -> None:
        env = dict(os.environ)
        env.update({
            "BENCH_REDIS_URL": url,
            "BENCH_PREFIX": prefix,
            # the worker imports the same backstage as this script (ROOT), whatever is installed
            "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), str(ROOT), env.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1",
        })
        env.update(env_extra or {})
        for k in [k for k in env if k.startswith("BACKSTAGE_")]:
            del env[k]  # the worker reads its options from BACKSTAGE_*: only ours count
        self.concurrency = concurrency
        self.log_path = log_path
        self._log = open(log_path, "ab")
        cmd = [*_prefork_command(), "-c", str(concurrency), "--log-level", "warning", *extra, "bench_app"]
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=str(HERE), env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.ps = psutil.Process(self.proc.pid)
        self._seen: dict[int, psutil.Process] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def children(self) -> list[psutil.Process]:
        try:
            kids = self.ps.children()
        except psutil.Error:
            return []
        for k in kids:
            self._seen.setdefault(k.pid, k)
        return kids

    def ready_children(self) -> list[psutil.Process] | None:
        """All C children, each past its boot (title no longer "starting")."""
        kids = self.children()
        if len(kids) != self.concurrency:
            return None
        for k in kids:
            t = _title(k)
            if "child" not in t or "starting" in t:
                return None
        return kids

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"backstage-prefork exited with code {self.proc.returncode}; log:\n{self.log_tail()}")

    def wait_ready(self, timeout: float = 30.0) -> list[psutil.Process]:
        deadline = time.monotonic() + timeout
        while True:
            kids = self.ready_children()
            if kids:
                return kids
            self.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"{self.concurrency} ready children not seen within {timeout}s; log:\n{self.log_tail()}")
            time.sleep(0.005)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful), then SIGKILL of the master and every child seen if it hangs."""
        self.children()
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        code = self.proc.poll()
        self.kill()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for k in self._seen.values():
            try:
                if k.is_running():
                    k.kill()
            except psutil.Error:
                pass
        self._log.close()


@dataclass
class Bench:
    """The script's resources, released by :meth:`close` whatever happens."""

    transport: str
    concurrency: int
    tmp: Path
    server: RedisServer
    socket_path: Path
    workers: list[Worker] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}?db=0" if self.transport == "unix" else self.server.url

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def client(self, prefix: str) -> Client:
        c = Client(self.url, prefix=prefix)
        c.ping()
        return c

    def worker(self, prefix: str, *extra: str, env: dict[str, str] | None = None) -> Worker:
        w = Worker(self.url, prefix, self.concurrency, self.tmp / f"worker-{prefix}.log", *extra, env_extra=env)
        self.workers.append(w)
        return w

    def close(self) -> None:
        for w in self.workers:
            try:
                w.kill()
            except Exception:  # noqa: BLE001 - keep cleaning up
                pass
        self.server.stop()


def backlog(r: redis.Redis, stream: str, group: str = DEFAULT_GROUP) -> tuple[int, int]:
    """(XLEN, pending in the group's PEL); pending is -1 while the group does not exist."""
    pipe = r.pipeline(transaction=False)
    pipe.xlen(stream)
    pipe.xpending(stream, group)
    xlen, pend = pipe.execute(raise_on_error=False)
    if isinstance(xlen, Exception):
        raise xlen
    pending = -1 if isinstance(pend, Exception) else int(pend["pending"])
    return int(xlen), pending


def wait_drained(r: redis.Redis, stream: str, worker: Worker, timeout: float,
                 on_poll: Callable[[], None] | None = None) -> float:
    """Poll until XLEN == 0 and PEL == 0 (see POLL); returns perf_counter() at that poll."""
    deadline = time.monotonic() + timeout
    last = (-1, -1)
    first: tuple[float, int] | None = None  # (time, XLEN) at the first poll
    while True:
        if on_poll is not None:
            on_poll()
        last = backlog(r, stream)
        now = time.perf_counter()
        if last == (0, 0):
            return now
        worker.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"{stream} not drained within {timeout:.0f}s (XLEN {last[0]}, pending {last[1]}); "
                             f"log:\n{worker.log_tail()}")
        if first is None:
            first = (now, last[0])
        done = first[1] - last[0]
        pause = POLL
        if done > 0 and now > first[0]:
            left_s = max(last[0], 1) * (now - first[0]) / done
            pause = min(POLL_MAX, max(POLL_MIN, left_s / 4))
        time.sleep(pause)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))
    return s[k]


# -- py-spy ----------------------------------------------------------------------
class PySpy:
    """``py-spy record --subprocesses`` of the master (and its children) in raw format."""

    def __init__(self, pid: int, out: Path, rate: int = 250) -> None:
        binary = Path(sys.executable).with_name("py-spy")
        exe = str(binary) if binary.exists() else shutil.which("py-spy")
        if exe is None:
            raise BenchError("--py-spy needs py-spy: .venv/bin/pip install py-spy")
        self.out = out
        self.rate = rate
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--subprocesses", "--nonblocking",
                                      "--rate", str(rate), "--format", "raw", "-o", str(out)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)

    def stop(self) -> float:
        dur = time.perf_counter() - self.started
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return dur


def summarize_raw(path: Path, master_pid: int, duration: float, rate: int, top: int = 12) -> dict[str, Any]:
    """Samples per process role; top functions by self and by inclusive samples."""
    roles: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return {"error": f"{path} was not written"}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        role = "master"
        # --subprocesses: a child's stack starts with its parent's "process" frame, then its own
        while frames and frames[0].startswith("process "):
            pid_s = frames[0][len("process "):].split(":", 1)[0]
            role = "master" if pid_s == str(master_pid) else "children"
            frames = frames[1:]
        frames = [f.rsplit(":", 1)[0] + ")" if f.endswith(")") and ":" in f else f for f in frames]
        d = roles.setdefault(role, {"samples": 0, "self": collections.Counter(), "incl": collections.Counter()})
        d["samples"] += count
        if frames:
            d["self"][frames[-1]] += count
            for f in set(frames):
                d["incl"][f] += count
    out: dict[str, Any] = {"file": str(path), "duration_s": round(duration, 3), "rate_hz": rate}
    for role, d in roles.items():
        n = d["samples"]
        out[role] = {
            "samples": n,
            "busy_pct_of_wall": round(100 * n / max(1.0, duration * rate), 1),
            "top_self": [(f, round(100 * c / n, 1)) for f, c in d["self"].most_common(top)],
            "top_inclusive": [(f, round(100 * c / n, 1)) for f, c in d["incl"].most_common(top)],
        }
    return out
