"""Least-privilege Redis ACL rules for the sides of Backstage, and the
``backstage acl worker|producer|viewer`` command that prints them.

- **producer** (``Client``, ``AsyncClient``, ``app.enqueue``): enqueue now,
  later, deduplicated or with a tracked result, broadcast, read a tracked
  job's status and result. It cannot read a queue: no XREAD, XREADGROUP,
  XRANGE, no consumer-group commands. With ACL selectors (Redis 7+) its
  SET/EXISTS are confined to ``P:dedupe:*`` and its DEL/HSET/HGET… to
  ``P:result:*``, so it cannot overwrite or delete a queue either.
- **worker** (``backstage-prefork``): everything a producer may do (handlers
  enqueue too), plus the consumer-group reads, acks, claims, delayed-job
  promotion, cron markers, broadcast groups and presence.
- **viewer** (``backstage dashboard`` without ``--allow-actions``): reads
  only: stream lengths and ranges, consumer-group and pending summaries,
  the scheduled set, presence, cron markers, result hashes, job history.
  It can write nothing and run no Lua.

Commands run inside our Lua scripts are checked against the caller's user
too, so every command of ``backstage/lua/*.lua`` is listed. The operator
CLI (``backstage inspect``, ``dlq``, ``control``, ``workers``) is not
covered: run it as an administrative user.

Pure functions, no Redis traffic; run by the ``backstage`` CLI.
"""

from __future__ import annotations

import argparse
import orjson

from ..errors import ConfigError
from ..protocol.keys import DEFAULT_PREFIX, Keys

__all__ = ["ROLES", "rules", "setuser", "add_parser", "run"]

ROLES = ("producer", "worker", "viewer")

#: Connection set-up and the version check (INFO) every client does first.
_CONNECT = ("ping", "select", "info")
#: Our Lua scripts: loaded once (SCRIPT LOAD), then run with EVALSHA.
_SCRIPTS = ("script|load", "evalsha")
#: Producer: XADD (enqueue, broadcast), ZADD (delayed); enqueue.lua adds the rest.
_PRODUCER_ROOT = ("xadd", "zadd")
_PRODUCER_DEDUPE = ("exists", "set")                            # enqueue.lua on P:dedupe:<key>
_PRODUCER_RESULT = ("del", "hset", "pexpire", "hget", "hgetall")  # enqueue.lua, status(), result()
#: Worker, beyond the producer's: fetch.lua, settle.lua, reclaim.lua, renew.lua, forget.lua,
#: promote.lua, cron_fire.lua, the blocking XREAD, broadcast groups, presence, queue metrics.
_WORKER = (
    "xread", "xreadgroup", "xack", "xdel", "xpending", "xautoclaim", "xclaim", "xlen",
    "xinfo|stream", "xinfo|groups", "xinfo|consumers", "xgroup|create", "xgroup|destroy", "xgroup|delconsumer",
    "zrange", "zrangebyscore", "zrem", "zremrangebyscore",
    "get", "smembers", "rpush", "hincrby", "expire",
)


#: Viewer: the dashboard's read-only pages (backstage/web/data.py, deadletters.py, ops/history.py).
_VIEWER = (
    "ping", "select", "info", "scan", "exists", "type", "get", "mget", "smembers", "hgetall", "hmget",
    "xlen", "xrange", "xrevrange", "xpending", "xinfo|stream", "xinfo|groups", "xinfo|consumers",
    "zcard", "zrange", "zrangebyscore",
)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def rules(role: str, prefix: str = DEFAULT_PREFIX, *, selectors: bool = True) -> list[str]:
    """The ACL rules of ``role`` (``"producer"`` or ``"worker"``) for keys under ``prefix``.

    Args:
        selectors: confine the producer's SET/EXISTS to dedupe markers and its
            DEL/HSET/… to result hashes with ACL selectors (Redis 7+). False
            gives one flat rule set that Redis 6.2 accepts.

    Returns:
        Rules for ``ACL SETUSER <user> <rules…>``: they reset the user's keys,
        channels and commands, then grant only what ``role`` needs. No password:
        add one with ``ACL SETUSER <user> >password``.

    Raises:
        ConfigError: unknown role or invalid prefix.
    """
    if role not in ROLES:
        raise ConfigError(f"ACL role {role!r}: use one of {', '.join(ROLES)}")
    head = _glob_escape(Keys(prefix).prefix) + ":"
    out = ["on", "resetkeys", "resetchannels"]
    if selectors:
        out.append("clearselectors")
    out += ["-@all", f"~{head}*"]
    if role == "viewer":
        return out + [f"+{c}" for c in _VIEWER]
    grant = [*_CONNECT, *_SCRIPTS, *_PRODUCER_ROOT]
    if role == "worker" or not selectors:
        grant += [*_PRODUCER_DEDUPE, *_PRODUCER_RESULT]
    if role == "worker":
        grant += _WORKER
    out += [f"+{c}" for c in grant]
    if role == "producer" and selectors:
        out.append(f"(~{head}dedupe:* {' '.join('+' + c for c in _PRODUCER_DEDUPE)})")
        out.append(f"(~{head}result:* {' '.join('+' + c for c in _PRODUCER_RESULT)})")
    return out


def setuser(role: str, prefix: str = DEFAULT_PREFIX, user: str | None = None, *, selectors: bool = True) -> str:
    """One ``ACL SETUSER`` line for redis-cli (selectors in double quotes)."""
    name = user or f"backstage-{role}"
    if not name or any(c.isspace() or c == '"' for c in name):
        raise ConfigError(f"ACL user {name!r}: must be non-empty, without spaces or quotes")
    parts = [f'"{r}"' if " " in r else r for r in rules(role, prefix, selectors=selectors)]
    return " ".join(["ACL", "SETUSER", name, *parts])


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """The ``acl`` subcommand of the ``backstage`` CLI."""
    a = sub.add_parser(
        "acl", help="print the least-privilege ACL SETUSER line for a worker, a producer or a dashboard viewer",
        description="Print an ACL SETUSER line granting only what a Backstage worker or producer needs. "
                    "It sets no password: pipe it to redis-cli, then run ACL SETUSER <user> >password.",
    )
    a.add_argument("role", choices=ROLES)
    a.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"key prefix (default {DEFAULT_PREFIX})")
    a.add_argument("--user", default=None, help="ACL user name (default backstage-<role>)")
    a.add_argument("--no-selectors", action="store_true",
                   help="one flat rule set for Redis 6.2 (no ACL selectors; looser for producers)")
    a.add_argument("--json", action="store_true", help="the rules as a JSON list")


def run(args: argparse.Namespace) -> int:
    """Print the rules; returns the exit code."""
    selectors = not args.no_selectors
    if args.json:
        print(orjson.dumps({"role": args.role, "user": args.user or f"backstage-{args.role}",
                            "rules": rules(args.role, args.prefix, selectors=selectors)}).decode())
    else:
        print(setuser(args.role, args.prefix, args.user, selectors=selectors))
    return 0

