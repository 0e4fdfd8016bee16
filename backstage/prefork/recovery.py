"""Recovery: renew what this master holds, reclaim what dead workers held,
forget dead consumers.

Run from the master's loop on timers, bounded per call. Talks to Redis
through the broker; what it needs from the rest of the master comes as
plain callables (what we hold, how much room there is, which streams are
active, where reclaimed entries go), never the master itself.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Sequence

import redis

from ..protocol import wire
from .broker import MasterBroker
from .config import WorkerConfig
from .health import RedisHealth

__all__ = ["Recovery"]

log = logging.getLogger("backstage.prefork")


class Recovery:
    """XCLAIM renewal, XAUTOCLAIM reclaiming and dead-consumer clean-up."""

    def __init__(self, broker: MasterBroker, cfg: WorkerConfig, health: RedisHealth, queues: Sequence[str], *,
                 held: Callable[[], Iterable[tuple[int, bytes]]], room: Callable[[], int],
                 active: Callable[[], list[int]], accept: Callable[[int, bytes, list[bytes], int], None]) -> None:
        self.broker = broker
        self.cfg = cfg
        self.health = health
        self.nqueues = len(queues)
        self.held = held  # (si, entry id) of everything pending for us
        self.room = room
        self.active = active
        self.accept = accept
        self.cursors = [b"0-0"] * len(queues)  # XAUTOCLAIM cursor per subscribed stream

    def renew(self) -> None:
        """Keep our in-flight and buffered entries fresh so no reclaimer takes them."""
        ids: list[list[bytes]] = [[] for _ in range(self.nqueues)]
        for si, entry_id in self.held():
            ids[si].append(entry_id)
        if not any(ids):
            return
        try:
            lost = self.broker.renew(ids)
        except redis.RedisError as exc:
            self.health.failed("renew", exc)
            return
        if lost:
            log.warning("%d in-flight entries are no longer pending for us (reclaimed by another "
                        "worker); their outcomes will not be applied twice", lost, extra={"event": "renew"})

    def reclaim(self) -> bool:
        """Take over entries of dead workers (idle past idle_timeout); True if more may be waiting."""
        room = min(self.room(), 100)
        if room <= 0:
            return False
        active = self.active()
        if not active:
            return False
        try:
            entries, dead, cleaned = self.broker.reclaim(
                self.cursors, active, round(self.cfg.idle_timeout * 1000), room,
                self.cfg.max_deliveries, self.cfg.dead_letter_maxlen, wire.now_ms())
        except redis.RedisError as exc:
            self.health.failed("reclaim", exc)
            return False
        taken = len(entries) // 4
        if taken:
            log.info("reclaimed %d entries idle for over %gs from dead workers", taken, self.cfg.idle_timeout,
                     extra={"event": "reclaim"})
        if dead:
            log.error("dead-lettered %d entries delivered more than %d times (max-deliveries)", dead,
                      self.cfg.max_deliveries, extra={"event": "dead-letter"})
        if cleaned:
            log.info("cleaned %d pending entries whose stream entry was deleted", cleaned,
                     extra={"event": "reclaim"})
        held = {entry_id for _, entry_id in self.held()}
        for i in range(0, len(entries), 4):
            if entries[i + 1] in held:
                continue  # our own, still running (its renewal was late, e.g. after a Redis restart)
            self.accept(entries[i], entries[i + 1], entries[i + 2], int(entries[i + 3]))
        return taken >= room

    def forget_dead_consumers(self) -> None:
        try:
            gone = self.broker.forget_dead_consumers(round(self.cfg.idle_timeout * 2000))
        except redis.RedisError as exc:
            self.health.failed("consumer clean-up", exc)
            return
        if gone:
            log.info("removed %d dead consumers from group %s: %s", len(gone), self.cfg.group,
                     ", ".join(gone), extra={"event": "consumers-removed"})
