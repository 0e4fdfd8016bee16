"""Testing Backstage apps: inline and capture modes, a real worker, pytest fixtures.

- ``with app.testing.inline() as run:`` — ``app.enqueue`` / ``task.enqueue``
  run the job in this process through the worker's outcome policy
  (:mod:`backstage.prefork.policy`): retries decided and recorded, not slept;
  ``Next`` steps followed; rejects and exhausted retries recorded as dead.
- ``with app.testing.capture() as cap:`` — enqueues are recorded, not run.
- :func:`drain` — the real ``backstage-prefork`` until the queues are empty.
- ``-p backstage.testing.pytest`` (or the installed entry point): fixtures
  ``backstage_redis`` and ``backstage_worker``.

Imported lazily (``app.testing``); the worker never imports it.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterator

from .inline import Attempt, Capture, CapturedJob, InlineJob, InlineRun
from .server import RedisProcess
from .worker import DrainResult, WorkerProcess, app_spec, drain

if TYPE_CHECKING:
    from ..app import Backstage

__all__ = ["Testing", "InlineRun", "InlineJob", "Attempt", "Capture", "CapturedJob", "drain", "DrainResult",
           "WorkerProcess", "RedisProcess", "app_spec"]


class Testing:
    """``app.testing``: switch an app's enqueues to inline or capture mode for a block."""

    def __init__(self, app: "Backstage") -> None:
        self.app = app

    def _swap(self, target: object) -> object:
        if self.app._intercept is not None:
            raise RuntimeError("app.testing: an inline() or capture() block is already active for this app")
        previous, self.app._intercept = self.app._intercept, target
        return previous

    @contextlib.contextmanager
    def inline(self, *, max_deliveries: int | None = None) -> Iterator[InlineRun]:
        """Run every job enqueued through the app in this process, at once.

        ``max_deliveries`` is the worker's ``--max-deliveries`` (the retry
        limit of ``Retry`` raised by jobs that declare no ``attempts``).
        """
        run = InlineRun(self.app) if max_deliveries is None else InlineRun(self.app, max_deliveries=max_deliveries)
        previous = self._swap(run)
        try:
            yield run
        finally:
            self.app._intercept = previous
            run.close()

    @contextlib.contextmanager
    def capture(self) -> Iterator[Capture]:
        """Record every job enqueued through the app (task, payload, options) without running or sending it."""
        cap = Capture()
        previous = self._swap(cap)
        try:
            yield cap
        finally:
            self.app._intercept = previous
