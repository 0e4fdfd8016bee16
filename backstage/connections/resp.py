"""Pipelines of pre-packed commands: the fast path under bulk enqueue.

redis-py spends more time encoding arguments than Redis spends running an
XADD, so the producer packs RESP itself (hiredis.pack_command, or byte
templates for the hot XADD) and sends windows of packed commands on one
pooled connection, reading one reply per command. A reply that is an error
is collected, never left unread, so the connection stays in sync.
"""

from __future__ import annotations

from typing import Any, Sequence

import hiredis
import redis
import redis.asyncio

__all__ = ["pack_command", "bulk", "run_on", "run_packed", "run_packed_async", "WINDOW"]

#: Commands sent before their replies are read.
WINDOW = 2000


def pack_command(args: Sequence[Any]) -> bytes:
    """RESP of one command (hiredis, in C); bytes, str, int and float arguments."""
    return bytes(hiredis.pack_command(tuple(args)))


def bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%b\r\n" % (len(value), value)


def _windows(commands: Sequence[bytes]) -> list[tuple[int, bytes]]:
    return [(min(WINDOW, len(commands) - i), b"".join(commands[i:i + WINDOW])) for i in range(0, len(commands), WINDOW)]


def run_on(conn: Any, commands: Sequence[bytes]) -> list[Any]:
    """Send packed commands on ``conn``; return one reply per command (a
    ResponseError instance in place of an error reply). Connection errors
    propagate, after the connection is closed (it may hold unread replies)."""
    replies: list[Any] = []
    try:
        for count, data in _windows(commands):
            conn.send_packed_command([data])
            for _ in range(count):
                try:
                    replies.append(conn.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)
    except BaseException:
        conn.disconnect()
        raise
    return replies


def run_packed(client: "redis.Redis", commands: Sequence[bytes]) -> list[Any]:
    """:func:`run_on` with a connection borrowed from the client's pool."""
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        return run_on(conn, commands)
    finally:
        pool.release(conn)


async def run_packed_async(client: "redis.asyncio.Redis", commands: Sequence[bytes]) -> list[Any]:
    """asyncio twin of :func:`run_packed`."""
    pool = client.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    replies: list[Any] = []
    try:
        for count, data in _windows(commands):
            await conn.send_packed_command([data])
            for _ in range(count):
                try:
                    replies.append(await conn.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)
    return replies
