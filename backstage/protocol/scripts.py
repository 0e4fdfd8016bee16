"""Lua scripts: the one place they are read from ``backstage/lua/``.

Each ``.lua`` file is one atomic operation with a header naming its KEYS,
ARGV and return value. The worker registers them with redis-py's
``register_script`` (EVALSHA with a NOSCRIPT fallback).

Producers run ``enqueue.lua``, ``group.lua`` and ``cancel.lua`` as Redis 7 *functions* instead
(:func:`producer_library`): the worker (or an admin) loads the library with
``FUNCTION LOAD``, producers call it with ``FCALL``, so a producer's ACL user
needs neither ``EVAL``/``EVALSHA`` nor ``SCRIPT LOAD`` and cannot run Lua of
its own. On Redis 6.2 (no functions) producers fall back to EVALSHA.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import redis
import redis.asyncio

__all__ = ["source", "Library", "producer_library", "FUNCTIONS_VERSION", "load_library", "load_library_async",
           "function_missing"]

#: First Redis version with functions (FUNCTION LOAD / FCALL).
FUNCTIONS_VERSION = (7, 0, 0)

#: Scripts producers run, as functions of the producer library.
_PRODUCER_SCRIPTS = ("enqueue", "group", "cancel")


_INCLUDE = re.compile(r"^-- #include (\w+)$", re.M)


@cache
def source(name: str) -> str:
    """Text of ``backstage/lua/<name>.lua``, with each ``-- #include <part>``
    line replaced by ``backstage/lua/<part>.lua``: scripts cannot call one
    another, so a piece two of them share (``chord_done``) lives once and is
    spliced into both."""
    text = resources.files("backstage").joinpath(f"lua/{name}.lua").read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda m: source(m.group(1)), text)


@dataclass(frozen=True)
class Library:
    """A function library: its name, its code for FUNCTION LOAD, its functions by script name."""

    name: str
    code: str
    functions: dict[str, str]


@cache
def producer_library() -> Library:
    """The library of the scripts producers run, named after a digest of their code.

    Names carry the digest so that two Backstage versions on one Redis load
    two libraries side by side (function names are global to the server)
    instead of replacing each other's.
    """
    digest = hashlib.sha1("".join(source(n) for n in _PRODUCER_SCRIPTS).encode()).hexdigest()[:12]
    name = f"backstage_{digest}"
    functions = {n: f"backstage_{n}_{digest}" for n in _PRODUCER_SCRIPTS}
    parts = [f"#!lua name={name}\n"]
    for n in _PRODUCER_SCRIPTS:
        # the script's body unchanged: KEYS and ARGV become the callback's parameters
        parts.append(f"local function {n}(KEYS, ARGV)\n{source(n)}\nend\n"
                     f"redis.register_function('{functions[n]}', {n})\n")
    return Library(name, "".join(parts), functions)


def _already_loaded(exc: Exception) -> bool:
    return "already exists" in str(exc)


def load_library(r: "redis.Redis") -> bool:
    """``FUNCTION LOAD`` the producer library unless Redis has it; True if this call loaded it.

    Run by the worker at start and after Redis came back, and by the admin
    CLI (``backstage functions load``). Raises redis-py errors (NOPERM for a
    producer user: it may call the functions, never load code).
    """
    try:
        r.execute_command("FUNCTION", "LOAD", producer_library().code)  # type: ignore[no-untyped-call]
    except redis.ResponseError as exc:
        if _already_loaded(exc):
            return False
        raise
    return True


async def load_library_async(r: "redis.asyncio.Redis") -> bool:
    """asyncio twin of :func:`load_library`."""
    try:
        await r.execute_command("FUNCTION", "LOAD", producer_library().code)  # type: ignore[no-untyped-call]
    except redis.ResponseError as exc:
        if _already_loaded(exc):
            return False
        raise
    return True


def function_missing(reply: object) -> bool:
    """Is this reply Redis saying the function is not loaded (restart without
    persistence, FUNCTION FLUSH, a slot moved to a node that never loaded it)?"""
    return isinstance(reply, redis.ResponseError) and "Function not found" in str(reply)
