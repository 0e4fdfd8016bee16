"""The table printed by ``run.py`` and its PNG charts (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _fmt_int(v: Any) -> str:
    return f"{v:,}" if isinstance(v, (int, float)) else "-"


def _cell(res: dict[str, Any], phase: str, get, mark=None) -> str:
    r = res.get("phases", {}).get(phase)
    if r is None:
        return "failed" if phase in res.get("errors", {}) else "-"
    v = get(r)
    s = v if isinstance(v, str) else _fmt_int(v)
    if mark and mark(r):
        s += "*"
    return s


def md_table(header: list[str], rows: list[list[str]]) -> str:
    w = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(cells)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (x + 2) for x in w) + "|", *[line(r) for r in rows]])


def main_table(results: dict[str, dict[str, Any]]) -> str:
    header = ["system", "no-op drain jobs/s", "CPU efficiency", "enqueue jobs/s: single", "bulk",
              "latency p50 / p99", "worker RSS (PSS)"]
    rows = []
    for name, res in results.items():
        rows.append([
            name,
            _cell(res, "noop", lambda r: r["jobs_per_s"], lambda r: r["capped"]),
            _cell(res, "cpu", lambda r: f"{r['efficiency_pct']:.1f} %", lambda r: r["capped"]),
            _cell(res, "enqueue", lambda r: r["single_jobs_per_s"]),
            _cell(res, "enqueue", lambda r: r["bulk_jobs_per_s"]),
            _cell(res, "latency", lambda r: f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} ms", lambda r: r["capped"]),
            _cell(res, "noop", lambda r: f"{r['memory']['rss_mb']:.0f} MB ({r['memory']['pss_mb']:.0f})"),
        ])
    return md_table(header, rows)


def detail_table(results: dict[str, dict[str, Any]]) -> str:
    header = ["system", "start-up", "worker CPU/job", "redis CPU/job", "CPU: in handlers", "single job",
              "pre-fill jobs/s", "processes (tree)"]
    rows = []
    for name, res in results.items():
        rows.append([
            name,
            _cell(res, "noop", lambda r: f"{r['startup_s']:.2f} s"),
            _cell(res, "noop", lambda r: f"{r['cpu']['us_per_job']['worker_tree']:.0f} us"),
            _cell(res, "noop", lambda r: f"{r['cpu']['us_per_job']['broker_redis']:.0f} us"),
            _cell(res, "cpu", lambda r: f"{r['in_handlers_pct']:.1f} %"),
            _cell(res, "cpu", lambda r: f"{r['single_ms']:.2f} ms"),
            _cell(res, "noop", lambda r: r["prefill_jobs_per_s"]),
            _cell(res, "noop", lambda r: str(r["memory"]["processes"])),
        ])
    return md_table(header, rows)


def scaling_table(scaling: dict[str, Any]) -> str:
    header = ["-c", "no-op jobs/s", "master CPU/job (no-op)", "CPU efficiency", "jobs x single / wall",
              "handler CPU / wall", "master CPU/job (CPU)"]
    rows = []
    for c, res in scaling["runs"].items():
        noop = res.get("phases", {}).get("noop")
        cpu = res.get("phases", {}).get("cpu")
        rows.append([
            c,
            (_fmt_int(noop["jobs_per_s"]) + ("*" if noop["capped"] else "")) if noop else "failed",
            f"{noop['cpu']['us_per_job']['worker_top_process']:.1f} us" if noop else "-",
            f"{cpu['efficiency_pct']:.1f} %" if cpu else "failed",
            f"{cpu['speedup']:.2f} cores" if cpu else "-",
            f"{cpu['in_handlers_pct'] * int(c) / 100:.2f} cores" if cpu else "-",
            f"{cpu['master_cpu_us_per_job']:.0f} us" if cpu else "-",
        ])
    return md_table(header, rows)


def footnotes(results: dict[str, dict[str, Any]]) -> list[str]:
    notes = []
    for name, res in results.items():
        ph = res.get("phases", {})
        n = ph.get("noop")
        if n and n["capped"]:
            notes.append(f"* {name}: no-op drain stopped at the {n['cap_s']:.0f} s cap after {n['jobs_done']:,} of "
                         f"{n['jobs']:,} jobs; jobs/s is over those")
        c = ph.get("cpu")
        if c and c["capped"]:
            notes.append(f"* {name}: CPU drain stopped at its cap; efficiency is over the jobs done")
        lt = ph.get("latency")
        if lt and lt["capped"]:
            notes.append(f"* {name}: latency stopped at its time cap after {lt['samples']} samples")
        for phase, err in res.get("errors", {}).items():
            notes.append(f"! {name}: {phase} failed: {err.splitlines()[0] if err else ''}")
    return notes


# -- charts ------------------------------------------------------------------------
def chart(results: dict[str, dict[str, Any]], machine: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    colors = ["#d62728" if n == "backstage" else "#4c72b0" for n in names]

    def vals(phase: str, get: Any) -> tuple[list[float], list[bool]]:
        v, capped = [], []
        for n in names:
            r = results[n].get("phases", {}).get(phase)
            v.append(float(get(r)) if r else 0.0)
            capped.append(bool(r and r.get("capped")))
        return v, capped

    panels = [
        ("no-op drain (jobs/s, higher is better)", "noop", lambda r: r["jobs_per_s"], "{:,.0f}"),
        ("CPU efficiency (%, higher is better)", "cpu", lambda r: r["efficiency_pct"], "{:.0f}"),
        ("enqueue, single (jobs/s)", "enqueue", lambda r: r["single_jobs_per_s"], "{:,.0f}"),
        ("enqueue, bulk API (jobs/s)", "enqueue", lambda r: r["bulk_jobs_per_s"], "{:,.0f}"),
        ("latency enqueue -> start (ms, lower is better)", "latency", None, None),
        ("worker tree RSS after the no-op drain (MB, lower is better)", "noop", lambda r: r["memory"]["rss_mb"], "{:.0f}"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    for ax, (title, phase, get, fmt) in zip(axes.flat, panels):
        ax.set_title(title, fontsize=10)
        x = range(len(names))
        if get is None:  # latency: p50 and p99 side by side, log scale
            p50, _ = vals(phase, lambda r: r["p50_ms"])
            p99, _ = vals(phase, lambda r: r["p99_ms"])
            w = 0.38
            b1 = ax.bar([i - w / 2 for i in x], p50, w, color=colors, label="p50")
            b2 = ax.bar([i + w / 2 for i in x], p99, w, color=colors, alpha=0.45, label="p99")
            if any(x > 0 for x in p50 + p99):
                ax.set_yscale("log")
            from matplotlib.ticker import NullFormatter, ScalarFormatter
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
            for bars, vs in ((b1, p50), (b2, p99)):
                for b, v in zip(bars, vs):
                    if v > 0:
                        ax.annotate(f"{v:.1f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=7)
            ax.legend(fontsize=8, loc="upper left")
        else:
            v, capped = vals(phase, get)
            bars = ax.bar(list(x), v, color=colors)
            top = max(v) if v and max(v) > 0 else 1
            for n, b, val, cap in zip(names, bars, v, capped):
                if cap:
                    b.set_hatch("//")
                note = "\n(at the cap)" if title.startswith("worker tree") else "\n(capped)"
                missing = "failed" if phase in results[n].get("errors", {}) else "not run"
                label = (missing if val == 0 else fmt.format(val)) + (note if cap else "")
                ax.annotate(label, (b.get_x() + b.get_width() / 2, val), ha="center", va="bottom", fontsize=8)
            ax.set_ylim(0, top * 1.18)
            if phase == "cpu":
                ax.axhline(100, color="grey", lw=0.8, ls="--")
        ax.set_xticks(list(x))
        ax.set_xticklabels(names, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Python job systems on Redis, 2 worker processes each: {machine.get('cpus')} cores "
                 f"({machine.get('cpu_model')}), Python {machine.get('python')}, Redis {machine.get('redis')}, "
                 f"{machine.get('date', '')[:10]}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def scaling_chart(scaling: dict[str, Any], machine: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cs, noop, master, eff, speed, hspeed = [], [], [], [], [], []
    for c, res in scaling["runs"].items():
        ph = res.get("phases", {})
        cs.append(int(c))
        noop.append(ph["noop"]["jobs_per_s"] if "noop" in ph else float("nan"))
        master.append(ph["noop"]["cpu"]["us_per_job"]["worker_top_process"] if "noop" in ph else float("nan"))
        eff.append(ph["cpu"]["efficiency_pct"] if "cpu" in ph else float("nan"))
        speed.append(ph["cpu"]["speedup"] if "cpu" in ph else float("nan"))
        hspeed.append(ph["cpu"]["in_handlers_pct"] * int(c) / 100 if "cpu" in ph else float("nan"))
    ncpu = machine.get("cpus") or 2
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    ax = axes[0]
    ax.plot(cs, noop, "o-", color="#d62728")
    ax.set_title("no-op drain (jobs/s)", fontsize=10)
    ax2 = axes[1]
    ax2.plot(cs, speed, "o-", color="#d62728", label="jobs x single / wall")
    ax2.plot(cs, hspeed, "s-", color="#ff9896", label="handler CPU / wall")
    ax2.plot(cs, [min(c, ncpu) for c in cs], "--", color="grey", label=f"ideal on {ncpu} cores")
    ax2.set_title("CPU drain: cores' worth of job work (label: efficiency)", fontsize=10)
    ax2.legend(fontsize=8)
    ax3 = axes[2]
    ax3.plot(cs, master, "o-", color="#4c72b0")
    ax3.set_title("master CPU per no-op job (us)", fontsize=10)
    for a in axes:
        a.set_xscale("log", base=2)
        a.set_xticks(cs)
        a.set_xticklabels([str(c) for c in cs])
        a.set_xlabel("children (-c)")
        a.axvline(ncpu, color="grey", lw=0.8, ls=":")
        a.grid(alpha=0.3)
        a.set_ylim(bottom=0)
    for c, e, s in zip(cs, eff, speed):
        ax2.annotate(f"{e:.0f} %", (c, s), textcoords="offset points", xytext=(8, 4), ha="left", fontsize=8)
    top = max([x for x in speed + hspeed if x == x] + [ncpu])
    ax2.set_ylim(0, top * 1.2)
    fig.suptitle(f"backstage-prefork scaling on {ncpu} cores ({machine.get('cpu_model')}); "
                 f"dotted line: the core count", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=110)
    plt.close(fig)
