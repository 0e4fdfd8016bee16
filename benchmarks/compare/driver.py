"""Runs the workloads for ONE system, inside that system's virtualenv.

    .venvs/<venv>/bin/python driver.py CONFIG.json OUT.json

``run.py`` writes CONFIG (system, broker and stats redis URLs and pids, sizes,
caps, the calibrated loop count) and reads OUT. Progress goes to stderr.
Phases, each with a fresh worker (and both redis-servers flushed before it):

enqueue  no worker: N single enqueues, then M jobs with the system's bulk API
         in batches; jobs/s, capped in time.
noop     pre-fill N ``noop`` jobs (bulk API), start the worker, and time from
         the first handler start (the earliest, over the worker processes) to
         the last handler end: jobs/s = N / that. Also: start-up (launch ->
         first job), CPU per job of the worker tree and of redis-server (from
         the first counted jobs to the end), and RSS/PSS of the worker process
         tree right after the drain. Capped: past the cap the jobs done so far
         count, and the result is marked ``capped``.
cpu      worker started and warm (every process has run a ``ready`` job); the
         single-job time is the median of 20 in-process runs of the same loop
         just before the run; the clock starts before the bulk enqueue of N
         ``cpu`` jobs and stops at the last handler end:
         efficiency = N x single / (wall x processes). ``in_handlers`` =
         CPU seconds of the handlers' threads inside the handlers / (wall x
         processes): how much of the processes' time went to the jobs,
         which does not depend on the (virtual) CPU speed of the moment
         (and stays meaningful for Dramatiq's threads, whose handlers overlap).
latency  worker warm and idle; one ``stamp`` job at a time: time.time() just
         before the enqueue call -> time.time() as the handler's first
         statement; the next job goes 5-15 ms (random, fixed seed) after the
         previous stamp arrived.

Every worker runs in its own session; it is stopped with SIGTERM (then
SIGKILL of its whole process group and every descendant seen) on success,
error, Ctrl-C or SIGTERM; its process-group ids also go to a pid file the
runner checks after this script exits.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import psutil  # noqa: E402
import redis  # noqa: E402

POLL_S = 0.010


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cpu_s(p: psutil.Process) -> float:
    """CPU seconds of the process and of its children that have exited and
    been reaped (RQ's per-job work horses, ...); live children count themselves."""
    t = p.cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)


def own_cpu_s(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


def cpu_sum(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            total += cpu_s(p)
        except psutil.Error:
            pass
    return total


def machine_busy_s() -> float:
    t = psutil.cpu_times()
    not_busy = t.idle + sum(getattr(t, f, 0.0) for f in ("iowait", "guest", "guest_nice"))
    return float(sum(t) - not_busy)


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))
    return s[k]


# -- the worker ------------------------------------------------------------------
class WorkerGroup:
    """The system's worker: one or more top-level processes (arq: one per
    process), each in its own session, and everything they fork."""

    def __init__(self, cmds: list[list[str]], env: dict[str, str], log_path: Path, pidfile: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ps: list[psutil.Process] = []
        self.seen: dict[int, psutil.Process] = {}
        self.launched = time.time()
        try:
            for cmd in cmds:
                p = subprocess.Popen(cmd, cwd=str(HERE), env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
                self.procs.append(p)
                ps = psutil.Process(p.pid)
                self.ps.append(ps)
                self.seen[p.pid] = ps
                with open(pidfile, "a") as f:
                    f.write(f"{p.pid} {ps.create_time()!r}\n")
        except BaseException:
            self.stop(grace=0)
            raise

    def tree(self) -> list[psutil.Process]:
        out: list[psutil.Process] = []
        for top in self.ps:
            try:
                if not top.is_running():
                    continue
                out.append(top)
                kids = top.children(recursive=True)
            except psutil.Error:
                continue
            for k in kids:
                out.append(self.seen.setdefault(k.pid, k))
        return out

    def log_tail(self, n: int = 2500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def check_alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise BenchError(f"worker process {p.pid} exited with code {p.returncode}; log tail:\n{self.log_tail()}")

    def memory(self) -> dict[str, Any]:
        rss = pss = 0
        per: list[dict[str, Any]] = []
        for p in self.tree():
            try:
                mi = p.memory_full_info()
                name = " ".join(p.cmdline())[:80]
            except psutil.Error:
                continue
            rss += mi.rss
            pss += getattr(mi, "pss", mi.rss)
            per.append({"pid": p.pid, "rss_mb": round(mi.rss / 2**20, 1),
                        "pss_mb": round(getattr(mi, "pss", mi.rss) / 2**20, 1), "cmd": name})
        return {"rss_mb": round(rss / 2**20, 1), "pss_mb": round(pss / 2**20, 1), "processes": len(per), "per_process": per}

    def stop(self, grace: float = 15.0) -> list[int | None]:
        """SIGTERM each top-level process, wait up to ``grace`` s, then SIGKILL
        their process groups and every descendant seen."""
        self.tree()
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                except OSError:
                    pass
        deadline = time.monotonic() + grace
        for p in self.procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        codes = [p.poll() for p in self.procs]
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
        for ps in self.seen.values():
            try:
                if ps.is_running():
                    ps.kill()
            except psutil.Error:
                pass
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if not self._log.closed:
            self._log.close()
        return codes


# -- the driver --------------------------------------------------------------------
class Driver:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.name = cfg["system"]
        self.sizes = cfg["sizes"]
        self.conc = int(cfg["concurrency"])
        self.tmp = Path(cfg["tmp"])
        self.pidfile = Path(cfg["pidfile"])
        os.environ["BENCH_BROKER_URL"] = cfg["broker_url"]
        os.environ["BENCH_STATS_URL"] = cfg["stats_url"]
        self.module = importlib.import_module(cfg["module"])
        self.adapter = self.module.Adapter(cfg["broker_url"], variant=cfg.get("variant"))
        self.broker = redis.Redis.from_url(cfg["broker_url"])
        self.stats = redis.Redis.from_url(cfg["stats_url"])
        self.broker_ps = psutil.Process(cfg["broker_pid"])
        self.stats_ps = psutil.Process(cfg["stats_pid"])
        self.me = psutil.Process()
        self.workers: list[WorkerGroup] = []
        self.bin_dir = Path(sys.executable).parent

    # -- helpers -------------------------------------------------------------------
    def flush(self) -> None:
        self.broker.flushall()
        self.stats.flushall()

    def launch(self, label: str) -> tuple[WorkerGroup, Any]:
        import common
        prefix = f"{self.name}:{label}"
        env = dict(os.environ)
        for k in [k for k in env if k.startswith(("BACKSTAGE_", "DRAMATIQ_", "dramatiq_", "RQ_", "CELERY_", "HUEY_"))]:
            del env[k]
        env.update({
            "BENCH_BROKER_URL": self.cfg["broker_url"],
            "BENCH_STATS_URL": self.cfg["stats_url"],
            "BENCH_STATS_PREFIX": prefix,
            "PYTHONPATH": str(HERE),
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.adapter.worker_env())
        cmds = self.adapter.worker_commands(self.bin_dir, self.conc)
        w = WorkerGroup(cmds, env, self.tmp / f"worker-{self.name}-{label}.log", self.pidfile)
        self.workers.append(w)
        self.worker_cmds = [" ".join(Path(c[0]).name if i == 0 else a for i, a in enumerate(c)) for c in cmds]
        return w, common.K(prefix)

    def bulk(self, task: str, payloads: list[dict[str, Any]], cap_s: float | None = None) -> tuple[int, float]:
        """Enqueue with the bulk API in batches; returns (jobs written, seconds)."""
        batch = int(self.sizes["bulk_batch"])
        t0 = time.perf_counter()
        done = 0
        for i in range(0, len(payloads), batch):
            chunk = payloads[i:i + batch]
            self.adapter.enqueue_bulk(task, chunk)
            done += len(chunk)
            if cap_s is not None and time.perf_counter() - t0 > cap_s:
                break
        return done, time.perf_counter() - t0

    def wait_ready(self, w: WorkerGroup, keys: Any, timeout: float) -> dict[str, Any]:
        """Send ``ready`` jobs until every worker process has run one, then
        until all of them are done (the queue is empty), then settle."""
        t0 = time.monotonic()
        sent = 0
        while True:
            for _ in range(4):
                self.adapter.enqueue_one("ready", {})
            sent += 4
            until = time.monotonic() + 0.4
            while time.monotonic() < until:
                if self.stats.scard(keys.ready) >= self.conc:
                    break
                time.sleep(0.02)
            if self.stats.scard(keys.ready) >= self.conc:
                break
            w.check_alive()
            if time.monotonic() - t0 > timeout:
                raise BenchError(f"not all {self.conc} worker processes ran a job within {timeout:.0f} s "
                                 f"({self.stats.scard(keys.ready)} did); log tail:\n{w.log_tail()}")
        until = time.monotonic() + 20
        while int(self.stats.get(keys.ready_count) or 0) < sent:
            w.check_alive()
            if time.monotonic() > until:
                raise BenchError(f"{sent} ready jobs not all done within 20 s; log tail:\n{w.log_tail()}")
            time.sleep(0.02)
        time.sleep(0.3)
        return {"ready_after_s": round(time.monotonic() - t0, 3), "ready_jobs": sent}

    def snapshot(self, w: WorkerGroup) -> dict[str, Any]:
        procs = w.tree()
        return {"procs": procs, "tree": cpu_sum(procs), "master": cpu_sum(procs[:1]), "broker": cpu_s(self.broker_ps),
                "stats": cpu_s(self.stats_ps), "me": own_cpu_s(self.me), "machine": machine_busy_s(), "t": time.time()}

    def cpu_since(self, snap: dict[str, Any], jobs: int, wall: float) -> dict[str, Any]:
        tree = cpu_sum(snap["procs"]) - snap["tree"]
        master = cpu_sum(snap["procs"][:1]) - snap["master"]
        broker = cpu_s(self.broker_ps) - snap["broker"]
        stats = cpu_s(self.stats_ps) - snap["stats"]
        me = own_cpu_s(self.me) - snap["me"]
        other = max(0.0, machine_busy_s() - snap["machine"] - tree - broker - stats - me)
        per = 1e6 / max(1, jobs)
        return {
            "jobs_counted": jobs,
            "us_per_job": {"worker_tree": round(tree * per, 1), "worker_top_process": round(master * per, 1),
                           "broker_redis": round(broker * per, 1)},
            "pct_of_a_core": {"worker_tree": round(100 * tree / wall, 1), "worker_top_process": round(100 * master / wall, 1),
                              "broker_redis": round(100 * broker / wall, 1), "stats_redis": round(100 * stats / wall, 1),
                              "driver": round(100 * me / wall, 1), "other_processes": round(100 * other / wall, 1)},
        }

    # -- phases ----------------------------------------------------------------------
    def phase_enqueue(self) -> dict[str, Any]:
        s = self.sizes
        self.flush()
        # warm-up: connections, scripts, imports (not timed)
        for i in range(50):
            self.adapter.enqueue_one("noop", {"i": i})
        self.adapter.enqueue_bulk("noop", [{"i": i} for i in range(100)])
        self.flush()
        n1, cap1 = int(s["enqueue_single"]), float(s["enqueue_single_cap_s"])
        m0 = machine_busy_s()
        t0 = time.perf_counter()
        done = 0
        for i in range(n1):
            self.adapter.enqueue_one("noop", {"i": i})
            done += 1
            if (i & 63) == 63 and time.perf_counter() - t0 > cap1:
                break
        single_s = time.perf_counter() - t0
        self.flush()
        payloads = [{"i": i} for i in range(int(s["enqueue_bulk"]))]
        bulk_done, bulk_s = self.bulk("noop", payloads, cap_s=float(s["enqueue_bulk_cap_s"]))
        self.flush()
        return {
            "single_jobs": done, "single_s": round(single_s, 3), "single_jobs_per_s": round(done / single_s),
            "single_capped": done < n1,
            "bulk_jobs": bulk_done, "bulk_batch": int(s["bulk_batch"]), "bulk_s": round(bulk_s, 3),
            "bulk_jobs_per_s": round(bulk_done / bulk_s), "bulk_capped": bulk_done < len(payloads),
            "machine_busy_pct": round(100 * (machine_busy_s() - m0) / (single_s + bulk_s), 1),
            "single_api": self.adapter.single_api, "bulk_api": self.adapter.bulk_api,
        }

    def phase_noop(self) -> dict[str, Any]:
        s = self.sizes
        n = int(s["noop_jobs"])
        self.flush()
        payloads = [{"i": i} for i in range(n)]
        n, prefill_s = self.bulk("noop", payloads, cap_s=float(s["prefill_cap_s"]))
        del payloads
        w, keys = self.launch("noop")
        snap: dict[str, Any] | None = None
        c_snap = 0
        capped = False
        startup_cap, drain_cap = float(s["startup_cap_s"]), float(s["drain_cap_s"])
        while True:
            c = int(self.stats.get(keys.noop_count) or 0)
            now = time.time()
            if snap is None and c > 0:
                snap, c_snap = self.snapshot(w), c
            if c >= n:
                break
            w.check_alive()
            if snap is None and now - w.launched > startup_cap:
                raise BenchError(f"no job ran within {startup_cap:.0f} s of starting the worker; log tail:\n{w.log_tail()}")
            if snap is not None and now - snap["t"] > drain_cap:
                capped = True
                break
            time.sleep(POLL_S)
        t_seen = time.time()
        c_end = int(self.stats.get(keys.noop_count) or 0)
        assert snap is not None
        cpu = self.cpu_since(snap, c_end - c_snap, t_seen - snap["t"])
        mem = w.memory()
        firsts = [float(x) for x in self.stats.hvals(keys.noop_first)]
        lasts = [float(x) for x in self.stats.hvals(keys.noop_last)]
        t_first = min(firsts)
        if capped:
            jobs, wall = c_end, t_seen - t_first
        else:
            jobs, wall = n, max(lasts) - t_first
        codes = w.stop()
        return {
            "jobs": n, "jobs_done": jobs, "capped": capped,
            "cap_s": drain_cap if capped else None,
            "prefill_s": round(prefill_s, 3), "prefill_jobs_per_s": round(n / prefill_s),
            "startup_s": round(t_first - w.launched, 3),
            "wall_s": round(wall, 3),
            "jobs_per_s": round(jobs / wall),
            "jobs_per_s_from_launch": round(jobs / ((t_seen if capped else max(lasts)) - w.launched)),
            "worker_processes_seen": len(firsts),
            "cpu": cpu,
            "memory": mem,
            "worker_exit_codes": codes,
        }

    def phase_cpu(self) -> dict[str, Any]:
        import common
        s = self.sizes
        n, loops, repeats = int(s["cpu_jobs"]), int(self.cfg["loops"]), int(s["cpu_repeats"])
        self.flush()
        w, keys = self.launch("cpu")
        ready = self.wait_ready(w, keys, float(s["ready_timeout_s"]))
        runs = []
        busy0 = busy_cpu0 = 0.0
        for r in range(repeats):
            singles = []
            for _ in range(20):
                t = time.perf_counter()
                common.burn(loops)
                singles.append(time.perf_counter() - t)
            single = statistics.median(singles)
            snap = self.snapshot(w)
            t0 = time.time()
            self.bulk("cpu", [{"n": loops}] * n)
            enq_s = time.time() - t0
            target = n * (r + 1)
            cap = float(s["cpu_cap_s"])
            capped = False
            while int(self.stats.get(keys.cpu_count) or 0) < target:
                w.check_alive()
                if time.time() - t0 > cap:
                    capped = True
                    break
                time.sleep(POLL_S)
            t_seen = time.time()
            done = int(self.stats.get(keys.cpu_count) or 0) - n * r
            t1 = t_seen if capped else max(float(x) for x in self.stats.hvals(keys.cpu_last))
            busy_total = float(self.stats.get(keys.cpu_busy) or 0.0)
            busy_cpu_total = float(self.stats.get(keys.cpu_busy_cpu) or 0.0)
            busy, busy0 = busy_total - busy0, busy_total
            busy_cpu, busy_cpu0 = busy_cpu_total - busy_cpu0, busy_cpu_total
            wall = t1 - t0
            after = []
            for _ in range(10):
                t = time.perf_counter()
                common.burn(loops)
                after.append(time.perf_counter() - t)
            cpu = self.cpu_since(snap, done, t_seen - snap["t"])
            runs.append({
                "jobs_done": done, "capped": capped,
                "single_ms": round(single * 1e3, 3), "single_ms_min_max": [round(min(singles) * 1e3, 3), round(max(singles) * 1e3, 3)],
                "single_ms_after": round(statistics.median(after) * 1e3, 3),
                "enqueue_s": round(enq_s, 4), "wall_s": round(wall, 3), "ideal_wall_s": round(done * single / self.conc, 3),
                "efficiency_pct": round(100 * done * single / (wall * self.conc), 1),
                "speedup": round(done * single / wall, 3),
                "in_handlers_pct": round(100 * busy_cpu / (wall * self.conc), 1),
                "in_handlers_wall_pct": round(100 * busy / (wall * self.conc), 1),
                "handler_ms_mean": round(1e3 * busy / max(1, done), 3),
                "handler_cpu_ms_mean": round(1e3 * busy_cpu / max(1, done), 3),
                "cpu": cpu,
            })
            if capped:
                break
        codes = w.stop()
        mid = sorted(runs, key=lambda x: x["efficiency_pct"])[len(runs) // 2]
        return {
            "jobs": n, "repeats": len(runs), "loops": loops, "processes": self.conc,
            "efficiency_pct": mid["efficiency_pct"], "in_handlers_pct": mid["in_handlers_pct"], "speedup": mid["speedup"],
            "single_ms": mid["single_ms"], "wall_s": mid["wall_s"], "capped": mid["capped"],
            "master_cpu_us_per_job": mid["cpu"]["us_per_job"]["worker_top_process"],
            "efficiency_pct_runs": [x["efficiency_pct"] for x in runs],
            "runs": runs, "ready": ready, "worker_exit_codes": codes,
        }

    def phase_latency(self) -> dict[str, Any]:
        s = self.sizes
        samples, warmup, cap = int(s["latency_samples"]), int(s["latency_warmup"]), float(s["latency_cap_s"])
        lo, hi = (x / 1e3 for x in s["latency_gap_ms"])
        self.flush()
        w, keys = self.launch("latency")
        ready = self.wait_ready(w, keys, float(s["ready_timeout_s"]))
        rng = random.Random(int(self.cfg.get("seed", 1)))
        lat: list[float] = []
        m0 = snap_me = None
        t_meas = time.perf_counter()
        for i in range(warmup + samples):
            if i == warmup:
                snap_me = self.snapshot(w)
                t_meas = time.perf_counter()
            t = time.time()
            self.adapter.enqueue_one("stamp", {"t": t})
            got = self.stats.blpop([keys.stamps], timeout=10)
            if got is None:
                w.check_alive()
                raise BenchError(f"stamp job {i} did not run within 10 s; log tail:\n{w.log_tail()}")
            t_enq, t_start = (float(x) for x in got[1].split())
            if i >= warmup:
                lat.append((t_start - t_enq) * 1e3)
                if time.perf_counter() - t_meas > cap:
                    break
            time.sleep(rng.uniform(lo, hi))
        wall = time.perf_counter() - t_meas
        cpu = self.cpu_since(snap_me, len(lat), wall) if snap_me else None
        codes = w.stop()
        del m0
        return {
            "samples": len(lat), "capped": len(lat) < samples, "warmup": warmup,
            "gap_ms": list(s["latency_gap_ms"]),
            "p50_ms": round(percentile(lat, 50), 3), "p90_ms": round(percentile(lat, 90), 3),
            "p99_ms": round(percentile(lat, 99), 3), "max_ms": round(max(lat), 3), "min_ms": round(min(lat), 3),
            "mean_ms": round(statistics.fmean(lat), 3),
            "other_processes_pct": cpu["pct_of_a_core"]["other_processes"] if cpu else None,
            "ready": ready, "worker_exit_codes": codes,
        }

    # -- all -----------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "system": self.name, "variant": self.cfg.get("variant"), "concurrency": self.conc,
            "settings": self.adapter.settings, "single_api": self.adapter.single_api, "bulk_api": self.adapter.bulk_api,
            "versions": versions(self.cfg.get("dists", [])),
            "phases": {}, "errors": {},
        }
        phases: dict[str, Callable[[], dict[str, Any]]] = {
            "enqueue": self.phase_enqueue, "noop": self.phase_noop, "cpu": self.phase_cpu, "latency": self.phase_latency,
        }
        for name in self.cfg["phases"]:
            t0 = time.perf_counter()
            log(f"  {self.name}{'' if self.conc == 2 else f' -c {self.conc}'}: {name} ...")
            try:
                res = phases[name]()
                res["phase_s"] = round(time.perf_counter() - t0, 1)
                out["phases"][name] = res
                log(f"  {self.name}: {name}: {summary(name, res)} ({res['phase_s']} s)")
            except BenchError as exc:
                out["errors"][name] = str(exc)
                log(f"  {self.name}: {name}: FAILED: {str(exc).splitlines()[0]}")
            except Exception as exc:  # noqa: BLE001 - report, go on with the next phase
                out["errors"][name] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
                log(f"  {self.name}: {name}: FAILED: {type(exc).__name__}: {exc}")
            finally:
                for w in self.workers:
                    w.stop(grace=5.0)
                self.workers.clear()
        out["worker_commands"] = getattr(self, "worker_cmds", None)
        return out

    def close(self) -> None:
        for w in self.workers:
            try:
                w.stop(grace=5.0)
            except Exception:  # noqa: BLE001 - keep cleaning up
                pass
        self.workers.clear()
        try:
            self.adapter.close()
        except Exception:  # noqa: BLE001
            pass


def versions(dists: list[str]) -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for d in dists:
        try:
            out[d] = md.version(d)
        except md.PackageNotFoundError:
            out[d] = "?"
    return out


def summary(name: str, r: dict[str, Any]) -> str:
    if name == "enqueue":
        return f"single {r['single_jobs_per_s']:,}/s, bulk {r['bulk_jobs_per_s']:,}/s"
    if name == "noop":
        return (f"{r['jobs_per_s']:,} jobs/s{' (CAPPED)' if r['capped'] else ''}, start-up {r['startup_s']:.2f} s, "
                f"RSS {r['memory']['rss_mb']} MB, worker CPU {r['cpu']['us_per_job']['worker_tree']} us/job")
    if name == "cpu":
        return (f"efficiency {r['efficiency_pct']} % (runs {r['efficiency_pct_runs']}), in handlers {r['in_handlers_pct']} %, "
                f"single {r['single_ms']} ms")
    if name == "latency":
        return f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms"
    return ""


def main() -> int:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    out_path = Path(sys.argv[2])

    def on_signal(signum: int, frame: Any) -> None:
        # the first SIGINT/SIGTERM stops the run; later ones must not cut the clean-up short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    d = None
    try:
        d = Driver(cfg)
        res = d.run()
        out_path.write_text(json.dumps(res, indent=1) + "\n")
        return 0
    except KeyboardInterrupt:
        log(f"  {cfg['system']}: interrupted; stopping its worker")
        return 130
    except BenchError as exc:
        log(f"  {cfg['system']}: FAILED: {exc}")
        out_path.write_text(json.dumps({"system": cfg["system"], "errors": {"setup": str(exc)}}) + "\n")
        return 1
    except Exception as exc:  # noqa: BLE001
        log(f"  {cfg['system']}: FAILED: {type(exc).__name__}: {exc}")
        out_path.write_text(json.dumps({"system": cfg["system"], "errors": {"setup": traceback.format_exc()}}) + "\n")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the clean-up finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if d is not None:
            d.close()


if __name__ == "__main__":
    sys.exit(main())
