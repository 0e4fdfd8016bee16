#!/usr/bin/env python3
"""Backstage side by side with Celery, Dramatiq, Huey, RQ and arq.

    python benchmarks/compare/run.py [--systems backstage,celery,...] [--quick]
                                     [--json out.json] [--png chart.png] [--scaling]

Any Python 3.10+ can start it: it makes (or reuses) one virtualenv per system
plus its own under ``benchmarks/compare/.venvs/`` (pinned versions, see
``systems/__init__.py``), then runs itself again inside its own
(``.venvs/runner``, which has matplotlib). For each system it starts a fresh
private broker redis-server and a second one for the handlers' counters
(free ports on 127.0.0.1, temp dirs, no persistence), runs ``driver.py`` in
that system's venv (enqueue, no-op drain + memory, CPU drain, latency; each
phase with a fresh worker of 2 processes), and stops everything whatever
happens. Then it prints the table and writes the JSON and the PNG chart.

``--scaling`` adds backstage's no-op and CPU drains at -c 1, 2, 4, 8 (its own
table, a second PNG next to the first, and the JSON's "scaling").
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

import envs  # noqa: E402  (standard library only)
from systems import DEFAULT_SYSTEMS, RUNNER_PIP, SYSTEMS  # noqa: E402

RESULTS = HERE / "results"

SIZES_FULL = {
    "enqueue_single": 2000, "enqueue_single_cap_s": 4.0,
    "enqueue_bulk": 10000, "enqueue_bulk_cap_s": 8.0, "bulk_batch": 1000,
    "noop_jobs": 50000, "prefill_cap_s": 10.0, "startup_cap_s": 60.0, "drain_cap_s": 15.0,
    "cpu_jobs": 400, "cpu_repeats": 1, "cpu_cap_s": 40.0,
    "latency_samples": 200, "latency_warmup": 20, "latency_cap_s": 12.0, "latency_gap_ms": [5, 15],
    "ready_timeout_s": 60.0,
}
SIZES_QUICK = {
    "enqueue_single": 300, "enqueue_single_cap_s": 1.0,
    "enqueue_bulk": 2000, "enqueue_bulk_cap_s": 2.0, "bulk_batch": 1000,
    "noop_jobs": 3000, "prefill_cap_s": 4.0, "startup_cap_s": 60.0, "drain_cap_s": 5.0,
    "cpu_jobs": 60, "cpu_repeats": 1, "cpu_cap_s": 10.0,
    "latency_samples": 30, "latency_warmup": 10, "latency_cap_s": 3.0, "latency_gap_ms": [5, 15],
    "ready_timeout_s": 45.0,
}
SCALING_CONC = [1, 2, 4, 8]


def say(msg: str) -> None:
    print(msg, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS),
                   help=f"comma-separated, from {', '.join(SYSTEMS)} (default: {','.join(DEFAULT_SYSTEMS)}); "
                        "'none' with --scaling runs the scaling report alone")
    p.add_argument("--quick", action="store_true", help="small sizes, a smoke run (< 2 min once the venvs exist)")
    p.add_argument("--json", type=Path, help=f"where to write the results (default: {RESULTS}/compare[-quick].json)")
    p.add_argument("--png", type=Path, help=f"where to draw the chart (default: {RESULTS}/compare[-quick].png); "
                                             "--scaling also draws <name>-scaling.png beside it")
    p.add_argument("--scaling", action="store_true", help="also: backstage no-op and CPU drains at -c 1, 2, 4, 8")
    p.add_argument("--phases", default="enqueue,noop,cpu,latency",
                   help="comma-separated subset of enqueue,noop,cpu,latency (default: all)")
    p.add_argument("--keep-logs", action="store_true", help="keep the worker logs and redis dirs (printed at the end)")
    p.add_argument("--report-only", type=Path, metavar="JSON",
                   help="make no measurement: print the tables and draw the charts of an earlier run's JSON "
                        "(to --png, default: next to the JSON)")
    p.add_argument("--quiet-wait", type=float, default=None, metavar="S",
                   help="before each system wait up to S s for the machine to be under 10%% busy, "
                        "at most 4 x S in the whole run (default 10, --quick 1; 0: never)")
    a = p.parse_args(argv)
    names = [] if a.systems.strip() == "none" else [s.strip() for s in a.systems.split(",") if s.strip()]
    bad = [s for s in names if s not in SYSTEMS]
    if bad:
        p.error(f"unknown system(s) {', '.join(bad)}; known: {', '.join(SYSTEMS)}")
    if not names and not a.scaling and not a.report_only:
        p.error("nothing to run")
    a.system_names = names
    stem = "compare-quick" if a.quick else "compare"
    a.json = a.json or RESULTS / f"{stem}.json"
    if a.report_only and not a.png:
        a.png = a.report_only.with_suffix(".png")
    a.png = a.png or RESULTS / f"{stem}.png"
    if a.quiet_wait is None:
        a.quiet_wait = 1.0 if a.quick else 10.0
    return a


# -- virtualenvs and re-exec -------------------------------------------------------
def in_runner_venv() -> bool:
    return Path(sys.prefix).resolve() == (envs.VENVS / "runner").resolve()


def needed_venvs(args: argparse.Namespace) -> dict[str, list[str]]:
    want = {"runner": RUNNER_PIP}
    if args.report_only:
        return want
    names = list(args.system_names) + (["backstage"] if args.scaling else [])
    for n in names:
        spec = SYSTEMS[n]
        want[spec["venv"]] = spec["pip"]
    return want


# -- redis-servers -----------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A private redis-server: free port on 127.0.0.1, its own directory, no persistence."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        import redis
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            start_new_session=True)  # Ctrl-C must not stop it under the driver: run.py stops it last
        r = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    if r.ping():
                        return self
                except redis.ConnectionError:
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not start; see {self.dir / 'redis.log'}")
                time.sleep(0.01)
        finally:
            r.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# -- machine -----------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine_info() -> dict[str, Any]:
    import psutil

    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    redis_v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    redis_v = next((w[2:] for w in redis_v.split() if w.startswith("v=")), redis_v.strip())
    virt = ""
    if shutil.which("systemd-detect-virt"):
        virt = subprocess.run(["systemd-detect-virt"], capture_output=True, text=True).stdout.strip()
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "virtualization": virt or None,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "redis": redis_v,
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "backstage_git_commit": git("rev-parse", "--short", "HEAD"),
        "backstage_local_changes": bool(git("status", "--porcelain", "backstage")),
    }


def calibrate(target_s: float = 0.010) -> tuple[int, float]:
    """Loop count of ``common.burn`` for ~target_s in this interpreter, and the
    median time it then takes."""
    from common import burn
    n = 100_000
    for _ in range(4):
        times = []
        for _ in range(5):
            t = time.perf_counter()
            burn(n)
            times.append(time.perf_counter() - t)
        n = max(1000, int(n * target_s / min(times)))  # min: this VM's vCPU speed flips between two levels
    times = []
    for _ in range(20):
        t = time.perf_counter()
        burn(n)
        times.append(time.perf_counter() - t)
    return n, statistics.median(times)


_QUIET_BUDGET: list[float] = []


def wait_quiet(max_wait: float, threshold_pct: float = 10.0, need: int = 2) -> float:
    """Wait (up to max_wait s, and at most 4 x max_wait over the whole run)
    until the machine has been under threshold_pct busy for ``need`` 0.5 s
    windows in a row; returns the seconds waited."""
    import psutil
    if not _QUIET_BUDGET:
        _QUIET_BUDGET.append(4 * max_wait)
    max_wait = min(max_wait, _QUIET_BUDGET[0])
    if max_wait <= 0:
        return 0.0
    t0 = time.monotonic()
    ok = 0
    psutil.cpu_percent(None)
    while ok < need and time.monotonic() - t0 < max_wait:
        time.sleep(0.5)
        ok = ok + 1 if psutil.cpu_percent(None) < threshold_pct else 0
    waited = time.monotonic() - t0
    _QUIET_BUDGET[0] -= waited
    return waited


# -- one system --------------------------------------------------------------------
def kill_leftovers(pidfile: Path) -> int:
    """SIGKILL any worker process group the driver started that is still there."""
    import psutil
    killed = 0
    try:
        lines = pidfile.read_text().split("\n")
    except OSError:
        return 0
    for line in lines:
        if not line.strip():
            continue
        pid_s, ctime_s = line.split()
        pid, ctime = int(pid_s), float(ctime_s)
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - ctime) > 0.01:
                continue  # not ours any more
            procs = [p, *p.children(recursive=True)]
        except psutil.Error:
            continue
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        for q in procs:
            try:
                q.kill()
                killed += 1
            except psutil.Error:
                pass
    return killed


def run_system(name: str, conc: int, phases: list[str], sizes: dict[str, Any], loops: int,
               tmp_root: Path, label: str, timeout: float) -> dict[str, Any]:
    spec = SYSTEMS[name]
    tmp = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=tmp_root))
    broker = RedisServer(tmp / "broker")
    stats = RedisServer(tmp / "stats")
    pidfile = tmp / "worker-pgids.txt"
    proc: subprocess.Popen[bytes] | None = None
    t0 = time.perf_counter()
    ctrl_c = False
    try:
        broker.start()
        stats.start()
        cfg = {
            "system": name, "module": spec["module"], "variant": spec.get("variant"), "dists": spec.get("dists", []),
            "broker_url": broker.url, "broker_pid": broker.proc.pid,  # type: ignore[union-attr]
            "stats_url": stats.url, "stats_pid": stats.proc.pid,  # type: ignore[union-attr]
            "concurrency": conc, "phases": phases, "sizes": sizes, "loops": loops,
            "tmp": str(tmp), "pidfile": str(pidfile), "seed": 20261129,
        }
        cfg_path, out_path = tmp / "config.json", tmp / "out.json"
        cfg_path.write_text(json.dumps(cfg, indent=1))
        proc = subprocess.Popen([str(envs.python_of(spec["venv"])), str(HERE / "driver.py"), str(cfg_path), str(out_path)],
                                cwd=str(HERE), stdin=subprocess.DEVNULL)
        try:
            code = proc.wait(timeout)
        except KeyboardInterrupt:
            ctrl_c = True  # the driver got it too (same process group)
            raise
        except subprocess.TimeoutExpired:
            say(f"  {name}: no result within {timeout:.0f} s; stopping it")
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return {"system": name, "errors": {"all": f"the driver did not finish within {timeout:.0f} s"}}
        try:
            res = json.loads(out_path.read_text())
        except (OSError, ValueError):
            res = {"system": name, "errors": {"all": f"the driver exited with {code} and wrote no result"}}
        res["system_wall_s"] = round(time.perf_counter() - t0, 1)
        if res.get("errors"):
            res["logs_kept_in"] = str(tmp)
        return res
    finally:
        # a second Ctrl-C must not cut the clean-up short
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if proc is not None and proc.poll() is None:
                # interrupted: after a Ctrl-C the driver is already stopping its workers; else tell it to
                try:
                    if ctrl_c:
                        try:
                            proc.wait(25)
                        except subprocess.TimeoutExpired:
                            pass
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGTERM)
                        proc.wait(30)
                except (OSError, subprocess.TimeoutExpired):
                    proc.kill()
                    proc.wait()
            n = kill_leftovers(pidfile)
            if n:
                say(f"  {name}: killed {n} leftover worker process(es)")
            broker.stop()
            stats.stop()
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)


def disturbed(res: dict[str, Any], limit: float = 10.0) -> list[str]:
    out = []
    ph = res.get("phases", {})
    n = ph.get("noop")
    if n and n["cpu"]["pct_of_a_core"]["other_processes"] > limit:
        out.append(f"noop ({n['cpu']['pct_of_a_core']['other_processes']:.0f} % of a core)")
    c = ph.get("cpu")
    if c:
        worst = max(r["cpu"]["pct_of_a_core"]["other_processes"] for r in c["runs"])
        if worst > limit:
            out.append(f"cpu ({worst:.0f} % of a core)")
    lt = ph.get("latency")
    if lt and (lt.get("other_processes_pct") or 0) > limit:
        out.append(f"latency ({lt['other_processes_pct']:.0f} % of a core)")
    return out


# -- main --------------------------------------------------------------------------
def print_report(report: Any, results: dict[str, Any], scaling: dict[str, Any] | None) -> None:
    say("")
    if results:
        say(report.main_table(results))
        say("")
        say(report.detail_table(results))
        for line in report.footnotes(results):
            say(line)
        for name, res in results.items():
            if res.get("disturbed"):
                say(f"WARNING: {name}: other processes were busy during {', '.join(res['disturbed'])}: "
                    "those figures are disturbed")
            if res.get("logs_kept_in"):
                say(f"{name}: worker logs kept in {res['logs_kept_in']}")
    if scaling:
        say("\nscaling, backstage-prefork (no-op and CPU drains; master CPU from psutil of the master pid):")
        say(report.scaling_table(scaling))
        for line in report.footnotes({f"-c {c}": r for c, r in scaling["runs"].items()}):
            say(line)
        for c, res in scaling["runs"].items():
            if res.get("disturbed"):
                say(f"WARNING: -c {c}: other processes were busy during {', '.join(res['disturbed'])}")



def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = float(os.environ.get("BENCH_COMPARE_T0") or time.time())
    if shutil.which("redis-server") is None:
        say("compare: redis-server is not on PATH (apt-get install redis-server)")
        return 2
    try:
        venv_recs = envs.ensure(needed_venvs(args), say=say)
    except envs.EnvError as exc:
        say(f"compare: {exc}")
        return 2
    if not in_runner_venv():
        py = str(envs.python_of("runner"))
        env = dict(os.environ, BENCH_COMPARE_T0=repr(t_start),
                   BENCH_COMPARE_VENV_S=repr(time.time() - t_start),
                   BENCH_COMPARE_VENVS_MADE=",".join(k for k, v in venv_recs.items() if not v.get("reused")))
        os.execve(py, [py, str(Path(__file__).resolve()), *(argv if argv is not None else sys.argv[1:])], env)
    venv_s = float(os.environ.get("BENCH_COMPARE_VENV_S") or 0.0)
    for k in filter(None, os.environ.get("BENCH_COMPARE_VENVS_MADE", "").split(",")):
        if k in venv_recs:  # made by this run before it re-ran itself in the runner venv
            venv_recs[k]["reused"] = False

    import report

    if args.report_only:
        doc = json.loads(args.report_only.read_text())
        print_report(report, doc.get("results") or {}, doc.get("scaling"))
        if doc.get("results"):
            report.chart(doc["results"], doc["machine"], args.png)
            say(f"compare: wrote {args.png}")
        if doc.get("scaling"):
            p = args.png.with_name(args.png.stem + "-scaling.png")
            report.scaling_chart(doc["scaling"], doc["machine"], p)
            say(f"compare: wrote {p}")
        return 0

    def to_exit(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, to_exit)
    signal.signal(signal.SIGHUP, to_exit)

    sizes = SIZES_QUICK if args.quick else SIZES_FULL
    machine = machine_info()
    loops, single = calibrate()
    say(f"compare: {machine['cpus']} cores ({machine['cpu_model']}), Python {machine['python']}, "
        f"Redis {machine['redis']}; CPU task: burn({loops:,}) = {single * 1e3:.2f} ms here; "
        f"{'quick' if args.quick else 'full'} sizes")
    tmp_root = Path(tempfile.mkdtemp(prefix="bscompare-"))
    results: dict[str, Any] = {}
    scaling: dict[str, Any] | None = None
    interrupted = False
    phases = [p for p in ("enqueue", "noop", "cpu", "latency") if p in args.phases.split(",")]
    sys_timeout = 180.0 if args.quick else 300.0
    try:
        for name in args.system_names:
            waited = wait_quiet(args.quiet_wait) if args.quiet_wait > 0 else 0.0
            say(f"compare: {name}{f' (waited {waited:.0f} s for a quiet machine)' if waited > 1.5 else ''}")
            res = run_system(name, 2, phases, sizes, loops, tmp_root, name, sys_timeout)
            res["disturbed"] = disturbed(res)
            results[name] = res
        if args.scaling:
            scaling = {"concurrency": SCALING_CONC, "runs": {}}
            for c in SCALING_CONC:
                waited = wait_quiet(args.quiet_wait) if args.quiet_wait > 0 else 0.0
                say(f"compare: scaling, backstage -c {c}{f' (waited {waited:.0f} s)' if waited > 1.5 else ''}")
                res = run_system("backstage", c, ["noop", "cpu"], sizes, loops, tmp_root, f"scaling-c{c}", sys_timeout)
                cpu = res.get("phases", {}).get("cpu")
                if cpu:
                    cpu["efficiency_per_core_used_pct"] = round(100 * cpu["speedup"] / min(c, machine["cpus"] or c), 1)
                res["disturbed"] = disturbed(res)
                scaling["runs"][str(c)] = res
    except KeyboardInterrupt:
        interrupted = True
        say("\ncompare: interrupted; workers and redis-servers stopped")
    except SystemExit:
        interrupted = True
        say("\ncompare: terminated; workers and redis-servers stopped")
    total_s = time.time() - t_start

    if not results and not scaling:
        shutil.rmtree(tmp_root, ignore_errors=True)
        return 130 if interrupted else 1
    print_report(report, results, scaling)
    say(f"\ncompare: total {total_s:.0f} s (virtualenvs {venv_s:.0f} s)")

    doc = {
        "machine": machine,
        "params": {"systems": args.system_names, "quick": args.quick, "scaling": args.scaling,
                   "worker_processes": 2, "sizes": sizes, "cpu_loops": loops,
                   "cpu_single_ms_at_calibration": round(single * 1e3, 3)},
        "pins": {name: SYSTEMS[name]["pip"] for name in args.system_names},
        "venvs": {k: {"freeze": v.get("freeze"), "reused": v.get("reused"), "made_in_s": v.get("made_in_s")}
                  for k, v in venv_recs.items()},
        "results": results,
        "scaling": scaling,
        "interrupted": interrupted,
        "timing": {"total_s": round(total_s, 1), "venvs_s": round(venv_s, 1)},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=1) + "\n")
    say(f"compare: wrote {args.json}")
    if results:
        args.png.parent.mkdir(parents=True, exist_ok=True)
        report.chart(results, machine, args.png)
        say(f"compare: wrote {args.png}")
    if scaling:
        p = args.png.with_name(args.png.stem + "-scaling.png")
        report.scaling_chart(scaling, machine, p)
        say(f"compare: wrote {p}")
    kept = [r for r in [*results.values(), *(scaling or {}).get("runs", {}).values()] if r.get("logs_kept_in")]
    if kept or args.keep_logs:
        say(f"compare: worker logs kept in {tmp_root}")
    else:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
