"""The exception tree of Backstage.

Every error Backstage raises on purpose derives from :class:`BackstageError`,
and each also subclasses the builtin it resembles, so callers may catch either::

    BackstageError
    ├── ConfigError (ValueError)            bad settings, app lookup, CLI options
    │   └── AppNotFound                     the module holds no / several Backstage apps
    ├── InvalidJobError (ValueError)        bad enqueue arguments: queue, priority, delay, backoff…
    │   └── PayloadError (TypeError)        payload that JSON cannot carry
    ├── WireError (ValueError)              an entry or scheduled member that does not decode
    ├── BrokerError                         Redis said no, or is not there
    │   ├── RedisUnavailable (ConnectionError)  cannot reach Redis (names host:port, never the password)
    │   └── RedisVersionError               Redis older than 6.2 (XAUTOCLAIM)
    ├── TaskNotFound (LookupError)          a worker got a task name it has no handler for
    ├── ResultNotFound (LookupError)        no status for a job id (never tracked, or expired)
    ├── ResultTimeout (TimeoutError)        result() waited longer than its timeout
    ├── JobFailed                           result() of a job that ended dead-lettered
    ├── Retry                               raised by a handler: run me again later
    └── Reject                              raised by a handler: dead-letter me now

This module is imported by producers, the master and the children alike.
"""

from __future__ import annotations

__all__ = [
    "BackstageError",
    "ConfigError",
    "AppNotFound",
    "InvalidJobError",
    "PayloadError",
    "WireError",
    "BrokerError",
    "RedisUnavailable",
    "RedisVersionError",
    "TaskNotFound",
    "ResultNotFound",
    "ResultTimeout",
    "JobFailed",
    "Retry",
    "Reject",
]


class BackstageError(Exception):
    """Root of every error Backstage raises on purpose."""


class ConfigError(BackstageError, ValueError):
    """A setting is invalid; the message names the setting and the fix."""


class AppNotFound(ConfigError):
    """`backstage-prefork module[:attr]` found no (or more than one) Backstage app."""


class InvalidJobError(BackstageError, ValueError):
    """An enqueue argument is invalid (queue, priority, delay, attempts, backoff, timeout)."""


class PayloadError(InvalidJobError, TypeError):
    """The payload cannot be serialized to JSON; names the task and the offending type."""


class WireError(BackstageError, ValueError):
    """A stream entry or scheduled member does not follow WIRE.md."""


class BrokerError(BackstageError):
    """Redis refused a command or cannot be reached."""


class RedisUnavailable(BrokerError, ConnectionError):
    """Redis cannot be reached. The message names host:port and never a password."""


class RedisVersionError(BrokerError):
    """The Redis server is too old (Backstage needs 6.2+ for XAUTOCLAIM)."""


class TaskNotFound(BackstageError, LookupError):
    """A job names a task that this app has no handler for."""


class ResultNotFound(BackstageError, LookupError):
    """No status is kept for this job id: unknown, not opted in (``result_ttl``), or expired."""


class ResultTimeout(BackstageError, TimeoutError):
    """``result(job_id, timeout=...)`` gave up before the job finished."""


class JobFailed(BackstageError):
    """The job ended in its dead-letter stream; carries why and the last error."""

    def __init__(self, job_id: str, reason: str, error_type: str, message: str, traceback: str) -> None:
        super().__init__(f"job {job_id} failed ({reason}): {error_type}: {message}")
        self.job_id = job_id
        self.reason = reason
        self.error_type = error_type
        self.message = message
        self.traceback = traceback


class Retry(BackstageError):
    """Raise from a handler to have the job run again after ``delay`` seconds.

    The retry counts as an attempt: once the job's ``attempts`` are used up
    (or, for a job that declares none, the worker's ``max_deliveries``) it
    goes to the dead-letter stream with reason ``failed``. ``delay=None``
    uses the job's backoff policy.
    """

    def __init__(self, delay: float | None = None, message: str = "retry requested") -> None:
        if delay is not None and (delay != delay or delay < 0):
            raise InvalidJobError(f"Retry(delay={delay!r}): delay must be >= 0 seconds")
        super().__init__(message)
        self.delay = delay


class Reject(BackstageError):
    """Raise from a handler to send the job straight to its dead-letter stream."""

    def __init__(self, reason: str = "rejected") -> None:
        super().__init__(reason)
        self.reason = reason
