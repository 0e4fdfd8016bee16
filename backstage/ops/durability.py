"""What survives a Redis restart: the server's persistence and eviction settings.

Read with ``INFO persistence`` and ``INFO memory`` (both allowed to the
worker's ACL user), by the master once at start (it warns) and by
``backstage inspect`` (it shows them). Nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

__all__ = ["Durability", "read", "warnings"]

README_SECTION = "README › Running Redis for Backstage"


@dataclass(frozen=True)
class Durability:
    """The settings that decide whether queued jobs survive a restart or memory pressure."""

    aof: bool
    rdb_last_save: int | None  # epoch seconds of the last snapshot, None if never
    rdb_changes: int | None  # writes since then
    maxmemory: int
    maxmemory_policy: str
    appendfsync: str | None = None  # only when CONFIG GET is allowed

    def describe(self) -> str:
        """One line for ``backstage inspect``."""
        if self.aof:
            parts = [f"AOF on (appendfsync {self.appendfsync})" if self.appendfsync else "AOF on"]
        else:
            parts = ["AOF off: a restart loses what the last RDB snapshot missed"
                     + (f" ({self.rdb_changes} writes since it)" if self.rdb_changes else "")]
        limit = f"maxmemory {self.maxmemory // 1048576} MB" if self.maxmemory else "no maxmemory"
        parts.append(f"{limit}, policy {self.maxmemory_policy}")
        return "; ".join(parts)

    def as_json(self) -> dict[str, Any]:
        return {"aof": self.aof, "appendfsync": self.appendfsync, "rdb_last_save": self.rdb_last_save,
                "rdb_changes_since_save": self.rdb_changes, "maxmemory": self.maxmemory,
                "maxmemory_policy": self.maxmemory_policy}


def _get(info: dict[Any, Any], name: str) -> Any:
    v = info.get(name, info.get(name.encode()))
    return v.decode() if isinstance(v, bytes) else v


def read(r: "redis.Redis", *, ask_config: bool = False) -> Durability:
    """The server's settings; ``ask_config`` also reads ``appendfsync`` (CONFIG GET:
    operators only; a refusal leaves it None). Raises redis-py errors."""
    p = r.info("persistence")
    m = r.info("memory")
    last = _get(p, "rdb_last_save_time")
    changes = _get(p, "rdb_changes_since_last_save")
    fsync = None
    if ask_config:
        try:
            raw = r.config_get("appendfsync")
            fsync = next(iter(raw.values()), None) if raw else None
            fsync = fsync.decode() if isinstance(fsync, bytes) else fsync
        except redis.ResponseError:  # NOPERM, or CONFIG renamed away on managed Redis
            fsync = None
    return Durability(
        aof=str(_get(p, "aof_enabled")) == "1",
        rdb_last_save=int(last) if last not in (None, "", 0, "0") else None,
        rdb_changes=int(changes) if changes not in (None, "") else None,
        maxmemory=int(_get(m, "maxmemory") or 0),
        maxmemory_policy=str(_get(m, "maxmemory_policy") or "unknown"),
        appendfsync=fsync,
    )


def warnings(d: Durability, where: str) -> list[str]:
    """What a worker should say once at start about these settings (empty: nothing)."""
    out = []
    if not d.aof:
        out.append(f"Redis at {where} runs without AOF (appendonly no): a Redis restart loses every job "
                   f"enqueued since its last RDB snapshot; turn on appendonly yes (see {README_SECTION})")
    if d.maxmemory and d.maxmemory_policy != "noeviction":
        out.append(f"Redis at {where} has maxmemory-policy {d.maxmemory_policy}: under memory pressure it "
                   f"deletes keys, queues included; use noeviction (see {README_SECTION})")
    return out
