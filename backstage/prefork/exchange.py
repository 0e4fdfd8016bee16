"""The exchange: the master's round trips with Redis for jobs.

Owns the batch of outcomes not yet sent, the round trips in flight
(:class:`RoundTrip`), the batches to send again after a failure, the hold
(outcomes of millisecond jobs wait briefly so several share a round trip),
and the blocking ``XREAD`` that wakes the master when jobs arrive. One
round trip carries the settle of what finished and the fetch of what there
is room for; the master goes on serving its children while Redis works and
reads the replies when the socket is readable.

What it needs from the rest of the master comes through :class:`Demand`
(how much room the children have, whether they can wait) and ``accept``
(where fetched entries go). Runs in the master, on its one thread.
"""

from __future__ import annotations

import collections
import logging
import math
import selectors
from typing import Any, Callable, Deque, Iterator, NamedTuple, Protocol, Sequence

import redis

from .broker import MasterBroker, Refused, SettleBatch
from .health import RedisHealth

__all__ = ["Exchange", "RoundTrip", "Demand"]

log = logging.getLogger("backstage.prefork")


class RoundTrip(NamedTuple):
    """One exchange sent to Redis whose replies are not read yet."""

    batch: SettleBatch | None  # the outcomes it settles (None: a fetch only)
    fetch: int  # entries it asked for (0: a settle only)
    streams: list[int]  # positions of the streams it fetches from
    deadline: float  # clock time by which its replies must be in


class Demand(Protocol):
    """What the exchange needs to know about the children."""

    @property
    def ewma(self) -> float:
        """Moving average job time (s)."""

    def free_slots(self) -> int:
        """Jobs the children and the buffer can still take."""

    def may_hold(self) -> bool:
        """Every usable child has work and one has a job queued behind its running one."""


class Exchange:
    """Settle and fetch round trips, their failures, and the blocking wait."""

    MAX_IN_FLIGHT = 2  # round trips in flight: Redis works on one while the master handles the other

    #: Outcomes of jobs that take a millisecond or more are held back while
    #: some child still has a job queued behind its running one, up to
    #: HOLD_SHARE of the average job time (at most HOLD_MAX): one round trip
    #: then settles several and refills every child's queue at once. Fewer
    #: round trips and wake-ups leave more of the CPU to the handlers.
    HOLD_SHARE = 0.5
    HOLD_MAX = 0.005

    def __init__(self, broker: MasterBroker, sel: selectors.BaseSelector, health: RedisHealth,
                 clock: Callable[[], float], demand: Demand, accept: Callable[[int, bytes, list[bytes]], None], *,
                 queues: Sequence[str], redis_timeout: float, block_timeout: float,
                 fast_job_threshold: float, on_lost_fetch: Callable[[], None] = lambda: None,
                 on_refused: Callable[[SettleBatch, list[Refused]], None] | None = None) -> None:
        self.broker = broker
        self.sel = sel
        self.health = health
        self.clock = clock
        self.demand = demand
        self.accept = accept
        self.queues = list(queues)
        self.redis_timeout = redis_timeout
        self.block_ms = int(block_timeout * 1000)
        self.fast = fast_job_threshold
        self.batch = broker.new_batch()  # outcomes not yet sent
        self.batch_since: float | None = None  # when the first of them was seen held
        self.in_flight: Deque[RoundTrip] = collections.deque()
        self.unsent: list[SettleBatch] = []  # batches whose round trip failed: sent again first
        self.sock: Any = None  # the exchange connection's socket, registered while it lives
        self.wait_sock: Any = None  # the XREAD connection's socket while a wait is out
        self.drained = False  # the last fetch found the streams empty: wait for XREAD to wake us
        self.fetching = True  # False once the master stops (or must stop): settle only
        self.paused: set[str] = set()
        #: No new fetch while set (the loop sets it while it reconciles our pending list,
        #: which must not race a fetch whose entries are not in yet).
        self.fetch_held = False
        self.on_lost_fetch = on_lost_fetch  # told when a round trip that fetched got no reply
        self.on_refused = on_refused or _log_refused  # told of operations Redis refused (entries not acked)
        health.on_error(self._on_redis_error)

    # -- what the loop asks --------------------------------------------------------------
    def room(self) -> int:
        """Entries that may still be fetched (or reclaimed) without passing backpressure."""
        held = self.batch.count
        for t in self.in_flight:
            held += t.fetch + (t.batch.count if t.batch is not None else 0)
        for b in self.unsent:
            held += b.count
        return self.demand.free_slots() - held

    def active_streams(self) -> list[int]:
        """Positions of the subscribed streams that are not paused."""
        return [i for i, q in enumerate(self.queues) if q not in self.paused]

    def deadline(self, now: float) -> float:
        """When the loop must come back for the exchange (``now``: at once): a
        reply's deadline, or the next round trip to start (held, or blocked
        while Redis backs off: :meth:`RedisHealth.due`)."""
        d = self.in_flight[0].deadline if self.in_flight else math.inf
        if self.broker.exchanging < self.MAX_IN_FLIGHT and (
                self.batch.dirty or self.unsent or (self._may_fetch() and self.room() > 0)):
            if not self.health.up(now):
                return min(d, self.health.down_until)
            hold = self.hold_until(now)
            if hold <= now:
                return now  # a round trip to start right away
            d = min(d, hold)
        return d

    def hold_until(self, now: float) -> float:
        """Until when the next round trip may wait for more outcomes (``now``: not at all)."""
        if not self.batch.dirty or self.demand.ewma < self.fast or self.unsent or not self.fetching:
            return now
        if self.batch_since is None:
            self.batch_since = now
        if not self.demand.may_hold():
            return now
        return self.batch_since + min(self.HOLD_MAX, self.HOLD_SHARE * self.demand.ewma)

    def _may_fetch(self) -> bool:
        return self.fetching and not self.drained and not self.fetch_held

    def fetch_in_flight(self) -> bool:
        """Is a fetch sent whose reply is not read yet?"""
        return any(t.fetch for t in self.in_flight)

    def unsettled(self) -> bool:
        """Outcomes not yet known to be committed?"""
        return bool(self.in_flight) or self.batch.dirty or any(b.dirty for b in self.unsent)

    def outcomes_left(self) -> int:
        return self.batch.count + sum(b.count for b in self.unsent)

    def held_entries(self) -> Iterator[tuple[int, bytes]]:
        """(si, entry id) of every entry an outcome waits for (still pending for us)."""
        yield from self.batch.entries()
        for b in self.unsent:
            yield from b.entries()
        for t in self.in_flight:
            if t.batch is not None:
                yield from t.batch.entries()

    # -- round trips ----------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Send the settle of what finished and a fetch for what there is room
        for, in one round trip; the replies are read when they arrive
        (:meth:`on_readable`) while the loop goes on serving children."""
        if self.broker.exchanging >= self.MAX_IN_FLIGHT or not self.health.up(now) or self.hold_until(now) > now:
            return
        active: list[int]
        if self.unsent:  # batches whose fate is unknown: send them again, alone, first
            batch: SettleBatch | None = self.unsent.pop(0)
            room, active = 0, []
        else:
            batch = self.batch if self.batch.dirty else None
            room = 0
            active = []
            if self._may_fetch():
                active = self.active_streams()
                # entries settled in this same call leave the PEL before the fetch runs
                room = self.room() + self.batch.count if active else 0
            if batch is None and room <= 0:
                return
            if batch is not None:
                self.batch = self.broker.new_batch()
                self.batch_since = None
        try:
            sock = self.broker.send_exchange(batch, room, active)
        except redis.RedisError as exc:
            self._lost(batch, fetched=room > 0)  # it may have reached Redis before the error
            self.health.failed("settle" if batch is not None else "fetch", exc)
            return
        self.in_flight.append(RoundTrip(batch, room, active, self.clock() + self.redis_timeout))
        if sock is not self.sock:  # a new connection: watch it (stays watched while it lives)
            self._unwatch()
            self.sel.register(sock, selectors.EVENT_READ, ("exchange", None))
            self.sock = sock

    def check(self, now: float) -> None:
        """Give up on round trips Redis has not answered within --redis-timeout."""
        if self.in_flight and now > self.in_flight[0].deadline:
            self._lost()
            self.health.failed("settle", redis.TimeoutError(f"no reply within {self.redis_timeout:g}s"))

    def on_readable(self) -> None:
        """The exchange socket is readable: read every reply that is in."""
        if not self.in_flight:  # nothing asked for: closed by Redis, junk, or TLS bookkeeping
            if not self.broker.exchange_conn_ok():
                self._unwatch()
            return
        self._receive()
        while self.in_flight and self.broker.reply_ready():
            self._receive()

    def _receive(self) -> None:
        trip = self.in_flight.popleft()
        try:
            skipped, refused, fetched = self.broker.recv_exchange()
        except redis.RedisError as exc:
            settled = self.broker.last_settled
            self._lost(None if settled else trip.batch, fetched=trip.fetch > 0)
            self.health.failed("settle" if trip.batch is not None and not settled else "fetch", exc)
            return
        self.health.ok()
        if skipped:
            log.warning("%d outcome(s) not applied: their entries were reclaimed by another worker", skipped)
        if refused and trip.batch is not None:
            self.on_refused(trip.batch, refused)
        if fetched is None:
            return
        entries, tails = fetched
        accept = self.accept
        for i in range(0, len(entries), 3):
            accept(entries[i], entries[i + 1], entries[i + 2])
        if tails:
            self.drained = True
            if self.wait_sock is not None:
                return  # an XREAD is already out; at worst it wakes us once for nothing
            try:
                sock = self.broker.start_wait(tails, trip.streams, self.block_ms)
            except redis.RedisError as exc:
                self.health.failed("wait", exc)
                return
            self.wait_sock = sock
            self.sel.register(sock, selectors.EVENT_READ, ("wait", None))

    def _lost(self, batch: SettleBatch | None = None, *, fetched: bool = False) -> None:
        """Every round trip in flight is lost: their batches are sent again later. A fetch
        among them (or ``fetched``) may have run in Redis: entries may be pending for us that
        we never saw; the owner of our pending list is told (:attr:`on_lost_fetch`)."""
        if fetched or self.fetch_in_flight():
            self.on_lost_fetch()
        lost = [t.batch for t in self.in_flight if t.batch is not None]
        if batch is not None:
            lost.append(batch)
        self.unsent = lost + self.unsent
        self.in_flight.clear()
        self.broker.abandon_exchange()
        self._unwatch()

    def _unwatch(self) -> None:
        if self.sock is not None:
            self.sel.unregister(self.sock)  # found by identity even once closed
            self.sock = None

    def settle_now(self) -> None:
        """Commit every pending outcome and wait for it (the shutdown path)."""
        while self.in_flight:
            self._receive()  # blocking reads: the replies are on their way
        for batch in [*self.unsent, self.batch]:
            if not batch.dirty or not self.health.up(self.clock()):
                continue
            if batch is self.batch:  # what replaces a refused operation goes into a fresh batch
                self.batch = self.broker.new_batch()
            try:
                skipped, refused = self.broker.settle(batch)
            except redis.RedisError as exc:
                self.health.failed("settle", exc)
                if batch not in self.unsent:
                    self.unsent.append(batch)
                continue
            self.health.ok()
            if skipped:
                log.warning("%d outcome(s) not applied: their entries were reclaimed by another worker", skipped)
            if refused:
                self.on_refused(batch, refused)  # what replaces them goes into the current batch
            batch.clear()
        self.unsent = [b for b in self.unsent if b.dirty]

    # -- the blocking wait ------------------------------------------------------------------
    def on_wait_readable(self) -> None:
        """The XREAD answered: jobs arrived (or it timed out): fetch again."""
        self._unregister_wait()
        try:
            self.broker.finish_wait()
        except redis.RedisError as exc:
            self.broker.drop_wait()
            self.health.failed("wait", exc)
        self.drained = False

    def stop_waiting(self) -> None:
        self._unregister_wait()
        self.broker.drop_wait()

    def _unregister_wait(self) -> None:
        if self.wait_sock is not None:
            self.sel.unregister(self.wait_sock)
            self.wait_sock = None

    def _on_redis_error(self) -> None:
        if self.wait_sock is not None or self.broker.waiting:
            self.stop_waiting()
        self.drained = False

    # -- what is fetched --------------------------------------------------------------------
    def stop_fetching(self) -> None:
        """Settle only from now on (graceful stop, or a fatal error)."""
        self.fetching = False
        self.stop_waiting()

    def set_paused(self, paused: set[str]) -> None:
        """Queues not to fetch from (from presence or a control command)."""
        if paused != self.paused:
            log.info("paused queues: %s", ", ".join(sorted(paused & set(self.queues))) or "none",
                     extra={"event": "pause"})
            self.paused = paused
            self.stop_waiting()  # the outstanding XREAD may name a paused stream
            self.drained = False


def _log_refused(batch: SettleBatch, refused: list[Refused]) -> None:
    for r in refused:
        log.error("Redis refused operation %r for entry %s: %s", r.op.decode(), r.entry_id.decode(), r.error)
