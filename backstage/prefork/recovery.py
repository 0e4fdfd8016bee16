"""Recovery: renew what this master holds, reclaim what dead workers held,
take back what a lost reply left pending for us, forget dead consumers.

Run from the master's loop on timers, bounded per call. Talks to Redis
through the broker; what it needs from the rest of the master comes as
plain callables (what we hold, how much room there is, which streams are
active, where reclaimed entries go), never the master itself.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Iterable, Sequence

import redis

from ..protocol import wire
from .broker import MasterBroker
from .config import WorkerConfig
from .health import RedisHealth

__all__ = ["Recovery"]

log = logging.getLogger("backstage.prefork")


class Recovery:
    """XCLAIM renewal, reclaiming (XPENDING IDLE + XCLAIM), reconciling after a lost reply,
    and dead-consumer clean-up."""

    #: Pending ids read per stream and per reconcile call (bounded work per call).
    RECONCILE_PAGE = 500
    #: A reconcile pass runs when Redis answers again, and once more this much
    #: later: a command Redis had read before the fault (a stalled server
    #: holds it in a dead connection's buffer) may run only after the first pass.
    RECHECK = 1.0

    def __init__(self, broker: MasterBroker, cfg: WorkerConfig, health: RedisHealth, queues: Sequence[str], *,
                 held: Callable[[], Iterable[tuple[int, bytes]]], room: Callable[[], int],
                 active: Callable[[], list[int]], accept: Callable[[int, bytes, list[bytes], int], None],
                 take_back: Callable[[int, bytes, list[bytes], int], None] | None = None,
                 children: Callable[[], int] = lambda: 1, buffered: Callable[[], int] = lambda: 0,
                 to_front: Callable[[int], None] = lambda n: None) -> None:
        self.broker = broker
        self.cfg = cfg
        self.health = health
        self.nqueues = len(queues)
        self.held = held  # (si, entry id) of everything pending for us
        self.room = room
        self.active = active
        self.accept = accept
        self.take_back = take_back or accept  # where reconciled entries go
        self.children = children  # how many children the master runs
        self.buffered = buffered  # how many deliveries wait in the buffer
        self.to_front = to_front  # move the last n buffered to the head of the buffer
        self.cursors = [b"0-0"] * len(queues)  # PEL scan cursor per subscribed stream
        #: When the next reconcile pass is due (clock time; 0: at once, inf: none wanted).
        self.reconcile_at = math.inf
        self._passes = 0  # passes still to run
        self._pending_from: list[bytes | None] = [None] * len(queues)  # XPENDING cursor of the pass

    # -- reconcile: entries a lost reply left pending for us ---------------------------------
    def suspect(self) -> None:
        """A reply that may have delivered entries to us was lost (a fetch or a reclaim whose
        exchange timed out, was reset, or met a restarted Redis): our pending list may hold
        entries we never saw. Check it as soon as Redis answers, and once more after RECHECK."""
        self._passes = 2
        self.reconcile_at = 0.0
        self._pending_from = [b"-"] * self.nqueues

    def reconcile(self, now: float) -> bool:
        """One bounded step of a reconcile pass: read a page of our own pending entries
        (XPENDING … <consumer>) and take back every one the master does not hold.

        The caller guarantees that no fetch is in flight (its entries would look
        stranded). Entries we hold are left alone: nothing runs twice because of
        this. Returns True when the pass is over (False: call again; after a
        Redis error the pass stays due and the back-off applies)."""
        held = set(self.held())
        taken = dead = cleaned = 0
        try:
            for si in range(self.nqueues):
                start = self._pending_from[si]
                if start is None:
                    continue
                ids = self.broker.own_pending(si, start, self.RECONCILE_PAGE)
                stray = [i for i in ids if (si, i) not in held]
                if stray:
                    entries, d, c = self.broker.reconcile(si, stray, self.cfg.max_deliveries,
                                                          self.cfg.dead_letter_maxlen, wire.now_ms())
                    dead += d
                    cleaned += c
                    for i in range(0, len(entries), 3):
                        # the lost delivery never reached a child: this run is the one it was meant for
                        self.take_back(si, entries[i], entries[i + 1], max(1, int(entries[i + 2]) - 1))
                        taken += 1
                if len(ids) < self.RECONCILE_PAGE:
                    self._pending_from[si] = None
                else:
                    self._pending_from[si] = b"(" + ids[-1]
                    break  # one page per call; the next call goes on from here
        except redis.RedisError as exc:
            self.health.failed("reconcile", exc)
            return False
        finally:
            if taken:
                log.warning("took back %d entries pending for us whose delivery reply was lost", taken,
                            extra={"event": "reconcile"})
            if dead:
                log.error("dead-lettered %d entries delivered more than %d times (max-deliveries)", dead,
                          self.cfg.max_deliveries, extra={"event": "dead-letter"})
            if cleaned:
                log.info("cleaned %d pending entries whose stream entry was deleted", cleaned,
                         extra={"event": "reconcile"})
        self.health.ok()
        if any(c is not None for c in self._pending_from):
            return False
        self._passes -= 1
        if self._passes > 0:
            self.reconcile_at = now + self.RECHECK
            self._pending_from = [b"-"] * self.nqueues
        else:
            self.reconcile_at = math.inf
        return True

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
            self.suspect()  # the claim may have given us entries whose reply we never read
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
