"""Recovery duties of the master: renew what it holds, reclaim what dead
workers held, forget dead consumers.

Methods of :class:`Master` (run from its loop on timers, bounded per call).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Iterator

import redis

from ..protocol import wire

if TYPE_CHECKING:
    from typing import Any, Callable, Deque

    from .broker import MasterBroker, SettleBatch
    from .config import WorkerConfig
    from .supervisor import Child, Job

__all__ = ["RecoveryMixin", "HOPS_FIELD"]

#: (ours) how many times masters without a handler put an entry back on its stream
HOPS_FIELD = b"unknownTaskHops"

log = logging.getLogger("backstage.prefork")


class RecoveryMixin:
    """XCLAIM renewal, XAUTOCLAIM reclaiming and dead-consumer clean-up."""

    if TYPE_CHECKING:  # state and steps of Master that these methods use
        cfg: WorkerConfig
        broker: MasterBroker
        children: list[Child]
        buffer: Deque[Job]
        queues: list[str]
        batch: SettleBatch
        sending: Deque[tuple[Any, int, list[int], float]]
        unsent: list[Any]
        reclaim_cursors: list[bytes]
        next_reclaim: float
        concurrency: int
        clock: Callable[[], float]

        def _redis_error(self, what: str, exc: Exception) -> None: ...

        def _room(self) -> int: ...

        def active_streams(self) -> list[int]: ...

        def accept(self, si: int, entry_id: bytes, flat: list[bytes], deliveries: int = 1) -> None: ...

        def dead_letter(self, si: int, entry_id: bytes, fields: dict[bytes, bytes], reason: str, etype: str,
                        emsg: str, deliveries: int, tb: str = "", *, log_it: bool = True) -> None: ...

    def held_entries(self) -> Iterator[tuple[int, bytes]]:
        """(si, entry id) of everything pending for us: buffered, running, or waiting to be settled."""
        for job in self.buffer:
            yield job.si, job.id
        for c in self.children:
            for job in c.inflight:
                yield job.si, job.id
        for batch in [self.batch, *self.unsent, *(b for b, _, _, _ in self.sending if b is not None)]:
            yield from batch.entries()

    def renew(self) -> None:
        """Keep our in-flight and buffered entries fresh so no reclaimer takes them.

        Entries whose settle is in flight are renewed too (the settle may not
        have run yet); one Redis already acked on the exchange connection is
        pending for nobody, which renew.lua skips quietly: only entries now
        pending for another consumer were reclaimed from us.
        """
        ids: list[list[bytes]] = [[] for _ in self.queues]
        for si, entry_id in self.held_entries():
            ids[si].append(entry_id)
        if not any(ids):
            return
        try:
            lost = self.broker.renew(ids)
        except redis.RedisError as exc:
            self._redis_error("renew", exc)
            return
        if lost:
            log.warning("%d in-flight entries are no longer pending for us (reclaimed by another "
                        "worker); their outcomes will not be applied twice", lost, extra={"event": "renew"})

    def reclaim(self) -> None:
        """Take over entries of dead workers (idle past idle_timeout), ahead of the buffer.

        It runs even when the buffer is full: a dead master's jobs must not
        wait for a backlog that may never drain. With no room it takes at
        most one job per child per call (the bound on what it adds to what
        the master holds), and puts what it takes at the head of the buffer,
        so recovered jobs run within about idle_timeout + one reclaim
        interval however deep the backlog.
        """
        room = self._room()
        count = min(max(room, self.concurrency), 100)
        active = self.active_streams()
        if not active:
            return
        try:
            entries, dead, cleaned = self.broker.reclaim(
                self.reclaim_cursors, active, round(self.cfg.idle_timeout * 1000), count,
                self.cfg.max_deliveries, self.cfg.dead_letter_maxlen, wire.now_ms(),
                round(self.cfg.foreign_idle * 1000))
        except redis.RedisError as exc:
            self._redis_error("reclaim", exc)
            return
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
        held = {entry_id for _, entry_id in self.held_entries()}
        before = len(self.buffer)
        for i in range(0, len(entries), 4):
            if entries[i + 1] in held:
                continue  # our own, still running (its renewal was late, e.g. after a Redis restart)
            self.accept(entries[i], entries[i + 1], entries[i + 2], int(entries[i + 3]))
        # recovered jobs jump the queue (accept appends): they have waited longest
        recovered = [self.buffer.pop() for _ in range(len(self.buffer) - before)]
        self.buffer.extendleft(recovered)
        if taken >= count and room > count:
            self.next_reclaim = self.clock()  # more may be waiting, and there is room for them

    def unknown_task(self, si: int, entry_id: bytes, fields: dict[bytes, bytes], task_name: str) -> None:
        """An entry for a task this app has no handler for (a Go or TypeScript worker's, in a
        mixed fleet): dead-letter it, or with ``--unknown-task requeue`` put it back on its
        stream with its hop count (``unknownTaskHops``) one higher, until it has hopped
        ``--unknown-task-hops`` times."""
        raw = fields.get(HOPS_FIELD, b"0")
        try:
            hops = int(raw)
        except ValueError:
            hops = self.cfg.unknown_task_hops  # not a count we wrote: do not bounce it around
        if self.cfg.unknown_task == "requeue" and 0 <= hops < self.cfg.unknown_task_hops:
            again = dict(fields)
            again[HOPS_FIELD] = b"%d" % (hops + 1)
            self.batch.hand_back(si, entry_id, again)
            log.debug("entry %s of %s: no handler for task %r here; requeued (hop %d of %d)", entry_id.decode(),
                      self.queues[si], task_name, hops + 1, self.cfg.unknown_task_hops,
                      extra={"event": "requeue", "task": task_name})
            return
        why = f"no handler for task {task_name!r} in this app"
        if self.cfg.unknown_task == "requeue":
            why += f" (requeued {hops} times: no worker with a handler took it)"
        self.dead_letter(si, entry_id, fields, "unknown-task", "TaskNotFound", why, 1)

    def forget_dead_consumers(self) -> None:
        try:
            gone = self.broker.forget_dead_consumers(round(self.cfg.idle_timeout * 2000))
        except redis.RedisError as exc:
            self._redis_error("consumer clean-up", exc)
            return
        if gone:
            log.info("removed %d dead consumers from group %s: %s", len(gone), self.cfg.group,
                     ", ".join(gone), extra={"event": "consumers-removed"})
