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
    """XCLAIM renewal, reclaiming (XPENDING IDLE + XCLAIM) and dead-consumer clean-up."""

    def __init__(self, broker: MasterBroker, cfg: WorkerConfig, health: RedisHealth, queues: Sequence[str], *,
                 held: Callable[[], Iterable[tuple[int, bytes]]], room: Callable[[], int],
                 active: Callable[[], list[int]], accept: Callable[[int, bytes, list[bytes], int], None],
                 children: Callable[[], int], buffered: Callable[[], int],
                 to_front: Callable[[int], None]) -> None:
        self.broker = broker
        self.cfg = cfg
        self.health = health
        self.nqueues = len(queues)
        self.held = held  # (si, entry id) of everything pending for us
        self.room = room
        self.active = active
        self.accept = accept
        self.children = children  # how many children the master runs
        self.buffered = buffered  # how many deliveries wait in the buffer
        self.to_front = to_front  # move the last n buffered to the head of the buffer
        self.cursors = [b"0-0"] * len(queues)  # PEL scan cursor per subscribed stream

    def renew(self) -> None:
        """Keep our in-flight and buffered entries fresh so no reclaimer takes them.

        Entries whose settle is in flight are renewed too (the settle may not
        have run yet); one Redis already acked on the exchange connection is
        pending for nobody, which renew.lua skips quietly: only entries now
        pending for another consumer were reclaimed from us.
        """
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
        """Take over entries of dead workers, ahead of the buffer; True if more may be waiting
        and there is room for them.

        Entries of our masters are taken once idle past --idle-timeout, those of
        other consumers (Go/TS workers, which never renew) past --foreign-idle-timeout.
        It runs even when the buffer is full: a dead master's jobs must not
        wait for a backlog that may never drain. With no room it takes at
        most one job per child per call (the bound on what it adds to what
        the master holds), and puts what it takes at the head of the buffer,
        so recovered jobs run within about idle_timeout + one reclaim
        interval however deep the backlog.
        """
        room = self.room()
        count = min(max(room, self.children()), 100)
        active = self.active()
        if not active:
            return False
        try:
            entries, dead, cleaned = self.broker.reclaim(
                self.cursors, active, round(self.cfg.idle_timeout * 1000), count,
                self.cfg.max_deliveries, self.cfg.dead_letter_maxlen, wire.now_ms(),
                round(self.cfg.foreign_idle * 1000))
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
        before = self.buffered()
        for i in range(0, len(entries), 4):
            if entries[i + 1] in held:
                continue  # our own, still running (its renewal was late, e.g. after a Redis restart)
            self.accept(entries[i], entries[i + 1], entries[i + 2], int(entries[i + 3]))
        self.to_front(self.buffered() - before)  # recovered jobs have waited longest: they go first
        return taken >= count and room > count

    def forget_dead_consumers(self) -> None:
        try:
            gone = self.broker.forget_dead_consumers(round(self.cfg.idle_timeout * 2000))
        except redis.RedisError as exc:
            self.health.failed("consumer clean-up", exc)
            return
        if gone:
            log.info("removed %d dead consumers from group %s: %s", len(gone), self.cfg.group,
                     ", ".join(gone), extra={"event": "consumers-removed"})
