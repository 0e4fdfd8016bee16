"""``backstage-prefork [options] module[:attr]``: load the app, run the master."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from typing import Any, Sequence

from ..app import Backstage
from ..errors import AppNotFound, ConfigError
from ..connections.redis_conn import TlsSettings, with_tls
from ..protocol.keys import PRIORITIES
from ..logs import setup_logging
from .config import WorkerConfig, default_consumer
from .loop import EXIT_APP, EXIT_USAGE, Master

__all__ = ["main", "load_app", "build_parser"]

EPILOG = """\
signals:
  TERM, INT    stop fetching, let running jobs finish within --grace-period,
               commit their outcomes, exit 0 (a second INT stops at once)
  QUIT         stop at once: kill children; their jobs stay pending in Redis
               and are recovered by another worker after the idle timeout
  HUP          replace every child gracefully (after its current job)
  TTIN / TTOU  one child more / one child less

exit codes:
  0  stopped cleanly        1  forced stop, or outcomes left uncommitted
  2  bad options or config  3  the app could not be loaded, or a child could not boot
  4  Redis unreachable or older than 6.2 at start-up

Every option also reads an environment variable, e.g. --concurrency from
BACKSTAGE_CONCURRENCY and --redis-url from BACKSTAGE_REDIS_URL (then the
app's redis_url, which itself defaults to $REDIS_URL). Prefer the variable
for a URL with a password: command lines are visible to other users.

Redis URLs: redis://[user:pass@]host:6379/0, rediss://… (TLS),
unix:///path/redis.sock, redis+sentinel://[user:pass@]h1:26379,h2:26379/mymaster[/db]
(rediss+sentinel:// for TLS; ?sentinel_password=… authenticates to the sentinels).
"""


def _env(name: str) -> str | None:
    v = os.environ.get("BACKSTAGE_" + name)
    return v if v not in (None, "") else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="backstage-prefork",
        description="Run Backstage jobs: one master process talks to Redis, N forked children run the handlers.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("app", metavar="module[:attr]", help="module holding the Backstage app (attr: its name, if several)")
    p.add_argument("-c", "--concurrency", type=int, help="child processes (default: CPU count) [CONCURRENCY]")
    p.add_argument("-Q", "--queues", help=f"queues to serve, most urgent first (default: {','.join(PRIORITIES)}) [QUEUES]")
    p.add_argument("--redis-url", help="Redis URL (default: the app's) [REDIS_URL]")
    p.add_argument("--tls-ca", metavar="FILE", help="CA certificate (PEM) for a rediss:// URL [TLS_CA]")
    p.add_argument("--tls-cert", metavar="FILE", help="client certificate (PEM) for a rediss:// URL [TLS_CERT]")
    p.add_argument("--tls-key", metavar="FILE", help="private key of --tls-cert (PEM) [TLS_KEY]")
    p.add_argument("--group", help="consumer group (default: the app's) [GROUP]")
    p.add_argument("--prefix", help="key prefix (default: the app's) [PREFIX]")
    p.add_argument("--consumer", help="consumer name, unique per master (default: host-pid) [CONSUMER]")
    p.add_argument("--max-tasks-per-child", type=int, help="recycle a child after N jobs [MAX_TASKS_PER_CHILD]")
    p.add_argument("--max-memory-per-child", type=float, metavar="MB",
                   help="recycle a child whose RSS passes MB, between jobs [MAX_MEMORY_PER_CHILD]")
    p.add_argument("--grace-period", type=float, metavar="S", help="seconds running jobs get at shutdown (default 30) [GRACE_PERIOD]")
    p.add_argument("--default-timeout", type=float, metavar="S",
                   help="time limit for jobs whose task and message name none (default: none) [DEFAULT_TIMEOUT]")
    p.add_argument("--prefetch", type=int, help="jobs fetched ahead per child (default 1) [PREFETCH]")
    p.add_argument("--max-batch", type=int,
                   help="jobs per frame to a child when jobs are fast, under 1 ms (default 32) [MAX_BATCH]")
    p.add_argument("--long-job-threshold", type=float, metavar="S",
                   help="jobs of tasks measured this long, or with a time limit this long, are fetched only "
                        "for idle children; with other masters alive, such a job that finds no idle child is "
                        "handed back to the queue (default 5) [LONG_JOB_THRESHOLD]")
    p.add_argument("--unknown-task", choices=["dead-letter", "requeue"],
                   help="an entry whose task this app has no handler for: dead-letter it (default), or put it "
                        "back on its stream for a Go or TypeScript worker that has one [UNKNOWN_TASK]")
    p.add_argument("--unknown-task-hops", type=int, metavar="N",
                   help="with --unknown-task requeue: dead-letter an entry requeued N times already "
                        "(default 10) [UNKNOWN_TASK_HOPS]")
    p.add_argument("--max-deliveries", type=int, help="deliveries before a crashing job is dead-lettered (default 5) [MAX_DELIVERIES]")
    p.add_argument("--idle-timeout", type=float, metavar="S",
                   help="seconds an entry may stay pending without renewal before another worker reclaims it "
                        "(default 60) [IDLE_TIMEOUT]")
    p.add_argument("--foreign-idle-timeout", type=float, metavar="S",
                   help="seconds an entry of a consumer that is not one of our masters (a Go or TypeScript "
                        "worker, which never renews) stays pending before we reclaim it; at least "
                        "--idle-timeout (default 600) [FOREIGN_IDLE_TIMEOUT]")
    p.add_argument("--dead-letter-maxlen", type=int, metavar="N",
                   help="approximate cap of each dead-letter stream (default 100000) [DEAD_LETTER_MAXLEN]")
    p.add_argument("--history", type=int, metavar="N",
                   help="keep a capped stream of the last ~N finished jobs for `backstage jobs` and the "
                        "dashboard (default: the app's history setting, else 0 = off) [HISTORY]")
    p.add_argument("--redis-timeout", type=float, metavar="S",
                   help="seconds a Redis command may take before it counts as failed (default 10) [REDIS_TIMEOUT]")
    p.add_argument("--heartbeat-interval", type=float, metavar="S",
                   help="seconds between presence heartbeats; a worker is gone 3 intervals after its last "
                        "(default 2) [HEARTBEAT_INTERVAL]")
    p.add_argument("--max-payload-bytes", type=int, metavar="N",
                   help="larger payloads are dead-lettered as malformed (default 16 MiB) [MAX_PAYLOAD_BYTES]")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Prometheus metrics on http://HOST:PORT/metrics from the master [METRICS_PORT]")
    p.add_argument("--metrics-host", metavar="HOST", help="address to bind the metrics port (default 0.0.0.0) [METRICS_HOST]")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="(default info) [LOG_LEVEL]")
    p.add_argument("--log-format", choices=["text", "json"], help="(default text) [LOG_FORMAT]")
    return p


def load_app(spec: str) -> Backstage:
    """Import ``module[:attr]`` and return its one Backstage app."""
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise AppNotFound(f"{spec!r}: expected module[:attr], e.g. app.tasks or app.tasks:app")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    if attr:
        try:
            obj: Any = getattr(module, attr)
        except AttributeError:
            raise AppNotFound(f"module {module_name!r} has no attribute {attr!r}") from None
        if not isinstance(obj, Backstage):
            raise AppNotFound(f"{spec} is a {type(obj).__name__}, not a Backstage app")
        return obj
    found: dict[int, list[str]] = {}
    apps: dict[int, Backstage] = {}
    for name, value in vars(module).items():
        if isinstance(value, Backstage):
            found.setdefault(id(value), []).append(name)
            apps[id(value)] = value
    if not apps:
        raise AppNotFound(f"module {module_name!r} holds no Backstage app: create one with app = Backstage(...)")
    if len(apps) > 1:
        names = ", ".join(sorted("/".join(v) for v in found.values()))
        raise AppNotFound(f"module {module_name!r} holds several Backstage apps ({names}): name one, e.g. {module_name}:{sorted(found.values())[0][0]}")
    return next(iter(apps.values()))


def _opt(args: argparse.Namespace, name: str, conv: Any = str) -> Any:
    v = getattr(args, name)
    if v is not None:
        return v
    raw = _env(name.upper())
    if raw is None:
        return None
    try:
        return conv(raw)
    except ValueError:
        raise ConfigError(f"BACKSTAGE_{name.upper()}={raw!r} is not a valid {conv.__name__}") from None


def config_from_args(args: argparse.Namespace, app: Backstage) -> tuple[WorkerConfig, str, str]:
    kw: dict[str, Any] = {}
    for name, conv in (("concurrency", int), ("max_tasks_per_child", int), ("max_memory_per_child", float),
                       ("grace_period", float), ("default_timeout", float), ("prefetch", int),
                       ("max_batch", int), ("max_deliveries", int), ("long_job_threshold", float), ("unknown_task_hops", int), ("idle_timeout", float),
                       ("foreign_idle_timeout", float),
                       ("dead_letter_maxlen", int), ("max_payload_bytes", int), ("redis_timeout", float),
                       ("heartbeat_interval", float), ("metrics_port", int), ("history", int)):
        v = _opt(args, name, conv)
        if v is not None:
            kw[name] = v
    queues = _opt(args, "queues")
    if queues is not None:
        kw["queues"] = tuple(q.strip() for q in queues.split(",") if q.strip())
    if "history" not in kw and app.history:
        kw["history"] = app.history
    kw["redis_url"] = _redis_url(args, app)
    kw["prefix"] = _opt(args, "prefix") or app.prefix
    kw["group"] = _opt(args, "group") or app.group
    kw["consumer"] = _opt(args, "consumer") or default_consumer()
    unknown = _opt(args, "unknown_task")
    if unknown:
        kw["unknown_task"] = unknown
    host = _opt(args, "metrics_host")
    if host:
        kw["metrics_host"] = host
    level = _opt(args, "log_level") or "info"
    fmt = _opt(args, "log_format") or "text"
    if level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log level {level!r}: use debug, info, warning or error")
    if fmt not in ("text", "json"):
        raise ConfigError(f"log format {fmt!r}: use text or json")
    return WorkerConfig(**kw), level, fmt


def _redis_url(args: argparse.Namespace, app: Backstage) -> str:
    """The master's URL with the TLS options folded in (they also reach the
    app's own client in the children when the app set none)."""
    url = _opt(args, "redis_url") or app.redis_url
    tls = TlsSettings(ca=_opt(args, "tls_ca"), cert=_opt(args, "tls_cert"), key=_opt(args, "tls_key"))
    if tls:
        if app.tls is None and app.redis_url.startswith("rediss"):
            app.tls = tls
        return with_tls(url, tls)
    return with_tls(url, app.tls) if app.tls and url.startswith("rediss") else url


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(_env("LOG_LEVEL") or args.log_level or "info", args.log_format or _env("LOG_FORMAT") or "text")
    try:
        app = load_app(args.app)
    except AppNotFound as exc:
        print(f"backstage-prefork: {exc}", file=sys.stderr)
        return EXIT_APP
    except Exception:  # noqa: BLE001 - the user's module failed to import
        print(f"backstage-prefork: could not import {args.app.partition(':')[0]!r}:", file=sys.stderr)
        traceback.print_exc()
        return EXIT_APP
    try:
        config, level, fmt = config_from_args(args, app)
    except ConfigError as exc:
        print(f"backstage-prefork: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(level, fmt)
    try:
        master = Master(app, config)
    except ConfigError as exc:  # e.g. a malformed Sentinel URL or a missing TLS file
        print(f"backstage-prefork: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return master.run()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
