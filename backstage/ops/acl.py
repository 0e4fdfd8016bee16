"""Least-privilege Redis ACL rules for the roles of Backstage, and the
``backstage acl producer|worker|admin|viewer`` command that prints them.

- **producer** (``Client``, ``AsyncClient``, ``app.enqueue``): enqueue now,
  later, deduplicated or with a tracked result, broadcast, read a tracked
  job's status and result. It cannot read a queue: no XREAD, XREADGROUP,
  XRANGE, no consumer-group commands. With ACL selectors (Redis 7+) its
  SET/EXISTS are confined to ``P:dedupe:*`` and ``P:unique:*``, its
  DEL/HSET/HGET… to ``P:result:*`` and ``P:chord:*``, its cancels to
  ``P:cancel:*`` and ``P:cancels``, and its ZADD to ``P:scheduled`` and
  ``P:cancels``, so it cannot overwrite or delete a queue, nor forge our
  masters' registry ``P:workers``. It runs our Lua and no other: ``FCALL`` of
  the function library the worker loads (Redis 7+), never EVAL, EVALSHA,
  SCRIPT or FUNCTION LOAD.
- **worker** (``backstage-prefork``): everything a producer may do (handlers
  enqueue too), plus the consumer-group reads, acks, claims, delayed-job
  promotion, cron markers, broadcast groups, presence, loading the function
  library, and reading (never writing) the control stream.
- **admin** (the operator CLI ``backstage inspect|dlq|workers|control``,
  dashboard actions): everything a worker may do, plus the operator's reads
  (XRANGE, SCAN, MGET, BLPOP…) and writing ``P:control``.
- **viewer** (``backstage dashboard`` without ``--allow-actions``): reads
  only: stream lengths and ranges, consumer-group and pending summaries,
  the scheduled set, presence, cron markers, result hashes, job history.
  It can write nothing and run no Lua.

Neither the producer's nor (with selectors) the worker's key patterns
match ``P:control``: they grant ``P:<anything but control>`` with glob
negations (:func:`_all_but`), so only an admin can command workers.

Commands run inside our Lua scripts and functions are checked against the
caller's user too, so every command of ``backstage/lua/*.lua`` is listed.

Redis 6.2 has neither selectors nor functions: ``selectors=False`` (CLI
``--no-selectors``) prints flat rule sets it accepts, where the producer
runs ``enqueue.lua`` with EVALSHA and so must be allowed SCRIPT LOAD: it
could then load and run Lua of its own (a ``while true do end`` answers
BUSY to everyone until an admin runs SCRIPT KILL). On 6.2 a producer that
never uses ``dedupe_key`` nor ``result_ttl`` needs no script rights:
``scripts=False`` (``--no-scripts``) leaves them out.

Pure functions, no Redis traffic; run by the ``backstage`` CLI.
"""

from __future__ import annotations

import argparse
import orjson

from ..errors import ConfigError
from ..protocol.keys import DEFAULT_PREFIX, Keys

__all__ = ["ROLES", "rules", "setuser", "add_parser", "run"]

ROLES = ("producer", "worker", "admin", "viewer")

#: Connection set-up and the version check (INFO) every client does first.
_CONNECT = ("ping", "select", "info")
#: Redis 7+: our producer scripts as functions (loaded by the worker or an admin).
_FUNCTIONS = ("fcall",)
#: Redis 6.2: our scripts loaded once (SCRIPT LOAD), then run with EVALSHA.
_SCRIPTS = ("script|load", "evalsha")
#: Producer: XADD (enqueue, broadcast), ZADD (delayed); enqueue.lua adds the rest.
_PRODUCER_ROOT = ("xadd", "zadd")
_PRODUCER_DEDUPE = ("exists", "set")                            # enqueue.lua on P:dedupe:<key>, P:unique:<id>
_PRODUCER_RESULT = ("del", "hset", "pexpire", "hget", "hgetall")  # enqueue.lua, status(), result()
#: group.lua, cancel.lua and group_status() on P:chord:<id>; cancel.lua on P:cancel:<id> and P:cancels
_PRODUCER_CHORD = ("exists", "hset", "pexpire", "del", "hgetall", "hmget", "hexists")
_PRODUCER_CANCEL = ("set", "zadd", "zremrangebyscore")
#: Worker, beyond the producer's: fetch.lua, settle.lua, reclaim.lua, renew.lua, forget.lua,
#: promote.lua, cron_fire.lua, the blocking XREAD, broadcast groups, presence, queue metrics.
_WORKER = (
    "xread", "xreadgroup", "xack", "xdel", "xpending", "xautoclaim", "xclaim", "xlen",
    "xinfo|stream", "xinfo|groups", "xinfo|consumers", "xgroup|create", "xgroup|destroy", "xgroup|delconsumer",
    "zrange", "zrangebyscore", "zrem", "zremrangebyscore", "zscore", "zcount",
    "get", "smembers", "rpush", "hincrby", "expire",
    "hsetnx", "hmget", "hexists", "time", "type",  # settle.lua's group/chord operations
)
#: Viewer: the dashboard's read-only pages (backstage/web/data.py, deadletters.py, ops/history.py).
_VIEWER = (
    "ping", "select", "info", "scan", "exists", "type", "get", "mget", "smembers", "hgetall", "hmget",
    "xlen", "xrange", "xrevrange", "xpending", "xinfo|stream", "xinfo|groups", "xinfo|consumers",
    "zcard", "zrange", "zrangebyscore",
)
#: Worker, Redis 7+: load the producer library (functions live outside key space).
_WORKER_FUNCTIONS = ("function|load",)
#: Worker on P:control: read it, never write it.
_WORKER_CONTROL = ("xread", "xinfo|stream")
#: Admin, beyond the worker's: inspect, dlq, workers, control (and the dashboard's actions).
_ADMIN = (
    "xrange", "xrevrange", "xtrim", "xinfo|help", "scan", "type", "mget", "zcard", "zrangebyscore",
    "sadd", "srem", "blpop", "function|list", "function|delete", "script|load", "evalsha",
)
#: The control stream's name under the prefix: what producers (and workers) may not write.
_CONTROL = "control"


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _all_but(head: str, word: str) -> list[str]:
    """Glob patterns matching ``head`` + any non-empty text except ``word`` (ACL has no deny rules).

    For ``control``: ``P:[^c]*``, ``P:c``, ``P:c[^o]*``, ``P:co``, … ``P:contro[^l]*``,
    ``P:control?*``. Queue names never hold ``[``, ``]`` or ``^``, and ``head`` is escaped.
    """
    out = [f"{head}[^{word[0]}]*"]
    for i in range(1, len(word)):
        out += [f"{head}{word[:i]}", f"{head}{word[:i]}[^{word[i]}]*"]
    out.append(f"{head}{word}?*")
    return out


def rules(role: str, prefix: str = DEFAULT_PREFIX, *, selectors: bool = True, scripts: bool = True) -> list[str]:
    """The ACL rules of ``role`` (one of :data:`ROLES`) for keys under ``prefix``.

    Args:
        selectors: Redis 7+: confine the producer's SET/EXISTS to dedupe markers
            and its DEL/HSET/… to result hashes, and the worker's access to
            ``P:control`` to reads, with ACL selectors; the producer runs our
            scripts as functions (FCALL). False gives flat rule sets that
            Redis 6.2 accepts, where the producer needs EVALSHA and SCRIPT LOAD.
        scripts: False leaves the producer's script rights out altogether (for
            producers that use neither ``dedupe_key`` nor ``result_ttl``).

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
    out.append("-@all")
    if role == "viewer":  # reads only, P:control included (reading it steers nothing)
        return out + [f"~{head}*", *(f"+{c}" for c in _VIEWER)]
    if role == "admin" or (role == "worker" and not selectors):
        out.append(f"~{head}*")  # (a 6.2 worker can write P:control: it has no selectors to fence it off)
    else:
        out += [f"~{p}" for p in _all_but(head, _CONTROL)]
    grant = [*_CONNECT, *_PRODUCER_ROOT]
    if role == "producer" and selectors:
        grant.remove("zadd")  # only on P:scheduled (a selector below): not on P:workers, our masters' registry
    if role != "producer":
        grant += [*_FUNCTIONS, *_SCRIPTS]
    elif scripts:
        grant += _FUNCTIONS if selectors else _SCRIPTS
    if role != "producer" or not selectors:
        grant += [*_PRODUCER_DEDUPE, *_PRODUCER_RESULT, *_PRODUCER_CHORD, *_PRODUCER_CANCEL]
    if role != "producer":
        grant += _WORKER
        if selectors:
            grant += _WORKER_FUNCTIONS
    if role == "admin":
        grant += [c for c in _ADMIN if c not in grant]
    if not selectors:  # Redis 6.2 refuses rules naming commands it does not have
        grant = [c for c in grant if c != "fcall" and not c.startswith("function|")]
    out += [f"+{c}" for c in dict.fromkeys(grant)]  # each once, in order
    if role == "producer" and selectors:
        out.append(f"(~{head}scheduled +zadd)")
        out.append(f"(~{head}dedupe:* ~{head}unique:* {' '.join('+' + c for c in _PRODUCER_DEDUPE)})")
        out.append(f"(~{head}result:* {' '.join('+' + c for c in _PRODUCER_RESULT)})")
        out.append(f"(~{head}chord:* {' '.join('+' + c for c in _PRODUCER_CHORD)})")
        out.append(f"(~{head}cancel:* ~{head}cancels {' '.join('+' + c for c in _PRODUCER_CANCEL)})")
    if role == "worker" and selectors:
        out.append(f"(~{head}{_CONTROL} {' '.join('+' + c for c in _WORKER_CONTROL)})")
    return out


def setuser(role: str, prefix: str = DEFAULT_PREFIX, user: str | None = None, *, selectors: bool = True,
            scripts: bool = True) -> str:
    """One ``ACL SETUSER`` line for redis-cli (selectors in double quotes)."""
    name = user or f"backstage-{role}"
    if not name or any(c.isspace() or c == '"' for c in name):
        raise ConfigError(f"ACL user {name!r}: must be non-empty, without spaces or quotes")
    parts = [f'"{r}"' if " " in r else r for r in rules(role, prefix, selectors=selectors, scripts=scripts)]
    return " ".join(["ACL", "SETUSER", name, *parts])


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """The ``acl`` subcommand of the ``backstage`` CLI."""
    a = sub.add_parser(
        "acl", help="print the least-privilege ACL SETUSER line for a producer, a worker, an admin or a "
                    "dashboard viewer",
        description="Print an ACL SETUSER line granting only what a Backstage producer, worker, admin "
                    "(operator CLI, dashboard actions, remote control) or read-only dashboard viewer needs. "
                    "It sets no password: pipe it to redis-cli, then run ACL SETUSER <user> >password.",
    )
    a.add_argument("role", choices=ROLES)
    a.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"key prefix (default {DEFAULT_PREFIX})")
    a.add_argument("--user", default=None, help="ACL user name (default backstage-<role>)")
    a.add_argument("--no-selectors", action="store_true",
                   help="flat rule sets for Redis 6.2 (no ACL selectors, no functions): looser; a producer "
                        "gets EVALSHA and SCRIPT LOAD, so it could run Lua of its own")
    a.add_argument("--no-scripts", action="store_true",
                   help="no script rights for a producer that never uses dedupe_key nor result_ttl "
                        "(the safe choice on Redis 6.2)")
    a.add_argument("--json", action="store_true", help="the rules as a JSON list")


def run(args: argparse.Namespace) -> int:
    """Print the rules; returns the exit code."""
    selectors = not args.no_selectors
    scripts = not args.no_scripts
    if args.json:
        print(orjson.dumps({"role": args.role, "user": args.user or f"backstage-{args.role}",
                            "rules": rules(args.role, args.prefix, selectors=selectors, scripts=scripts)}).decode())
    else:
        print(setuser(args.role, args.prefix, args.user, selectors=selectors, scripts=scripts))
    return 0

