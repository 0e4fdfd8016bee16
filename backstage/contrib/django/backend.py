"""``BackstageBackend``: Django's Tasks framework on Backstage queues.

Producers (web processes) use :meth:`BackstageBackend.enqueue`; the worker
(``manage.py backstage_worker``) registers every Django task it discovers
as a Backstage task named by the task's dotted path, and runs it in the
prefork children. Results live in Backstage's result hashes
(``P:result:<id>``), kept ``RESULT_TTL`` seconds, read back by
:meth:`get_result` as Django ``TaskResult`` objects.

Mapping:

- ``queue_name`` "default" with ``priority`` > 0 / 0 / < 0 goes to the
  ``urgent`` / ``default`` / ``low`` stream; any other queue name is a
  Backstage custom queue of that name (priority does not reorder within it);
- ``run_after`` becomes ``at=`` (through ``P:scheduled``);
- the job id is the ``TaskResult.id``.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import math
from typing import Any, Callable, Iterable

import orjson
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections, transaction
from django.utils.module_loading import import_string

from ...app import Backstage
from ...errors import InvalidJobError
from ...prefork.child import current_job
from ...protocol.keys import DEFAULT_PREFIX, validate_queue
from ... import results
from .compat import (DEFAULT_TASK_QUEUE_NAME, BaseTaskBackend, Task, TaskContext, TaskError, TaskResult,
                     TaskResultDoesNotExist, TaskResultStatus, module_path, task_enqueued, task_finished,
                     task_started)

__all__ = ["BackstageBackend", "PendingEnqueue", "enqueue_on_commit"]

_STATUS = {"scheduled": "READY", "queued": "READY", "failed": "READY", "running": "RUNNING",
           "done": "SUCCESSFUL", "dead": "FAILED"}
WORKER_ID = "backstage-prefork"


def _ms_to_dt(raw: str | None) -> _dt.datetime | None:
    if not raw:
        return None
    try:
        return _dt.datetime.fromtimestamp(int(raw) / 1000, tz=_dt.timezone.utc)
    except ValueError:
        return None


class BackstageBackend(BaseTaskBackend):  # type: ignore[misc]
    """A ``TASKS`` backend that enqueues to Backstage (Redis Streams).

    ``OPTIONS``: ``REDIS_URL`` (default: $BACKSTAGE_REDIS_URL, then
    $REDIS_URL), ``PREFIX`` (key prefix, default ``backstage``),
    ``RESULT_TTL`` (seconds results are kept, default 86400), ``ATTEMPTS``
    (executions allowed per task, default 1), ``MODULES`` (modules holding
    tasks besides each installed app's ``tasks`` module).
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        opts = {str(k).upper(): v for k, v in self.options.items()}
        unknown = set(opts) - {"REDIS_URL", "PREFIX", "RESULT_TTL", "ATTEMPTS", "MODULES"}
        if unknown:
            raise ImproperlyConfigured(f"TASKS[{alias!r}]['OPTIONS']: unknown option(s) {', '.join(sorted(unknown))}")
        ttl = opts.get("RESULT_TTL", 86400)
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl < math.inf:
            raise ImproperlyConfigured(f"TASKS[{alias!r}]['OPTIONS']['RESULT_TTL']={ttl!r}: expected seconds > 0")
        attempts = opts.get("ATTEMPTS")
        if attempts is not None and (isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1):
            raise ImproperlyConfigured(f"TASKS[{alias!r}]['OPTIONS']['ATTEMPTS']={attempts!r}: expected an integer >= 1")
        for q in self.queues:
            try:
                validate_queue(q)
            except InvalidJobError as exc:
                raise ImproperlyConfigured(f"TASKS[{alias!r}]['QUEUES']: {exc}") from None
        self.result_ttl = float(ttl)
        self.attempts: int | None = attempts
        self.modules: list[str] = list(opts.get("MODULES", []))
        self.app = Backstage(opts.get("REDIS_URL"), prefix=opts.get("PREFIX", DEFAULT_PREFIX), name=f"django:{alias}")

    # -- producing ---------------------------------------------------------------
    @staticmethod
    def target(task: Any) -> dict[str, Any]:
        """Where a task's jobs go: a priority stream for queue "default", else its own queue."""
        if task.queue_name == DEFAULT_TASK_QUEUE_NAME:
            return {"priority": "urgent" if task.priority > 0 else "low" if task.priority < 0 else "default"}
        return {"queue": task.queue_name}

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """Validate the task, write the job (one XADD, or a ZADD for ``run_after``), return its TaskResult."""
        self.validate_task(task)
        payload: dict[str, Any] = {"args": list(args), "kwargs": dict(kwargs)}
        run_after = task.run_after
        if run_after is not None and run_after.tzinfo is None:
            run_after = run_after.astimezone()  # USE_TZ=False: naive means local time
        job_id = self.app.client.enqueue(
            module_path(task.func), payload, at=run_after, result_ttl=self.result_ttl, attempts=self.attempts,
            **self.target(task))
        assert job_id is not None  # no dedupe key: never skipped
        result = self._result(task, job_id, "READY", payload["args"], payload["kwargs"],
                              enqueued_at=_dt.datetime.now(tz=_dt.timezone.utc))
        task_enqueued.send(type(self), task_result=result)
        return result

    def _result(self, task: Any, job_id: str, status: str, args: list[Any], kwargs: dict[str, Any], *,
                attempts: int = 0, errors: Iterable[Any] = (), enqueued_at: _dt.datetime | None = None,
                started_at: _dt.datetime | None = None, finished_at: _dt.datetime | None = None) -> Any:
        return TaskResult(task=task, id=job_id, status=TaskResultStatus[status], enqueued_at=enqueued_at,
                          started_at=started_at, finished_at=finished_at,
                          last_attempted_at=started_at or finished_at, args=args, kwargs=kwargs,
                          backend=self.alias, errors=list(errors), worker_ids=[WORKER_ID] * attempts)

    def get_result(self, result_id: str) -> Any:
        """The TaskResult of a job, from its Backstage status hash.

        ``args``/``kwargs`` are not kept there: they read as empty. Raises
        TaskResultDoesNotExist for unknown or expired ids.
        """
        client = self.app.client
        client._ready()
        h = results.decode(client.redis.hgetall(self.app.keys.result(result_id)))
        if not h or h.get("status") not in _STATUS:
            raise TaskResultDoesNotExist(result_id)
        try:
            task = import_string(h.get("task", ""))
        except ImportError:
            raise TaskResultDoesNotExist(f"{result_id}: task {h.get('task')!r} cannot be imported") from None
        status = _STATUS[h["status"]]
        when = _ms_to_dt(h.get("updatedAt"))
        attempt = int(h["attempt"]) if h.get("attempt", "").isdigit() else (1 if status != "READY" else 0)
        errors = []
        if h.get("errorType"):
            etype = h["errorType"]
            errors.append(TaskError(exception_class_path=etype if "." in etype else f"builtins.{etype}",
                                    traceback=h.get("traceback", "")))
        res = self._result(task, result_id, status, [], {}, attempts=attempt, errors=errors,
                           started_at=when if status == "RUNNING" else None,
                           finished_at=when if status in ("SUCCESSFUL", "FAILED") else None)
        if status == "SUCCESSFUL" and "value" in h:
            object.__setattr__(res, "_return_value", orjson.loads(h["value"]))
        return res

    # -- the worker side ---------------------------------------------------------------
    def discover(self) -> Backstage:
        """Register every task of this backend found in the installed apps'
        ``tasks`` modules and in ``OPTIONS['MODULES']`` on :attr:`app`; return it."""
        from django.apps import apps

        names = [f"{cfg.name}.tasks" for cfg in apps.get_app_configs()] + self.modules
        for name in names:
            try:
                mod = importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name is not None and name.startswith(exc.name) and name not in self.modules:
                    continue  # this app has no tasks module
                raise
            for value in list(vars(mod).values()):
                if isinstance(value, Task) and value.backend == self.alias:
                    self.register(value)
        return self.app

    def register(self, task: Any) -> None:
        """Make ``task`` runnable by the worker (named by its dotted path)."""
        name = module_path(task.func)
        if name not in self.app.tasks:
            self.app.task(name, attempts=self.attempts, result_ttl=self.result_ttl)(self._runner(name))

    def _runner(self, name: str) -> Callable[[Any], Any]:
        backend = self

        def run(payload: Any) -> Any:
            task = import_string(name)
            args = payload.get("args", []) if isinstance(payload, dict) else []
            kwargs = payload.get("kwargs", {}) if isinstance(payload, dict) else {}
            job = current_job()
            job_id = job.job_id if job is not None and job.job_id else ""
            attempt = job.attempt if job is not None else 1
            now = _dt.datetime.now(tz=_dt.timezone.utc)
            running = backend._result(task, job_id, "RUNNING", args, kwargs, attempts=attempt, started_at=now)
            close_old_connections()  # as a request would: drop connections past CONN_MAX_AGE or broken
            task_started.send(type(backend), task_result=running)
            ok = False
            try:
                if task.takes_context:
                    value = task.call(TaskContext(task_result=running), *args, **kwargs)
                else:
                    value = task.call(*args, **kwargs)
                ok = True
                return value
            finally:
                close_old_connections()
                object.__setattr__(running, "status", TaskResultStatus.SUCCESSFUL if ok else TaskResultStatus.FAILED)
                object.__setattr__(running, "finished_at", _dt.datetime.now(tz=_dt.timezone.utc))
                task_finished.send(type(backend), task_result=running)

        run.__qualname__ = run.__name__ = f"run:{name}"
        return run


class PendingEnqueue:
    """What :func:`enqueue_on_commit` returns: ``result`` is the TaskResult
    once the transaction committed (None before, and for ever after a rollback)."""

    def __init__(self) -> None:
        self.result: Any = None

    @property
    def enqueued(self) -> bool:
        return self.result is not None


def enqueue_on_commit(task: Any, *args: Any, using: str | None = None, **kwargs: Any) -> PendingEnqueue:
    """Enqueue ``task(*args, **kwargs)`` when the current transaction commits
    (at once outside a transaction). A rolled-back transaction enqueues nothing,
    and a worker never sees rows the job needs before they are committed."""
    pending = PendingEnqueue()

    def send() -> None:
        pending.result = task.enqueue(*args, **kwargs)

    transaction.on_commit(send, using=using)
    return pending
