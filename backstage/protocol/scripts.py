"""Lua scripts: the one place they are read from ``backstage/lua/``.

Each ``.lua`` file is one atomic operation with a header naming its KEYS,
ARGV and return value. Callers register them with redis-py's
``register_script`` (EVALSHA with a NOSCRIPT fallback).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

__all__ = ["source"]


@cache
def source(name: str) -> str:
    """Text of ``backstage/lua/<name>.lua``."""
    return resources.files("backstage").joinpath(f"lua/{name}.lua").read_text(encoding="utf-8")
