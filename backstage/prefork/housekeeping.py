"""The master's periodic duties besides jobs: presence heartbeats, broadcast
and remote control, cron.

Runs in the master, on its one thread: :class:`Housekeeper` is called from
the loop (``tick``) with bounded work per call and tells the loop its next
deadline. Redis errors propagate to the loop, which backs off. What it may
do to the worker goes through the narrow :class:`Worker` protocol (the
loop implements it), never the master's own state.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from typing import TYPE_CHECKING, Any, Callable, Protocol

import psutil
import redis

from .. import __version__
from ..ops import control, presence
from ..protocol import wire
from ..protocol.keys import Keys
from . import ipc
from .broker import MasterBroker
from .config import WorkerConfig
from .health import RedisHealth
from .outcomes import worker_entry

if TYPE_CHECKING:
    from ..app import Backstage
    from ..cron import CronEntry

__all__ = ["Housekeeper", "Worker"]

log = logging.getLogger("backstage.prefork")


class Worker(Protocol):
    """What housekeeping may read from and do to its master."""

    @property
    def stopping(self) -> bool: ...

    def status(self) -> dict[str, Any]:
        """Presence fields the master owns: queues, paused, concurrency, children, busy, counts."""

    def child_pids(self) -> list[int]: ...

    def set_paused(self, paused: set[str]) -> None: ...

    def stop(self) -> None:
        """Begin a graceful stop."""

    def set_concurrency(self, n: int) -> None: ...

    def broadcast_to_children(self, frame: bytes) -> None: ...

    def cancel(self, job_ids: set[str]) -> None:
        """The job ids cancelled now: the ones not started never start, running ones are killed."""


class Housekeeper:
    """Heartbeats, broadcasts (and the control commands among them), cron ticks."""

    def __init__(self, broker: MasterBroker, keys: Keys, cfg: WorkerConfig, health: RedisHealth,
                 app: "Backstage", clock: Callable[[], float], worker: Worker) -> None:
        self.broker = broker
        self.keys = keys
        self.cfg = cfg
        self.health = health
        self.app = app
        self.clock = clock
        self.worker = worker
        self.interval = cfg.heartbeat_interval
        self.next_heartbeat = 0.0
        self.reported = (0, 0)  # processed, failed as of the last heartbeat
        self.next_broadcast = 0.0
        self.next_group_sweep = 0.0
        self.control_after = b"0-0"  # the last P:control id seen (set at start: only newer ones count)
        self.control_ready = False
        self.live = 1  # masters alive, this one included (from the last heartbeat)
        self.cron: list[tuple["CronEntry", int]] = []  # (entry, next tick in epoch ms)
        self.host = socket.gethostname()

    # -- life cycle ------------------------------------------------------------------
    def start(self) -> None:
        """Announce ourselves, join the broadcast stream, plan cron ticks.

        The control stream's tail is read before the first heartbeat (a
        command sent once a client sees us must not be skipped); presence
        comes before the broadcast group (a sweeping master removes groups of
        consumers known dead, which a restarted consumer name still is until
        its first heartbeat).
        """
        self._guarded("control set-up", self._join_control)
        self._guarded("heartbeat", self.heartbeat)
        self._guarded("broadcast set-up", self.broker.join_broadcast)
        self._guarded("reading cancels", self.cancels)  # a cancel issued while no worker ran
        now = wire.now_ms()
        for entry in self.app.cron_entries:
            self.cron.append((entry, entry.next_after(now)))
            if entry.catch_up == "latest":
                self._guarded("cron catch-up", lambda e=entry: self._catch_up(e, now))

    def stop(self) -> None:
        """Withdraw presence and our broadcast group (a clean exit leaves nothing behind)."""
        def withdraw() -> None:
            presence.remove(self.broker.redis, self.keys, self.cfg.consumer)
            self.broker.redis.xgroup_destroy(self.keys.broadcast, self.broker.broadcast_group)
        self._guarded("withdrawing presence", withdraw)

    def _join_control(self) -> None:
        self.control_after = control.tail(self.broker.redis, self.keys)
        self.control_ready = True

    def _guarded(self, what: str, fn: Any) -> None:
        try:
            fn()
        except redis.RedisError as exc:
            self.health.failed(what, exc)

    def deadline(self) -> float:
        """When :meth:`tick` has work (cron ticks do not count while the worker stops: they are skipped)."""
        d = min(self.next_heartbeat, self.next_broadcast, self.next_group_sweep)
        if self.cron and not self.worker.stopping:
            wait_ms = min(t for _, t in self.cron) - wire.now_ms()
            d = min(d, self.clock() + max(wait_ms, 0) / 1000)
        return d

    def tick(self, now: float) -> None:
        if now >= self.next_heartbeat:
            self.heartbeat()
        if now >= self.next_broadcast:
            self.next_broadcast = now + self.cfg.broadcast_interval
            self.broadcasts()
            self.controls()
            self.cancels()
        if self.cron and not self.worker.stopping:
            self.fire_due_cron()
        if now >= self.next_group_sweep:
            self.next_group_sweep = now + max(self.cfg.idle_timeout, 10 * self.interval)
            dead = presence.dead_consumers(self.broker.redis, self.keys)
            for name in self.broker.forget_dead_broadcast_groups(dead):
                log.info("removed broadcast group %s of a dead worker", name, extra={"event": "consumers-removed"})

    # -- presence --------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        rss = 0
        for pid in [os.getpid(), *self.worker.child_pids()]:
            try:
                rss += psutil.Process(pid).memory_info().rss
            except psutil.Error:
                pass
        return {"consumer": self.cfg.consumer, "host": self.host, "pid": os.getpid(), "group": self.cfg.group,
                **self.worker.status(), "rss": rss, "version": __version__,
                "cron": [{"name": e.name, "expr": e.expr, "task": e.task, "tz": e.tz, "queue": e.queue}
                         for e in self.app.cron_entries]}

    def heartbeat(self) -> None:
        self.next_heartbeat = self.clock() + self.interval
        ttl_ms = math.ceil(self.interval * 3000)
        info = self.info()
        done = (info["processed"], info["failed"])
        counts = (done[0] - self.reported[0], done[1] - self.reported[1])
        paused, self.live = presence.heartbeat(self.broker.redis, self.keys, self.cfg.consumer, info, ttl_ms,
                                               counts)
        self.reported = done  # after the call: a failed heartbeat reports them next time
        self.worker.set_paused(paused)

    # -- cancellation ------------------------------------------------------------------
    def cancels(self) -> None:
        """Read the cancelled job ids (one ZRANGEBYSCORE, usually empty) and hand them to the worker."""
        self.worker.cancel(self.broker.cancelled_ids(wire.now_ms()))

    # -- broadcast and remote control (control.Controllable) ---------------------------------
    def broadcasts(self) -> None:
        for _mid, fields in self.broker.read_broadcasts():
            task = fields.get(b"taskName", b"").decode("utf-8", "replace")
            payload = fields.get(b"payload", b"null")
            if task == control.CONTROL_TASK:
                # anyone who may enqueue may broadcast: control comes only from P:control (admin)
                log.warning("ignored a control command sent as a broadcast: send it with an admin user "
                            "(`backstage control`, `backstage acl admin`)", extra={"event": "control-refused"})
                continue
            self.worker.broadcast_to_children(ipc.pack_broadcast(task, payload))

    def controls(self) -> None:
        """Obey the control messages admins appended to ``P:control`` since the last look."""
        if not self.control_ready:
            self._join_control()
        for mid, payload in control.read(self.broker.redis, self.keys, self.control_after):
            self.control_after = mid
            self.control(payload)

    def control(self, raw: bytes) -> None:
        req = control.parse_request(raw)
        if req is None:
            log.warning("ignored a malformed control message: %r", raw[:200])
            return
        if req.target is not None and req.target != self.cfg.consumer:
            return
        answer = control.execute(req, self, self.cfg.consumer)
        if not answer["ok"]:
            log.warning("refused a control command: %s", answer.get("error"), extra={"event": "control-refused"})
        control.reply(self.broker.redis, self.keys, req.reply_to, answer)

    @property
    def stopping(self) -> bool:
        return self.worker.stopping

    def presence_info(self) -> dict[str, Any]:
        return self.info()

    def request_stop(self) -> None:
        log.info("remote shutdown requested", extra={"event": "stop"})
        if not self.worker.stopping:
            self.worker.stop()

    def reload_paused(self) -> list[str]:
        self.worker.set_paused(presence.paused_queues(self.broker.redis, self.keys))
        return list(self.worker.status()["paused"])

    def set_concurrency(self, n: int) -> int:
        log.info("remote control: concurrency %d -> %d", self.worker.status()["concurrency"], n,
                 extra={"event": "scale"})
        self.worker.set_concurrency(n)
        return n

    # -- cron ----------------------------------------------------------------------------
    def _catch_up(self, entry: "CronEntry", now_ms: int) -> None:
        last = self.broker.last_cron_tick(entry.name)
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
        fields = worker_entry(self.app, entry.task, entry.payload_json, f"cron:{entry.name}:{tick}", wire.now_ms())
        fields["cronTick"] = str(tick)
        fired = self.broker.fire_cron(entry.name, tick, entry.marker_ttl_ms(tick), self.keys.stream(entry.queue),
                                      fields)
        if fired:
            log.debug("cron %s fired tick %d", entry.name, tick, extra={"event": "cron", "task": entry.task})
        return fired
