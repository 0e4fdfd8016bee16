"""``backstage`` (also ``python -m backstage``): the operator's command line.

Commands: ``enqueue``, ``cancel``, ``group``, ``inspect``, ``workers``, ``job``, ``control``, ``dlq``, ``jobs``,
``dashboard``, ``functions`` and ``acl``. Every command
that talks to Redis takes ``--redis-url/--prefix/--group`` and ``--tls-ca/--tls-cert/--tls-key``
(with BACKSTAGE_* environment fallbacks) and ``--json``. Errors are one line on stderr and a
non-zero exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Sequence, cast

import orjson
import redis

from . import acl, dlq, durability, history, inspect, jobinfo, presence
from .argv import Parser, add_version
from ..connections import redis_conn
from ..client import Client
from ..errors import BackstageError
from ..protocol import scripts
from ..protocol.keys import DEFAULT_GROUP, DEFAULT_PREFIX, PRIORITIES, Keys, validate_queue

__all__ = ["main"]

EXIT_ERROR = 1
EXIT_USAGE = 2


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis-url", default=None, help="Redis URL [BACKSTAGE_REDIS_URL, REDIS_URL]")
    p.add_argument("--prefix", default=None, help=f"key prefix (default {DEFAULT_PREFIX}) [BACKSTAGE_PREFIX]")
    p.add_argument("--group", default=None, help=f"consumer group (default {DEFAULT_GROUP}) [BACKSTAGE_GROUP]")
    p.add_argument("--tls-ca", metavar="FILE", help="CA certificate (PEM) for rediss:// [BACKSTAGE_TLS_CA]")
    p.add_argument("--tls-cert", metavar="FILE", help="client certificate (PEM) [BACKSTAGE_TLS_CERT]")
    p.add_argument("--tls-key", metavar="FILE", help="private key of --tls-cert (PEM) [BACKSTAGE_TLS_KEY]")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="backstage", description="Inspect and feed Backstage queues.")
    add_version(p)
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("enqueue", help="enqueue one job")
    e.add_argument("task")
    e.add_argument("payload", nargs="?", default="null", help="JSON payload (default null)")
    e.add_argument("--priority", choices=PRIORITIES)
    e.add_argument("--queue")
    e.add_argument("--delay", type=float, help="seconds before the job is due")
    e.add_argument("--dedupe-key")
    e.add_argument("--dedupe-ttl", type=float)
    e.add_argument("--attempts", type=int)
    e.add_argument("--timeout", type=float, help="time limit in seconds")
    _common(e)

    x = sub.add_parser("cancel", help="cancel a job, group or chord (honoured later if no worker runs)")
    x.add_argument("id", metavar="ID", help="the job id (or group/chord id)")
    x.add_argument("--ttl", type=float, default=86400.0, help="seconds the cancel waits to be carried out "
                                                              "(default 86400)")
    _common(x)

    g = sub.add_parser("group", help="done/failed/pending counts of a group or chord")
    g.add_argument("id", metavar="ID")
    _common(g)

    w = sub.add_parser("workers", help="live backstage-prefork masters (from their heartbeats)")
    w.add_argument("--jobs", action="store_true",
                   help="also list the job each busy child runs now (id, task, started, deadline)")
    _common(w)

    j = sub.add_parser("job", help="a job's status, result or error (jobs with result_ttl), and where it runs now")
    j.add_argument("id", metavar="JOB_ID", help="the id enqueue returned")
    _common(j)

    c = sub.add_parser("control", help="remote control of live masters: ping, shutdown, pause, resume, concurrency")
    c.add_argument("cmd", choices=["ping", "shutdown", "pause", "resume", "concurrency"])
    c.add_argument("value", nargs="?", help="the queue (pause/resume) or number of children (concurrency)")
    c.add_argument("--worker", help="only this consumer (default: every live master)")
    c.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for answers (default 2)")
    _common(c)

    i = sub.add_parser("inspect", help="per-queue lengths, pending entries, lag, dead letters")
    i.add_argument("--queues", default=None, help="comma-separated queues (default: every queue found)")
    _common(i)

    d = sub.add_parser("dlq", help="list, show, requeue or purge the dead letters of a queue")
    dsub = d.add_subparsers(dest="action", required=True)
    for action, what in (("list", "a table of dead letters, oldest first"),
                         ("show", "one dead letter, every field"),
                         ("requeue", "move dead letters back to their ready stream as fresh jobs"),
                         ("purge", "delete dead letters for good")):
        a = dsub.add_parser(action, help=what, description=what)
        a.add_argument("queue", metavar="QUEUE", help="the queue whose P:QUEUE:dead-letter stream to use")
        if action == "show":
            a.add_argument("id", metavar="ID", help="entry id in the dead-letter stream")
        else:
            a.add_argument("--task", help="only entries whose taskName is TASK")
            a.add_argument("--since", help="only entries dead-lettered since: ISO-8601 time, age (10m, 2h, 3d) "
                                           "or epoch ms")
            a.add_argument("--limit", type=int, help="at most N entries (default: 50 for list, all otherwise)")
        if action == "requeue":
            a.add_argument("--force", action="store_true",
                           help="also requeue unknown-task and oversize entries that no live worker would run")
        if action in ("requeue", "purge"):
            a.add_argument("--batch", type=int, default=None,
                           help=f"entries per Redis call (default {dlq.DEFAULT_BATCH}) [BACKSTAGE_DLQ_BATCH]")
        if action == "purge":
            a.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        _common(a)
    f = sub.add_parser("functions", help="load the function library producers call (Redis 7+; workers do it too)",
                       description="FUNCTION LOAD the library producers run enqueue.lua from, unless it is "
                                   "there. Workers load it at start; run this as an admin user when producers "
                                   "start before any worker.")
    f.add_argument("action", choices=["load"])
    _common(f)
    subs = cast("argparse._SubParsersAction[argparse.ArgumentParser]", sub)
    acl.add_parser(subs)
    history.add_parser(subs, _common)
    from ..web import cli as web_cli  # no web dependency imported until the command runs
    web_cli.add_parser(subs, _common)
    return p


def _settings(args: argparse.Namespace) -> tuple[str, str, str]:
    url = redis_conn.resolve_url(args.redis_url or os.environ.get("BACKSTAGE_REDIS_URL") or None)
    tls = redis_conn.TlsSettings(*(getattr(args, f"tls_{n}") or os.environ.get(f"BACKSTAGE_TLS_{n.upper()}") or None
                                   for n in ("ca", "cert", "key")))
    url = redis_conn.with_tls(url, tls)
    prefix = args.prefix or os.environ.get("BACKSTAGE_PREFIX") or DEFAULT_PREFIX
    group = args.group or os.environ.get("BACKSTAGE_GROUP") or DEFAULT_GROUP
    return url, prefix, group


def cmd_enqueue(args: argparse.Namespace) -> int:
    url, prefix, _ = _settings(args)
    try:
        payload = orjson.loads(args.payload)
    except orjson.JSONDecodeError as exc:
        raise BackstageError(f"payload is not valid JSON: {exc}") from None
    with Client(url, prefix=prefix) as client:
        job_id = client.enqueue(args.task, payload, priority=args.priority, queue=args.queue, delay=args.delay,
                                dedupe_key=args.dedupe_key, dedupe_ttl=args.dedupe_ttl, attempts=args.attempts,
                                timeout=args.timeout)
    if args.json:
        print(orjson.dumps({"job_id": job_id, "deduplicated": job_id is None}).decode())
    else:
        print(job_id if job_id is not None else "deduplicated: a job with this dedupe key is already enqueued")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    url, prefix, _ = _settings(args)
    with Client(url, prefix=prefix) as client:
        out = client.cancel(args.id, ttl=args.ttl)
    if args.json:
        print(orjson.dumps({"id": args.id, **out}).decode())
    else:
        extra = f" and {out['members']} pending member(s)" if out["members"] else ""
        print(f"cancelled {args.id}{extra} (status was {out['status'] or 'not kept'})")
    return 0


def cmd_group(args: argparse.Namespace) -> int:
    url, prefix, _ = _settings(args)
    with Client(url, prefix=prefix) as client:
        st = client.group_status(args.id)
    if st is None:
        raise BackstageError(f"no group or chord {args.id!r} (unknown, or its state expired)")
    if args.json:
        print(orjson.dumps(st).decode())
    else:
        print(f"{st['id']}: {st['state']}  total {st['total']}  done {st['done']}  failed {st['failed']}  "
              f"pending {st['pending']}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    url, prefix, group = _settings(args)
    keys = Keys(prefix)
    r = redis_conn.sync_client(url, slot_key=prefix)
    where = redis_conn.endpoint(r)
    with redis_conn.translate_errors(where):
        if args.queues:
            queues = [validate_queue(q.strip()) for q in args.queues.split(",") if q.strip()]
        else:
            queues = inspect.discover_queues(r, keys)
        stats = inspect.queue_stats(r, keys, group, queues, live=set(presence.live_consumers(r, keys)))
        stale = sorted({name for row in stats for name in row.stale_consumers})
        rows = [row.as_dict() for row in stats]
        scheduled = r.zcard(keys.scheduled)
        persistence = durability.read(r, ask_config=True)
    if args.json:
        print(orjson.dumps({"prefix": prefix, "group": group, "scheduled": scheduled, "queues": rows,
                            "persistence": persistence.as_json()}).decode())
        return 0
    cols = ("queue", "length", "pending", "oldest_pending_s", "lag", "consumers", "dead_letters")
    heads = ("QUEUE", "LENGTH", "PENDING", "OLDEST PENDING", "LAG", "CONSUMERS", "DEAD")
    cells = [[("-" if row[c] is None else (f"{row[c]}s" if c == "oldest_pending_s" else str(row[c]))) for c in cols]
             for row in rows]
    widths = [max(len(h), *(len(r_[i]) for r_ in cells)) for i, h in enumerate(heads)]
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths)))
    for r_ in cells:
        print("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r_, widths))))
    print(f"\nscheduled: {scheduled}    prefix: {prefix}    group: {group}")
    if stale:
        print(f"stale consumers: {', '.join(sorted(stale))} (stopped workers; not counted above; live workers "
              "remove them after 2 x --idle-timeout)")
    print(f"redis: {persistence.describe()}")
    for text in durability.warnings(persistence, where):
        print(f"warning: {text}")
    return 0


def _table(heads: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(r_[i]) for r_ in rows)) if rows else len(h) for i, h in enumerate(heads)]
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths)))
    for r_ in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r_, widths)))


def _worker_row(w: dict[str, Any]) -> list[str]:
    up = time.time() - float(w.get("started_at", time.time()))
    return [str(w.get("consumer", "?")), f"{w.get('host', '?')}:{w.get('pid', '?')}",
            ",".join(w.get("queues", [])) + (f" (paused {','.join(w['paused'])})" if w.get("paused") else ""),
            f"{w.get('busy', 0)}/{w.get('children', 0)}", str(w.get("processed", 0)), str(w.get("failed", 0)),
            f"{int(w.get('rss', 0)) / 1048576:.0f} MB", f"{up:.0f}s", str(w.get("version", "?"))]


_WORKER_HEADS = ("CONSUMER", "HOST:PID", "QUEUES", "BUSY", "PROCESSED", "FAILED", "RSS", "UP", "VERSION")


def cmd_workers(args: argparse.Namespace) -> int:
    url, prefix, _ = _settings(args)
    with Client(url, prefix=prefix) as client:
        workers = client.workers()
    if args.json:
        print(orjson.dumps(workers).decode())
    elif not workers:
        print("no live workers")
    else:
        _table(_WORKER_HEADS, [_worker_row(w) for w in workers])
        if args.jobs:
            rows = jobinfo.running_rows(workers)
            print()
            if rows:
                _table(jobinfo.RUNNING_HEADS, rows)
            else:
                print("no job running")
    return 0


def cmd_job(args: argparse.Namespace) -> int:
    url, prefix, _ = _settings(args)
    return jobinfo.cmd_job(args, url, prefix)


def cmd_control(args: argparse.Namespace) -> int:
    url, prefix, _ = _settings(args)
    value: Any = args.value
    if args.cmd in ("pause", "resume") and not value:
        raise BackstageError(f"control {args.cmd}: name the queue, e.g. backstage control {args.cmd} low")
    if args.cmd == "concurrency":
        try:
            value = int(value)
        except (TypeError, ValueError):
            raise BackstageError(f"control concurrency: {value!r} is not a number of children") from None
    with Client(url, prefix=prefix) as client:
        answers = client.control(args.cmd, value, target=args.worker, timeout=args.timeout)
    if args.json:
        print(orjson.dumps(answers).decode())
    elif args.cmd == "ping" and answers:
        _table(_WORKER_HEADS, [_worker_row(a) for a in answers])
    else:
        for a in answers:
            print(f"{a['consumer']}: {'ok' if a.get('ok') else a.get('error', 'failed')}")
        if not answers:
            print("no answer")
    return 0 if answers else EXIT_ERROR


def cmd_functions(args: argparse.Namespace) -> int:
    url, prefix, _ = _settings(args)
    with Client(url, prefix=prefix) as client, redis_conn.translate_errors(client.where):
        version = redis_conn.check_version(client.redis.info("server"), client.where)
        if version < scripts.FUNCTIONS_VERSION:
            raise BackstageError(f"Redis at {client.where} is older than 7.0: it has no functions "
                                 "(producers use EVALSHA there)")
        loaded = scripts.load_library(client.redis)
    name = scripts.producer_library().name
    print(f"{name}: {'loaded' if loaded else 'already loaded'}")
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    url, prefix, _ = _settings(args)
    return dlq.run(args, url, prefix)


def cmd_jobs(args: argparse.Namespace) -> int:
    url, prefix, _ = _settings(args)
    return history.run(args, url, prefix)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from ..web import cli as web_cli

    url, prefix, group = _settings(args)
    return web_cli.run(args, url, prefix, group)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"enqueue": cmd_enqueue, "cancel": cmd_cancel, "group": cmd_group, "inspect": cmd_inspect,
                "workers": cmd_workers, "control": cmd_control, "dlq": cmd_dlq, "acl": acl.run, "jobs": cmd_jobs,
                "dashboard": cmd_dashboard, "job": cmd_job, "functions": cmd_functions}
    try:
        return commands[args.command](args)
    except BackstageError as exc:
        print(f"backstage: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except redis.RedisError as exc:
        print(f"backstage: {redis_conn.translate(exc, '?')}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
