"""The master's periodic duties besides jobs: presence heartbeats, broadcast
and remote control, cron.

Runs in the master, on its one thread: :class:`Housekeeper` is called from
the loop (``tick``) with bounded work per call and tells the loop its next
deadline. Redis errors propagate to the loop, which backs off.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import orjson
import psutil
import redis

from .. import __version__
from ..ops import presence
from ..protocol import wire
from . import ipc

if TYPE_CHECKING:
    from ..cron import CronEntry
    from .master import Master

__all__ = ["Housekeeper"]

log = logging.getLogger("backstage.prefork")


class Housekeeper:
    def __init__(self, master: "Master") -> None:
        self.m = master
        self.cfg = master.cfg
        self.interval = self.cfg.heartbeat_interval
        self.next_heartbeat = 0.0
        self.reported = (0, 0)  # processed, failed as of the last heartbeat
        self.next_broadcast = 0.0
        self.next_group_sweep = 0.0
        self.cron: list[tuple["CronEntry", int]] = []  # (entry, next tick in epoch ms)
        self.host = socket.gethostname()

    # -- life cycle ------------------------------------------------------------------
    def start(self) -> None:
        """Announce ourselves, join the broadcast stream, plan cron ticks.

        Presence comes first: another master sweeping broadcast groups keeps
        only those of live workers.
        """
        self._guarded("heartbeat", self.heartbeat)
        self._guarded("broadcast set-up", self.m.broker.join_broadcast)
        now = wire.now_ms()
        for entry in self.m.app.cron_entries:
            self.cron.append((entry, entry.next_after(now)))
            if entry.catch_up == "latest":
                self._guarded("cron catch-up", lambda e=entry: self._catch_up(e, now))

    def stop(self) -> None:
        """Withdraw presence and our broadcast group (a clean exit leaves nothing behind)."""
        def withdraw() -> None:
            presence.remove(self.m.broker.redis, self.m.keys, self.cfg.consumer)
            self.m.broker.redis.xgroup_destroy(self.m.keys.broadcast, self.m.broker.broadcast_group)
        self._guarded("withdrawing presence", withdraw)

    def _guarded(self, what: str, fn: Any) -> None:
        try:
            fn()
        except redis.RedisError as exc:
            self.m._redis_error(what, exc)

    def deadline(self) -> float:
        d = min(self.next_heartbeat, self.next_broadcast)
        if self.cron:
            wait_ms = min(t for _, t in self.cron) - wire.now_ms()
            d = min(d, self.m.clock() + max(wait_ms, 0) / 1000)
        return d

    def tick(self, now: float) -> None:
        if now >= self.next_heartbeat:
            self.heartbeat()
        if now >= self.next_broadcast:
            self.next_broadcast = now + self.cfg.broadcast_interval
            self.broadcasts()
        if self.cron and not self.m.stopping:
            self.fire_due_cron()
        if now >= self.next_group_sweep:
            self.next_group_sweep = now + max(self.cfg.idle_timeout, 10 * self.interval)
            live = set(presence.live_consumers(self.m.broker.redis, self.m.keys))
            for name in self.m.broker.forget_dead_broadcast_groups(live):
                log.info("removed broadcast group %s of a dead worker", name, extra={"event": "consumers-removed"})

    # -- presence --------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        m = self.m
        rss = 0
        for pid in [os.getpid(), *(c.pid for c in m.children)]:
            try:
                rss += psutil.Process(pid).memory_info().rss
            except psutil.Error:
                pass
        return {
            "consumer": self.cfg.consumer, "host": self.host, "pid": os.getpid(), "group": self.cfg.group,
            "queues": m.queues, "paused": sorted(m.paused & set(m.queues)), "concurrency": m.concurrency,
            "children": len(m.children), "busy": sum(1 for c in m.children if c.inflight),
            "processed": m.processed, "failed": m.failed, "rss": rss, "started_at": m.started,
            "version": __version__, "stopping": m.stopping,
            "cron": [{"name": e.name, "expr": e.expr, "task": e.task, "tz": e.tz, "queue": e.queue}
                     for e in m.app.cron_entries],
        }

    def heartbeat(self) -> None:
        self.next_heartbeat = self.m.clock() + self.interval
        ttl_ms = math.ceil(self.interval * 3000)
        m = self.m
        counts = (m.processed - self.reported[0], m.failed - self.reported[1])
        paused = presence.heartbeat(m.broker.redis, m.keys, self.cfg.consumer, self.info(), ttl_ms, counts)
        self.reported = (m.processed, m.failed)  # after the call: a failed heartbeat reports them next time
        self.m.set_paused(paused)

    # -- broadcast and remote control ---------------------------------------------------
    def broadcasts(self) -> None:
        for _mid, fields in self.m.broker.read_broadcasts():
            task = fields.get(b"taskName", b"").decode("utf-8", "replace")
            payload = fields.get(b"payload", b"null")
            if task == presence.CONTROL_TASK:
                self.control(payload)
                continue
            frame = ipc.pack_jobs(ipc.BROADCAST, [(0, task, None, 0, len(payload), False)], [payload])
            for c in self.m.children:
                if c.killed is None and c.job_w >= 0:
                    c.outbuf += frame
                    self.m.flush_child(c)

    def control(self, raw: bytes) -> None:
        try:
            msg = orjson.loads(raw)
            cmd = msg["cmd"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignored a malformed control message: %r", raw[:200])
            return
        target = msg.get("target")
        if target is not None and target != self.cfg.consumer:
            return
        value = msg.get("value")
        answer: dict[str, Any] = {"consumer": self.cfg.consumer, "cmd": cmd, "ok": True}
        m = self.m
        if cmd == "ping":
            answer.update(self.info())
        elif cmd == "shutdown":
            log.info("remote shutdown requested", extra={"event": "stop"})
            if not m.stopping:
                m.begin_stop()
        elif cmd in ("pause", "resume"):
            m.set_paused(presence.paused_queues(m.broker.redis, m.keys))
            answer["paused"] = sorted(m.paused & set(m.queues))
        elif cmd == "concurrency" and isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            log.info("remote control: concurrency %d -> %d", m.concurrency, value, extra={"event": "scale"})
            m.concurrency = value
            m._shrink()
            answer["concurrency"] = value
        else:
            answer.update(ok=False, error=f"unknown control command {cmd!r} / value {value!r}")
        reply_to = msg.get("reply_to")
        if isinstance(reply_to, str) and reply_to.startswith(f"{m.keys.prefix}:workers:reply:"):
            presence.reply(m.broker.redis, reply_to, answer)

    # -- cron ----------------------------------------------------------------------------
    def _catch_up(self, entry: "CronEntry", now_ms: int) -> None:
        last = self.m.broker.last_cron_tick(entry.name)
        latest = entry.latest_at_or_before(now_ms)
        if last is not None and latest > last:
            if self.fire(entry, latest):
                log.info("cron %s: fired tick %s missed while no worker ran", entry.name,
                         time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(latest / 1000)), extra={"event": "cron"})

    def fire_due_cron(self) -> None:
        now = wire.now_ms()
        for i, (entry, tick) in enumerate(self.cron):
            if tick > now:
                continue
            # behind by several ticks (suspended, clock jump): fire only the latest
            due = entry.latest_at_or_before(now)
            self.fire(entry, due)
            self.cron[i] = (entry, entry.next_after(now))

    def fire(self, entry: "CronEntry", tick: int) -> bool:
        m = self.m
        fields = m.worker_entry(entry.task, entry.payload_json, f"cron:{entry.name}:{tick}", wire.now_ms())
        fields["cronTick"] = str(tick)
        fired = m.broker.fire_cron(entry.name, tick, entry.marker_ttl_ms(tick), m.keys.stream(entry.queue), fields)
        if fired:
            log.debug("cron %s fired tick %d", entry.name, tick, extra={"event": "cron", "task": entry.task})
        return fired
