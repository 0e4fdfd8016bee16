"""The dashboard's settings: one frozen dataclass, filled by the CLI."""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..protocol.keys import DEFAULT_GROUP, DEFAULT_PREFIX, validate_queue

__all__ = ["DashboardConfig", "is_loopback"]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class DashboardConfig:
    """What the dashboard serves and who may act.

    Args:
        allow_actions: requeue/delete dead letters and control workers;
            False (default) serves read-only pages and refuses every POST
            but the login form.
        user, password: HTTP basic or login-form credentials (both or neither).
        token: an alternative secret (``Authorization: Bearer``, or the
            login form's password field).
        queues: queues shown besides the three priorities, the workers'
            and those found in the keyspace.
        refresh: seconds between the overview's live updates.
    """

    redis_url: str = "redis://localhost:6379/0"
    prefix: str = DEFAULT_PREFIX
    group: str = DEFAULT_GROUP
    allow_actions: bool = False
    user: str | None = None
    password: str | None = None
    token: str | None = None
    queues: tuple[str, ...] = ()
    refresh: float = 2.0
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    def __post_init__(self) -> None:
        if (self.user is None) != (self.password is None):
            raise ConfigError("auth: give both a user and a password (--auth user:password)")
        if self.user is not None and (not self.user or ":" in self.user or not self.password):
            raise ConfigError("auth: expected --auth user:password with a non-empty user (no ':') and password")
        if self.token is not None and len(self.token) < 8:
            raise ConfigError("BACKSTAGE_DASHBOARD_TOKEN: use a token of at least 8 characters")
        for q in self.queues:
            try:
                validate_queue(q)
            except ValueError as exc:
                raise ConfigError(f"--queues: {exc}") from None
        if not 0.2 <= self.refresh <= 3600:
            raise ConfigError(f"--refresh {self.refresh}: expected seconds between 0.2 and 3600")

    @property
    def auth_required(self) -> bool:
        return self.user is not None or self.token is not None
