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
from ..ops.argv import Parser, add_version
from .config import WorkerConfig, default_consumer
from .loop import EXIT_APP, EXIT_REDIS, EXIT_USAGE, Master

__all__ = ["main", "load_app", "build_parser"]

EPILOG = """\
signals:
  TERM, INT    stop fetching, let running jobs finish within --grace-period,
               commit their outcomes, exit 0 (a second INT stops at once)
  QUIT         stop at once: kill children and hand their jobs back to their
               queues (same attempt); if Redis does not answer within a few
               seconds they stay pending and are recovered after --idle-timeout
  HUP          replace every child gracefully (after its current job)
  TTIN / TTOU  one child more / one child less

exit codes:
  0  stopped cleanly        1  forced stop, or outcomes left uncommitted
  2  bad options or config  3  the app could not be loaded, or a child could not boot
  4  Redis unreachable (after --wait-for-redis, if given) or older than 6.2 at start-up

Every option marked [NAME] also reads BACKSTAGE_NAME, e.g. --concurrency from
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
    p = Parser(
        prog="backstage-prefork",
        description="Run Backstage jobs: one master process talks to Redis, N forked children run the handlers.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("app", metavar="module[:attr]",
                   help="module holding the Backstage app, or its file (myapp/tasks.py); attr: its name, if several")
    add_version(p)
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
    p.add_argument("--max-deliveries", type=int, help="deliveries before a crashing job is dead-lettered (default 5) [MAX_DELIVERIES]")
    p.add_argument("--idle-timeout", type=float, metavar="S",
                   help="seconds an entry may stay pending without renewal before another worker reclaims it "
                        "(default 60) [IDLE_TIMEOUT]")
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
    p.add_argument("--wait-for-redis", type=float, metavar="S",
                   help="at start, wait up to S seconds for Redis to answer before giving up with exit code 4 "
                        "(default 0: give up at once) [WAIT_FOR_REDIS]")
    p.add_argument("--reload", action="store_true",
                   help="development: restart the worker when a .py file under the current directory (or "
                        "--reload-dir) changes; needs the [reload] extra (watchfiles)")
    p.add_argument("--reload-dir", action="append", metavar="DIR", help="directory to watch with --reload (repeatable)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="(default info) [LOG_LEVEL]")
    p.add_argument("--log-format", choices=["text", "json"], help="(default text) [LOG_FORMAT]")
    return p


def _module_of_file(path_text: str) -> str:
    """Module name of a file path (``myapp/tasks.py`` → ``myapp.tasks``), putting the
    directory above its outermost package on ``sys.path``."""
    path = os.path.abspath(path_text if path_text.endswith(".py") or not os.path.isfile(path_text + ".py")
                           else path_text + ".py")
    if not os.path.isfile(path) or not path.endswith(".py"):
        raise AppNotFound(f"{path_text!r}: no such Python file (current directory {os.getcwd()}); "
                          "give a file like myapp/tasks.py or a module path like myapp.tasks")
    directory, base = os.path.split(path)
    parts = [base[:-3]]
    while os.path.isfile(os.path.join(directory, "__init__.py")):
        directory, package = os.path.split(directory)
        parts.insert(0, package)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    return ".".join(parts)


def _import(module_name: str, given: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if not missing or not (module_name == missing or module_name.startswith(missing + ".")):
            raise  # the app itself imports something missing: its traceback says what
        where = os.environ.get("PYTHONPATH")
        raise AppNotFound(
            f"cannot import {given!r}: no module named {missing!r} (current directory {os.getcwd()}"
            + (f", PYTHONPATH={where}" if where else ", PYTHONPATH unset")
            + "); give the module path you would import (myapp.tasks) or a file path (myapp/tasks.py), "
            "and run from the directory that holds the package or add it to PYTHONPATH") from None


def load_app(spec: str) -> Backstage:
    """Import ``module[:attr]`` (or ``path/to/file.py[:attr]``) and return its one Backstage app.

    Raises:
        AppNotFound: the module cannot be found (one line: the current
            directory and how to name it), or holds no / several apps.
        Exception: whatever the app module raises while it is imported.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise AppNotFound(f"{spec!r}: expected module[:attr], e.g. app.tasks or app.tasks:app")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
        module_name = _module_of_file(module_name)
    module = _import(module_name, spec.partition(":")[0])
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
                       ("max_batch", int), ("max_deliveries", int), ("idle_timeout", float),
                       ("dead_letter_maxlen", int), ("max_payload_bytes", int), ("redis_timeout", float),
                       ("heartbeat_interval", float), ("metrics_port", int), ("history", int),
                       ("wait_for_redis", float)):
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
    words = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(words)
    setup_logging(_env("LOG_LEVEL") or args.log_level or "info", args.log_format or _env("LOG_FORMAT") or "text")
    if args.reload:
        from . import reload  # lazily: the worker itself never imports watchfiles

        grace = _opt(args, "grace_period", float)
        return reload.run(words, args.reload_dir or [os.getcwd()], 30.0 if grace is None else grace)
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
    try:
        return master.run()
    except KeyboardInterrupt:  # Ctrl-C while --wait-for-redis waits (before signals are ours)
        print("backstage-prefork: interrupted while waiting for Redis", file=sys.stderr)
        return EXIT_REDIS


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
