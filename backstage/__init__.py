"""Backstage: background jobs on Redis Streams with at-least-once delivery.

Producers use :class:`Client`, :class:`AsyncClient` or the :class:`Backstage`
app object; ``backstage-prefork`` runs the handlers in forked children.
"""

from .app import Backstage, Next, Task
from .client import AsyncClient, Client, Job, Priority
from .context import JobContext, current_job
from .groups import Chord, Group
from .results import JobStatus
from .errors import (
    AppNotFound,
    BackstageError,
    BrokerError,
    ConfigError,
    InvalidJobError,
    JobFailed,
    PayloadError,
    RedisUnavailable,
    RedisVersionError,
    Reject,
    ResultNotFound,
    ResultTimeout,
    Retry,
    TaskNotFound,
    WireError,
)
from .connections.redis_conn import TlsSettings
from .protocol.wire import Backoff

__version__ = "0.1.0"

__all__ = [
    "AppNotFound",
    "AsyncClient",
    "Backoff",
    "Backstage",
    "BackstageError",
    "BrokerError",
    "Chord",
    "Client",
    "ConfigError",
    "Group",
    "InvalidJobError",
    "Job",
    "JobContext",
    "JobFailed",
    "JobStatus",
    "Next",
    "PayloadError",
    "Priority",
    "RedisUnavailable",
    "RedisVersionError",
    "Reject",
    "ResultNotFound",
    "ResultTimeout",
    "Retry",
    "Task",
    "TaskNotFound",
    "TlsSettings",
    "WireError",
    "__version__",
    "current_job",
]
