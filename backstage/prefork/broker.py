"""The master's Redis traffic: fetch, wait, settle, promote.

Owns the consumer-group reads of the ready streams, the outcome commits
(``settle.lua``), and delayed-job promotion (``promote.lua``). Runs in the
master only, on its one thread. Two connections: one for commands, one that
sits in ``XREAD BLOCK`` so the master's selector can wake when a job arrives.
"""

from __future__ import annotations

import collections
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import redis

from ..connections import redis_conn
from ..protocol import scripts
from ..connections.resp import pack_command
from ..protocol.keys import Keys

__all__ = ["MasterBroker", "SettleBatch", "Refused", "flatten"]


class Refused(NamedTuple):
    """An operation of a settle batch whose side effect Redis refused (its entry is not acked)."""

    op: bytes  # b"x" next step, b"z" scheduled, b"d" dead letter, b"r" hand-back, b"s" status write
    si: int
    entry_id: bytes
    error: str


def flatten(fields: Mapping[Any, Any]) -> list[Any]:
    """A field map as the flat ``field, value, …`` list XADD and the scripts take."""
    return [x for kv in fields.items() for x in kv]


class SettleBatch:
    """Outcomes waiting to be committed, as ``settle.lua`` operations.

    ``si`` is a stream's position in the master's subscribed streams.
    ``history`` (the ``P:history`` key, its cap, and the queue name of each
    stream) turns on job-history records; without it the batch writes none.
    """

    __slots__ = ("keys", "_index", "_acks", "_ops", "count", "_nstreams", "_op_ids", "_history", "_hacks",
                 "_origins")

    def __init__(self, scheduled: str, streams: Sequence[str],
                 history: tuple[str, int, Sequence[str]] | None = None) -> None:
        self.keys: list[str] = [scheduled, *streams]
        self._nstreams = len(streams)
        self._history = history
        if history is not None:
            self.keys.append(history[0])  # always at index len(streams) + 2
        self._index = {k: i + 1 for i, k in enumerate(self.keys)}
        self._acks: list[list[bytes]] = [[] for _ in streams]
        self._hacks: list[list[Any]] = [[] for _ in streams]  # plain successes with a history record
        self._ops: list[Any] = []
        self._op_ids: list[tuple[int, bytes]] = []  # (si, entry id) acked by an operation
        self._origins: list[object] = []  # what each of them settles (for a refusal), kept until sent
        self.count = 0  # outcomes (entries to ack); status writes ride along

    def _key(self, key: str) -> int:
        i = self._index.get(key)
        if i is None:
            self.keys.append(key)
            i = self._index[key] = len(self.keys)
        return i

    def ack(self, si: int, entry_id: bytes) -> None:
        self._acks[si].append(entry_id)
        self.count += 1

    def ack_recorded(self, si: int, entry_id: bytes, job_id: str, task: str, attempt: int,
                     duration_ms: int, finished_ms: int) -> None:
        """Plain success with a history record (written only if this ack acknowledges the entry)."""
        self._hacks[si] += (entry_id, job_id, task, attempt, duration_ms, finished_ms)
        self.count += 1

    def record(self, si: int, entry_id: bytes, fields: Sequence[Any]) -> None:
        """A history record for an entry that another operation of this batch
        settles (retry, dead letter, next step); call it before that operation."""
        assert self._history is not None
        self._ops += (b"h", si + 2, entry_id, self._nstreams + 2, self._history[1], len(fields), *fields)

    def _acked_by_op(self, si: int, entry_id: bytes, origin: object) -> None:
        self._op_ids.append((si, entry_id))
        self._origins.append(origin)
        self.count += 1

    def add_next(self, si: int, entry_id: bytes, target: str, fields: Mapping[Any, Any],
                 origin: object = None) -> None:
        flat = flatten(fields)
        self._ops += (b"x", si + 2, entry_id, self._key(target), len(flat), *flat)
        self._acked_by_op(si, entry_id, origin)

    def schedule(self, si: int, entry_id: bytes, due_ms: int, member: bytes, origin: object = None) -> None:
        self._ops += (b"z", si + 2, entry_id, due_ms, member)
        self._acked_by_op(si, entry_id, origin)

    def dead(self, si: int, entry_id: bytes, dlq: str, maxlen: int, fields: Mapping[Any, Any],
             origin: object = None) -> None:
        flat = flatten(fields)
        self._ops += (b"d", si + 2, entry_id, self._key(dlq), maxlen, len(flat), *flat)
        self._acked_by_op(si, entry_id, origin)

    def origin(self, si: int, entry_id: bytes) -> object:
        """What the operation acking ``entry_id`` settles (``origin`` given when it was added)."""
        for k, pair in enumerate(self._op_ids):
            if pair == (si, entry_id):
                return self._origins[k]
        return None

    def status(self, si: int, entry_id: bytes, key: str, ttl_ms: int, fields: Sequence[Any]) -> None:
        """Update a tracked job's status hash (only while the entry is ours)."""
        self._ops += (b"s", si + 2, entry_id, self._key(key), ttl_ms, len(fields), *fields)

    def release(self, si: int, entry_id: bytes, key: str) -> None:
        """Delete ``key`` (a unique job's marker) while the entry is ours; comes before its acking operation."""
        self._ops += (b"u", si + 2, entry_id, self._key(key))

    def honoured(self, si: int, entry_id: bytes, cancel_key: str, cancels: str, job_id: str) -> None:
        """Drop a job's cancel once it is carried out (while the entry is ours): an id
        reused later is not cancelled again. Comes before the acking operation."""
        self._ops += (b"n", si + 2, entry_id, self._key(cancel_key), self._key(cancels), job_id)

    def chord_member(self, si: int, entry_id: bytes, chord_key: str, index: int, ok: bool, value: Any) -> None:
        """Record a group/chord member's outcome (while the entry is ours); before its acking op."""
        self._ops += (b"c", si + 2, entry_id, self._key(chord_key), index, b"1" if ok else b"0", value)

    def fan_out(self, si: int, entry_id: bytes, chord_key: str, header: Sequence[Any],
                members: Sequence[tuple[str, Mapping[Any, Any]]], origin: object = None) -> None:
        """Ack, then write a group/chord (``header``: group.lua's 11 values) and its members."""
        ops: list[Any] = [b"g", si + 2, entry_id, self._key(chord_key), *header, len(members)]
        for stream, fields in members:
            flat = flatten(fields)
            ops += (self._key(stream), len(flat), *flat)
        self._ops += ops
        self._acked_by_op(si, entry_id, origin)

    def hand_back(self, si: int, entry_id: bytes, fields: Mapping[Any, Any], origin: object = None) -> None:
        flat = flatten(fields)
        self._ops += (b"r", si + 2, entry_id, len(flat), *flat)
        self._acked_by_op(si, entry_id, origin)

    def entries(self) -> Iterator[tuple[int, bytes]]:
        """(si, entry id) of every entry this batch will ack: still pending until it is sent."""
        for si, ids in enumerate(self._acks):
            for entry_id in ids:
                yield si, entry_id
        for si, group in enumerate(self._hacks):
            for entry_id in group[::6]:
                yield si, entry_id
        yield from self._op_ids

    @property
    def acks_only(self) -> bool:
        return not self._ops and not any(self._hacks)

    def ack_lists(self) -> Iterator[tuple[str, list[bytes]]]:
        """(stream key, ids) of the plain acks."""
        for si, ids in enumerate(self._acks):
            if ids:
                yield self.keys[si + 1], ids

    @property
    def dirty(self) -> bool:
        """Anything to send (outcomes, or status writes alone)."""
        return self.count > 0 or bool(self._ops)

    def argv(self) -> list[Any]:
        # operations first: a status write must see its entry still pending
        out: list[Any] = list(self._ops)
        for si, ids in enumerate(self._acks):
            if ids:
                out += (b"a", si + 2, len(ids), *ids)
        if self._history is not None:
            _, maxlen, queues = self._history
            for si, group in enumerate(self._hacks):
                if group:
                    out += (b"k", si + 2, self._nstreams + 2, maxlen, queues[si], len(group) // 6, *group)
        return out

    def clear(self) -> None:
        self.keys = self.keys[: self._nstreams + 1 + (self._history is not None)]
        self._index = {k: i + 1 for i, k in enumerate(self.keys)}
        for ids in self._acks:
            ids.clear()
        for group in self._hacks:
            group.clear()
        self._ops = []
        self._op_ids = []
        self._origins = []
        self.count = 0


class MasterBroker:
    """Redis commands of one master. Methods raise redis-py errors; the
    master decides how to survive them."""

    def __init__(self, url: str, keys: Keys, group: str, consumer: str, queues: Sequence[str],
                 *, delete_on_ack: bool, socket_timeout: float = 10.0, history: int = 0) -> None:
        self.keys = keys
        self.history = (keys.history, history, list(queues)) if history > 0 else None
        self.group = group
        self.consumer = consumer
        self.streams = [keys.stream(q) for q in queues]
        self.redis = redis_conn.sync_client(url, socket_timeout=socket_timeout, slot_key=keys.prefix)
        self.where = redis_conn.endpoint(self.redis)
        self.delete_flag = b"1" if delete_on_ack else b"0"
        self._fetch = self.redis.register_script(scripts.source("fetch"))
        self._settle = self.redis.register_script(scripts.source("settle"))
        self._promote = self.redis.register_script(scripts.source("promote"))
        self._reclaim = self.redis.register_script(scripts.source("reclaim"))
        self._renew = self.redis.register_script(scripts.source("renew"))
        self._reconcile = self.redis.register_script(scripts.source("reconcile"))
        self._forget = self.redis.register_script(scripts.source("forget"))
        self._cron_fire = self.redis.register_script(scripts.source("cron_fire"))
        self.broadcast_group = keys.broadcast_group(consumer)
        self.dead_letters = [keys.dead_letter(q) for q in queues]
        self._wait_conn: Any = None
        self._ops_conn: Any = None
        self._sent: collections.deque[Any] = collections.deque()
        self.waiting = False
        self.last_settled = False
        self.functions = False  # Redis 7+ (set by check)

    def check(self) -> None:
        """Raise unless Redis answers and is 6.2+ (translated errors); load the hot scripts."""
        with redis_conn.translate_errors(self.where):
            version = redis_conn.check_version(self.redis.info("server"), self.where)
            self.functions = version >= scripts.FUNCTIONS_VERSION
            self._load_scripts()
            self.load_functions()

    def load_functions(self) -> None:
        """Redis 7+: load the producer function library (FCALL for producers) unless it is there.

        Run at start and whenever Redis comes back (a restart without
        persistence, a failover to a node that never had it): producers may
        call our functions but not load them.
        """
        if self.functions:
            scripts.load_library(self.redis)

    def new_batch(self) -> SettleBatch:
        return SettleBatch(self.keys.scheduled, self.streams, self.history)

    # -- fetching ----------------------------------------------------------
    def start_wait(self, tails: Sequence[bytes], active: Sequence[int], block_ms: int) -> Any:
        """Send ``XREAD BLOCK`` from the given tails; return the socket to watch."""
        if self._wait_conn is None:
            self._wait_conn = self.redis.connection_pool.get_connection()
        conn = self._wait_conn
        conn.send_command("XREAD", "BLOCK", block_ms, "COUNT", 1, "STREAMS",
                          *[self.streams[i] for i in active], *tails)
        self.waiting = True
        return conn._sock  # redis-py keeps the socket here; no public accessor

    def finish_wait(self) -> None:
        """Read the reply of the outstanding XREAD (the socket is readable)."""
        self.waiting = False
        try:
            self._wait_conn.read_response()
        except redis.ResponseError:
            pass  # e.g. a stream deleted meanwhile: the next fetch recreates it

    def drop_wait(self) -> None:
        """Abandon the wait connection (shutdown, or after an error)."""
        self.waiting = False
        if self._wait_conn is not None:
            self._wait_conn.disconnect()
            self.redis.connection_pool.release(self._wait_conn)
            self._wait_conn = None

    # -- outcomes and fetching: the hot path ---------------------------------
    # One round trip settles the finished jobs (settle.lua) and fetches new
    # ones (fetch.lua). It skips redis-py's per-command machinery: both
    # EVALSHA commands are packed and written together on a connection the
    # broker keeps; the master goes on serving its children while Redis
    # works, and reads the two replies when the socket becomes readable.

    def send_exchange(self, batch: SettleBatch | None, count: int, active: Sequence[int]) -> Any:
        """Send settle (if ``batch``) and fetch (if ``count`` > 0); return the
        socket to watch (the same object until the connection is dropped).

        Several exchanges may be in flight; replies come back in order. A
        batch of plain acks goes as XACK + XDEL (no script: half the work
        for Redis); anything else goes through settle.lua.
        """
        cmds: list[bytes] = []
        lua = False
        if batch is not None:
            if batch.acks_only:
                for stream, ids in batch.ack_lists():
                    cmds.append(pack_command((b"XACK", stream, self.group, *ids)))
                    if self.delete_flag == b"1":
                        cmds.append(pack_command((b"XDEL", stream, *ids)))
            else:
                lua = True
                args = [self.group, self.consumer, self.delete_flag, *batch.argv()]
                cmds.append(pack_command((b"EVALSHA", self._settle.sha, len(batch.keys), *batch.keys, *args)))
        n_settle = len(cmds)
        if count > 0:
            keys = [self.streams[i] for i in active]
            cmds.append(pack_command((b"EVALSHA", self._fetch.sha, len(keys), *keys, self.group, self.consumer,
                                      count)))
        conn = self._ops_conn
        if conn is None:
            conn = self._ops_conn = self.redis.connection_pool.get_connection()
        try:
            conn.send_packed_command([b"".join(cmds)])
        except BaseException:
            self.abandon_exchange()
            conn.disconnect()
            raise
        self._sent.append((cmds, n_settle, lua, list(active) if count > 0 else None))
        return conn._sock  # redis-py keeps the socket here; no public accessor

    def recv_exchange(self) -> tuple[int | None, list[Refused], tuple[list[Any], list[bytes]] | None]:
        """Read the replies of the oldest exchange in flight.

        Returns (skipped side effects or None, refused operations, (entries, tails) or None).
        An error reply is raised once all of that exchange's replies are
        read; ``last_settled`` then says whether its settle part was applied.
        A broken connection raises and abandons every exchange in flight.
        """
        cmds, n_settle, lua, active = self._sent.popleft()
        conn = self._ops_conn
        try:
            replies = [self._reply(conn) for _ in cmds]
        except BaseException:
            self.abandon_exchange()
            raise
        missing = [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]
        if missing:  # Redis restarted or flushed its scripts: those commands did not run
            self._load_scripts()
            if self._sent:
                # later exchanges' replies are queued behind this one: drop them all and let
                # the master send again (settling twice is harmless)
                self.abandon_exchange()
                raise redis.ConnectionError("Redis lost its scripts (NOSCRIPT); they are loaded again")
            try:
                conn.send_packed_command([b"".join(cmds[i] for i in missing)])
                for i in missing:
                    replies[i] = self._reply(conn)
            except BaseException:
                self.abandon_exchange()
                raise
        self.last_settled = False
        skipped = fetched = None
        refused: list[Refused] = []
        if n_settle:
            for r in replies[:n_settle]:
                # a lost group (NOGROUP) leaves nothing to ack: the jobs are done, their entries deleted
                if isinstance(r, Exception) and "NOGROUP" not in str(r):
                    raise r
            skipped = 0
            if lua and not isinstance(replies[0], Exception):
                skipped = int(replies[0][0])
                flat = replies[0][1]
                for k in range(0, len(flat), 4):
                    err = flat[k + 3]
                    refused.append(Refused(flat[k], int(flat[k + 1]) - 2, flat[k + 2],
                                           err.decode("utf-8", "replace") if isinstance(err, bytes) else str(err)))
            self.last_settled = True
        if active is not None:
            r = replies[n_settle]
            if isinstance(r, Exception):
                raise r
            entries, tails = r
            for i in range(0, len(entries), 3):
                entries[i] = active[int(entries[i]) - 1]
            fetched = (entries, tails)
        return skipped, refused, fetched

    def reply_ready(self) -> bool:
        """Is the next exchange's reply already here? It may sit in the parser's
        buffer (read along with the previous one), where no selector sees it."""
        if not self._sent or self._ops_conn is None:
            return False
        try:
            return bool(self._ops_conn.can_read(timeout=0))
        except (redis.ConnectionError, OSError):
            return True  # let recv_exchange meet the error

    def exchange_conn_ok(self) -> bool:
        """The exchange connection woke the selector with nothing in flight:
        is it still usable? False (and dropped) when Redis closed it or sent
        what nobody asked for; True when it was only TLS bookkeeping."""
        conn = self._ops_conn
        if conn is None or self._sent:
            return conn is not None
        try:
            junk = bool(conn.can_read(timeout=0))
        except (redis.ConnectionError, OSError):
            junk = True
        if junk:
            conn.disconnect()
        return not junk

    @property
    def exchanging(self) -> int:
        """How many exchanges are in flight."""
        return len(self._sent)

    def abandon_exchange(self) -> None:
        """Forget every exchange in flight (their replies will never be read)."""
        if self._sent and self._ops_conn is not None:
            self._ops_conn.disconnect()
        self._sent.clear()

    @staticmethod
    def _reply(conn: Any) -> Any:
        try:
            return conn.read_response()
        except redis.ResponseError as exc:
            return exc

    def settle(self, batch: SettleBatch) -> tuple[int, list[Refused]]:
        """Commit a batch and wait for it (the shutdown path, nothing else in flight);
        returns (skipped side effects, refused operations)."""
        self.send_exchange(batch, 0, ())
        skipped, refused, _ = self.recv_exchange()
        return skipped or 0, refused

    def _load_scripts(self) -> None:
        for script in (self._fetch, self._settle):
            self.redis.script_load(script.script)

    def promote(self, now_ms: int, limit: int, dlq_maxlen: int) -> tuple[int, int, int]:
        """Move due scheduled members to their streams: (moved, parked, next due ms or -1)."""
        moved, parked, nxt = self._promote(
            keys=[self.keys.scheduled, self.keys.dead_letter("default"), self.keys.cancels],
            args=[now_ms, limit, self.keys.prefix, dlq_maxlen, self.keys.cancel(""), self.keys.result(""),
                  self.keys.unique("")],
        )
        return int(moved), int(parked), int(nxt)

    # -- recovery --------------------------------------------------------------
    def reclaim(self, cursors: list[bytes], active: Sequence[int], min_idle_ms: int, count: int,
                max_deliveries: int, dlq_maxlen: int, now_ms: int,
                foreign_idle_ms: int) -> tuple[list[Any], int, int]:
        """Claim idle entries of dead workers from the streams at ``active``: those of
        our masters idle past ``min_idle_ms``, others' past ``foreign_idle_ms``.

        Returns (flat [si, id, fields, deliveries, ...], dead-lettered count,
        cleaned count); ``cursors`` (one per subscribed stream) is advanced in place.
        """
        entries, new_cursors, dead, cleaned = self._reclaim(
            keys=[*(self.streams[i] for i in active), *(self.dead_letters[i] for i in active), self.keys.workers],
            args=[self.group, self.consumer, min_idle_ms, count, max_deliveries, dlq_maxlen, now_ms,
                  self.delete_flag, max(foreign_idle_ms, min_idle_ms), *(cursors[i] for i in active),
                  self.keys.chord(""), self.keys.unique("")],
        )
        for i, cursor in zip(active, new_cursors):
            cursors[i] = cursor
        for i in range(0, len(entries), 4):
            entries[i] = active[int(entries[i]) - 1]
        return entries, int(dead), int(cleaned)

    def renew(self, ids_by_stream: Sequence[Sequence[bytes]]) -> int:
        """Reset the idle time of our in-flight entries; returns how many are no longer ours."""
        args: list[Any] = [self.group, self.consumer]
        for ids in ids_by_stream:
            args += (len(ids), *ids)
        return int(self._renew(keys=self.streams, args=args))

    def own_pending(self, si: int, start: bytes, count: int) -> list[bytes]:
        """Ids pending for this consumer in stream ``si`` from ``start`` (``-``, or ``(id``
        exclusive), oldest first, at most ``count``."""
        try:
            rows: Any = self.redis.xpending_range(self.streams[si], self.group, min=start, max="+", count=count,
                                             consumername=self.consumer)
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):
                return []  # no group (yet): nothing is pending; fetch.lua creates it
            raise
        return [row["message_id"] for row in rows]

    def reconcile(self, si: int, ids: Sequence[bytes], max_deliveries: int, dlq_maxlen: int,
                  now_ms: int) -> tuple[list[Any], int, int]:
        """Claim again entries pending for us that the master does not hold (reconcile.lua).

        Returns (flat [id, fields, deliveries, ...], dead-lettered count, cleaned count).
        """
        entries, dead, cleaned = self._reconcile(
            keys=[self.streams[si], self.dead_letters[si]],
            args=[self.group, self.consumer, max_deliveries, dlq_maxlen, now_ms, self.delete_flag, *ids])
        return entries, int(dead), int(cleaned)

    def forget_dead_consumers(self, min_idle_ms: int) -> list[str]:
        """Remove consumers with nothing pending that were idle past ``min_idle_ms``."""
        names = self._forget(keys=self.streams, args=[self.group, self.consumer, min_idle_ms])
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]

    # -- cron, broadcast, presence ---------------------------------------------------
    def fire_cron(self, name: str, tick_ms: int, ttl_ms: int, stream: str, fields: Mapping[Any, Any]) -> bool:
        """Enqueue one cron tick unless some master already did; True if this call fired it."""
        marker = self.keys.cron_marker(name, tick_ms)
        last = self.keys.cron_last(name)
        return bool(self._cron_fire(keys=[marker, last, stream], args=[ttl_ms, tick_ms, *flatten(fields)]))

    def last_cron_tick(self, name: str) -> int | None:
        raw = self.redis.get(self.keys.cron_last(name))
        return int(raw) if raw is not None else None

    def cancelled_ids(self, now_ms: int) -> set[str]:
        """Job ids whose cancel has not expired (P:cancels: id -> expiry ms)."""
        raw: Any = self.redis.zrangebyscore(self.keys.cancels, f"({now_ms}", "+inf")
        return {x.decode("utf-8", "replace") for x in raw}

    def join_broadcast(self) -> None:
        """Create this worker's broadcast group at ``$``: only messages sent from now on."""
        try:
            self.redis.xgroup_create(self.keys.broadcast, self.broadcast_group, id="$", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read_broadcasts(self, count: int = 100) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """New broadcast messages (NOACK: at most once per worker)."""
        try:
            res: Any = self.redis.xreadgroup(self.broadcast_group, self.consumer, {self.keys.broadcast: ">"},
                                        count=count, noack=True)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.join_broadcast()
            return []
        out: list[tuple[bytes, dict[bytes, bytes]]] = []
        for _stream, entries in res or []:
            out += [(mid, fields) for mid, fields in entries if fields]
        return out

    def forget_dead_broadcast_groups(self, dead: set[str]) -> list[str]:
        """Destroy ``broadcast-<consumer>`` groups of our masters known dead (``dead``).

        Only those: other SDKs' workers name their groups the same way but
        are not listed in ``P:workers``, so nothing proves them dead.
        """
        try:
            groups = self.redis.xinfo_groups(self.keys.broadcast)
        except redis.ResponseError:
            return []
        gone = []
        for g in groups:
            name = g["name"].decode()
            owner = self.keys.broadcast_group_owner(name)
            if owner is not None and name != self.broadcast_group and owner in dead:
                self.redis.xgroup_destroy(self.keys.broadcast, name)
                gone.append(name)
        return gone

    def fds(self) -> list[int]:
        """Socket fds a forked child must close (it never talks to Redis this way)."""
        out = []
        for conn in list(getattr(self.redis.connection_pool, "_available_connections", [])) + (
            [c for c in (self._wait_conn, self._ops_conn) if c is not None]
        ):
            sock = getattr(conn, "_sock", None)
            if sock is not None:
                out.append(sock.fileno())
        return out

    def close(self) -> None:
        self.drop_wait()
        self.abandon_exchange()
        if self._ops_conn is not None:
            self._ops_conn.disconnect()
            self.redis.connection_pool.release(self._ops_conn)
            self._ops_conn = None
        self.redis.close()
