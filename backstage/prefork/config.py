"""Settings of one ``backstage-prefork`` master (validated, frozen)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from ..errors import ConfigError, InvalidJobError
from ..protocol.keys import DEFAULT_GROUP, DEFAULT_PREFIX, PRIORITIES, validate_queue
from ..protocol.wire import DEFAULT_MAX_PAYLOAD_BYTES

__all__ = ["WorkerConfig", "default_consumer"]


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _positive(name: str, value: object, *, integer: bool = False, allow_none: bool = False, zero: bool = False) -> None:
    if value is None and allow_none:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < 0 or (value == 0 and not zero):
        what = "an integer" if integer else "a number"
        raise ConfigError(f"{name}={value!r}: expected {what} {'>=' if zero else '>'} 0")


@dataclass(frozen=True)
class WorkerConfig:
    """Every knob of the master; each CLI option maps to one field.

    Times are seconds; memory is MB.
    """

    concurrency: int = field(default_factory=lambda: os.cpu_count() or 1)
    queues: tuple[str, ...] = PRIORITIES
    redis_url: str = "redis://localhost:6379/0"
    prefix: str = DEFAULT_PREFIX
    group: str = DEFAULT_GROUP
    consumer: str = field(default_factory=default_consumer)
    max_tasks_per_child: int | None = None
    max_memory_per_child: float | None = None
    grace_period: float = 30.0
    default_timeout: float | None = None
    prefetch: int = 1
    max_batch: int = 32
    fast_job_threshold: float = 0.001
    short_job_threshold: float = 1.0
    idle_timeout: float = 60.0
    max_deliveries: int = 5
    dead_letter_maxlen: int = 100_000
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    block_timeout: float = 5.0
    promote_interval: float = 0.1
    promote_batch: int = 1000
    memory_check_interval: float = 1.0
    delete_on_ack: bool = True
    redis_timeout: float = 10.0
    heartbeat_interval: float = 2.0
    broadcast_interval: float = 0.2
    metrics_port: int | None = None
    metrics_host: str = "0.0.0.0"
    #: keep a capped stream of the last N finished jobs (``P:history``); 0: off, nothing written
    history: int = 0
    wait_for_redis: float = 0.0  # seconds to wait for Redis at start (0: exit 4 at once)

    def __post_init__(self) -> None:
        _positive("concurrency", self.concurrency, integer=True)
        if not self.queues:
            raise ConfigError("queues: give at least one queue")
        try:
            for q in self.queues:
                validate_queue(q)
        except InvalidJobError as exc:
            raise ConfigError(f"queues: {exc}") from None
        if len(set(self.queues)) != len(self.queues):
            raise ConfigError(f"queues={','.join(self.queues)}: a queue is listed twice")
        if not self.group:
            raise ConfigError("group: must be a non-empty string")
        if not self.consumer or any(c.isspace() for c in self.consumer):
            raise ConfigError(f"consumer={self.consumer!r}: must be non-empty, without spaces")
        _positive("max_tasks_per_child", self.max_tasks_per_child, integer=True, allow_none=True)
        _positive("max_memory_per_child", self.max_memory_per_child, allow_none=True)
        _positive("grace_period", self.grace_period, zero=True)
        _positive("default_timeout", self.default_timeout, allow_none=True)
        _positive("prefetch", self.prefetch, integer=True, zero=True)
        _positive("max_batch", self.max_batch, integer=True)
        _positive("fast_job_threshold", self.fast_job_threshold, zero=True)
        _positive("short_job_threshold", self.short_job_threshold, zero=True)
        _positive("idle_timeout", self.idle_timeout)
        _positive("max_deliveries", self.max_deliveries, integer=True)
        _positive("dead_letter_maxlen", self.dead_letter_maxlen, integer=True)
        _positive("history", self.history, integer=True, zero=True)
        _positive("max_payload_bytes", self.max_payload_bytes, integer=True)
        _positive("block_timeout", self.block_timeout)
        _positive("promote_interval", self.promote_interval)
        _positive("promote_batch", self.promote_batch, integer=True)
        _positive("memory_check_interval", self.memory_check_interval)
        _positive("redis_timeout", self.redis_timeout)
        _positive("heartbeat_interval", self.heartbeat_interval)
        _positive("broadcast_interval", self.broadcast_interval)
        _positive("wait_for_redis", self.wait_for_redis, zero=True)
        if self.metrics_port is not None and (isinstance(self.metrics_port, bool) or not isinstance(self.metrics_port, int)
                                              or not 0 <= self.metrics_port <= 65535):
            raise ConfigError(f"metrics_port={self.metrics_port!r}: expected a TCP port 0-65535")
        if ":" in self.consumer or self.consumer in ("paused", "reply"):
            raise ConfigError(f"consumer={self.consumer!r}: must not contain ':' nor be 'paused' or 'reply'")
