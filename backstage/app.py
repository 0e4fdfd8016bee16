"""The :class:`Backstage` app: task registry, settings and a producer.

Imported by producers and by ``backstage-prefork`` (the master imports the
app module, then forks the children from that state).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import difflib
import fnmatch
import inspect
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterable, TypeVar, overload

from .client import AsyncClient, Client, Job, TaskDefaults, check_max_payload_bytes
from .cron import CronEntry
from .errors import ConfigError, InvalidJobError
from .payloads import PayloadCodec, codec_for
from .protocol.keys import DEFAULT_GROUP, DEFAULT_PREFIX, PRIORITIES, Keys, validate_queue
from .connections.redis_conn import TlsSettings, resolve_url
from .protocol.wire import DEFAULT_MAX_PAYLOAD_BYTES, Backoff, encode_payload

if TYPE_CHECKING:
    from .testing import Testing

__all__ = ["Backstage", "Task", "Next"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")  # a task's payload type
R = TypeVar("R")  # what its handler returns


@dataclass(frozen=True)
class Next:
    """Workflow instruction: return it from a handler to enqueue the next step.

    It is enqueued in the same atomic step as the ack of the current job.
    ``delay`` is in **seconds**, like the rest of the Python API. The dict
    form, ``{"next": task, "payload": payload, "delay_ms": 5000}``, is what
    the Go and TypeScript SDKs return: there the delay is in
    **milliseconds**, spelled ``"delay_ms"`` or, as those SDKs write it,
    ``"delay"`` (both given is an error).
    """

    task: str
    payload: Any = None
    delay: float = 0.0
    queue: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task:
            raise InvalidJobError(f"Next(task={self.task!r}): expected a non-empty task name")
        if isinstance(self.delay, bool) or not isinstance(self.delay, (int, float)) or not 0 <= self.delay < math.inf:
            raise InvalidJobError(f"Next(delay={self.delay!r}): expected seconds >= 0")
        if self.queue is not None:
            validate_queue(self.queue)


@dataclass
class Task(Generic[T, R]):
    """A registered handler and its options. Calling it runs the function.

    Generic in the handler's payload type ``T`` and return type ``R``, so a
    type checker sees ``task(payload)`` and ``task.enqueue(payload)`` with
    the handler's own annotation. A payload annotated as a dataclass,
    ``TypedDict`` or pydantic model has a :attr:`codec`: it is checked at
    enqueue and rebuilt as that type before the handler runs.
    """

    name: str
    func: Callable[[T], R]
    queue: str | None = None
    timeout: float | None = None
    attempts: int | None = None
    backoff: Backoff | None = None
    app: "Backstage | None" = field(default=None, repr=False)
    result_ttl: float | None = None

    def __post_init__(self) -> None:
        self.is_async = inspect.iscoroutinefunction(self.func)
        self.defaults = TaskDefaults(self.queue, self.attempts, self.backoff, self.timeout, self.result_ttl)
        self.codec: PayloadCodec | None = codec_for(self.name, self.func)
        #: What the worker calls with the decoded JSON payload: the handler
        #: itself, or the handler behind the codec's rebuild of its type.
        self.handler: Callable[[Any], Any] = self.func if self.codec is None else self._typed

    def _typed(self, value: Any) -> Any:
        assert self.codec is not None
        return self.func(self.codec.build(value))

    def __call__(self, payload: T, /, *args: Any, **kwargs: Any) -> R:
        return self.func(payload, *args, **kwargs)  # extra arguments: a direct call of a handler that takes them

    def enqueue(
        self,
        payload: T,
        *,
        priority: str | None = None,
        queue: str | None = None,
        delay: float | None = None,
        at: "_dt.datetime | float | None" = None,
        dedupe_key: str | None = None,
        dedupe_ttl: float | None = None,
        attempts: int | None = None,
        backoff: Backoff | float | None = None,
        timeout: float | None = None,
        result_ttl: float | None = None,
    ) -> str | None:
        """Enqueue this task through its app; options as for :meth:`Client.enqueue`.

        Returns the job id (``None`` when deduplicated). Raises
        InvalidJobError naming the field when the payload does not fit the
        handler's dataclass / TypedDict / pydantic annotation.
        """
        if self.app is None:
            raise ConfigError(f"task {self.name!r} belongs to no app")
        options = {k: v for k, v in (("priority", priority), ("queue", queue), ("delay", delay), ("at", at),
                                     ("dedupe_key", dedupe_key), ("dedupe_ttl", dedupe_ttl),
                                     ("attempts", attempts), ("backoff", backoff), ("timeout", timeout),
                                     ("result_ttl", result_ttl)) if v is not None}
        return self.app.enqueue(self.name, payload, **options)


class Backstage:
    """An application: its tasks, its Redis settings, and a producer.

    Args:
        redis_url: defaults to $BACKSTAGE_REDIS_URL, then $REDIS_URL, then
            ``redis://localhost:6379/0``. No connection is made until needed.
        prefix: key prefix (WIRE.md ``P``).
        group: consumer group of the workers (WIRE.md ``G``).
        name: shown in logs and process titles.
        tls: CA and client certificate files for a ``rediss://`` URL
            (:class:`TlsSettings`); ``backstage-prefork --tls-ca …`` fills
            it in for an app that has none.
        history: workers of this app keep a capped stream of the last ~N
            finished jobs (``backstage jobs``, the dashboard); 0 (default)
            keeps none. ``backstage-prefork --history N`` overrides it.
        max_payload_bytes: payloads whose JSON is larger raise
            ``PayloadError`` at enqueue (default: the workers' default, 16 MiB).
        external_tasks: task names (``fnmatch`` patterns such as ``"billing.*"``)
            that other apps or the Go/TypeScript SDKs serve. Once the app has
            registered a task, ``app.enqueue`` of a name it neither registered
            nor lists here raises ``InvalidJobError`` instead of sending a job
            that would be dead-lettered as ``unknown-task``. ``True`` allows
            every name.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        group: str = DEFAULT_GROUP,
        name: str = "backstage",
        tls: TlsSettings | None = None,
        history: int = 0,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        external_tasks: Iterable[str] | bool = (),
    ) -> None:
        self.redis_url = resolve_url(redis_url)
        self.tls = tls
        self.max_payload_bytes = check_max_payload_bytes(max_payload_bytes)
        if isinstance(external_tasks, bool):
            self.external_tasks: tuple[str, ...] | bool = external_tasks
        elif isinstance(external_tasks, str):
            raise ConfigError(f"external_tasks={external_tasks!r}: expected a list of task names or patterns, "
                              "or True")
        else:
            self.external_tasks = tuple(external_tasks)
            bad = [t for t in self.external_tasks if not isinstance(t, str) or not t]
            if bad:
                raise ConfigError(f"external_tasks: {bad[0]!r} is not a task name or pattern")
        self.keys = Keys(prefix)
        if not isinstance(group, str) or not group:
            raise ConfigError(f"group={group!r}: the consumer group must be a non-empty string")
        self.prefix = prefix
        self.group = group
        self.name = name
        if isinstance(history, bool) or not isinstance(history, int) or history < 0:
            raise ConfigError(f"history={history!r}: expected a number of jobs >= 0 (0: off)")
        self.history = history
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.child_start_hooks: list[Callable[[], Any]] = []
        self.cron_entries: list[CronEntry] = []
        self.broadcast_handlers: dict[str, list[Callable[[Any], Any]]] = {}
        self._client: Client | None = None
        # set by backstage.testing while an inline() or capture() block runs
        self._intercept: Any = None

    @property
    def testing(self) -> "Testing":
        """Test helpers for this app: ``inline()`` and ``capture()`` (see :mod:`backstage.testing`)."""
        from .testing import Testing

        return Testing(self)

    def cron(
        self,
        expr: str,
        task: str,
        payload: Any = None,
        *,
        tz: str = "UTC",
        queue: str | None = None,
        priority: str | None = None,
        name: str | None = None,
        catch_up: str = "latest",
    ) -> CronEntry:
        """Enqueue ``task`` on a cron schedule; each tick fires once however many workers run.

        Args:
            expr: 5 fields (``*/5 * * * *``), a 6th for seconds (``* * * * * */10``),
                or ``@hourly``-style macros.
            tz: IANA zone the expression is read in (DST as croniter does it).
            catch_up: ``"latest"`` fires the most recent tick missed while no
                worker ran, once; ``"skip"`` fires none.
            name: unique id of the entry (default ``task@expr``).

        Raises:
            ConfigError naming the expression when it, the zone or the name is invalid.
        """
        if not isinstance(task, str) or not task:
            raise ConfigError(f"cron {expr!r}: task must be a non-empty string")
        if queue is not None and priority is not None:
            raise ConfigError(f"cron {expr!r}: give queue= or priority=, not both")
        q = priority if priority is not None else queue
        if q is None:
            t = self.tasks.get(task)
            q = t.queue if t is not None and t.queue else "default"
        try:
            validate_queue(q)
            payload_json = encode_payload(task, payload)
        except InvalidJobError as exc:
            raise ConfigError(f"cron {expr!r}: {exc}") from None
        entry_name = name if name is not None else f"{task}@{expr}".replace(" ", "_")
        entry = CronEntry(expr, task, payload_json, tz, q, entry_name, catch_up)
        if any(e.name == entry.name for e in self.cron_entries):
            raise ConfigError(f"cron {expr!r}: an entry named {entry.name!r} exists; pass name=")
        self.cron_entries.append(entry)
        return entry

    def on_broadcast(self, task: str) -> Callable[[F], F]:
        """Register a handler that runs in **every child of every worker** when
        ``client.broadcast(task, payload)`` is sent (e.g. to clear a cache)."""
        if not isinstance(task, str) or not task:
            raise ConfigError(f"on_broadcast: task {task!r} must be a non-empty string")

        def register(func: F) -> F:
            if not callable(func):
                raise ConfigError(f"on_broadcast: {func!r} is not callable")
            self.broadcast_handlers.setdefault(task, []).append(func)
            return func

        return register

    def on_child_start(self, func: F) -> F:
        """Register a function each prefork child runs once, after the fork and
        before its first job (open per-process connections here). If it
        raises, the worker stops with exit code 3 instead of respawning."""
        if not callable(func):
            raise ConfigError(f"on_child_start: {func!r} is not callable")
        self.child_start_hooks.append(func)
        return func

    # -- registry ----------------------------------------------------------
    @overload
    def task(self, name: Callable[[T], R]) -> Task[T, R]: ...

    @overload
    def task(
        self,
        name: str | None = None,
        *,
        queue: str | None = None,
        priority: str | None = None,
        timeout: float | None = None,
        attempts: int | None = None,
        backoff: Backoff | None = None,
        result_ttl: float | None = None,
    ) -> Callable[[Callable[[T], R]], Task[T, R]]: ...

    def task(
        self,
        name: Any = None,
        *,
        queue: str | None = None,
        priority: str | None = None,
        timeout: float | None = None,
        attempts: int | None = None,
        backoff: Backoff | None = None,
        result_ttl: float | None = None,
    ) -> Any:
        """Register a handler (``def`` or ``async def``) taking the payload.

        Use as ``@app.task("order.process", timeout=30, attempts=3)`` or bare
        ``@app.task`` (the name is then ``module.function``). ``queue`` or
        ``priority`` is where ``app.enqueue`` sends it by default.
        ``result_ttl`` (seconds) keeps each job's status and return value for
        ``client.status()`` / ``client.result()``; tasks without it pay nothing.
        """
        if callable(name):
            return self.task()(name)
        if queue is not None and priority is not None:
            raise ConfigError("@app.task: give queue= or priority=, not both")
        if priority is not None and priority not in PRIORITIES:
            raise ConfigError(
                f"@app.task: priority={priority!r} is not one of {', '.join(PRIORITIES)}; use queue= for a custom queue"
            )
        q = priority if priority is not None else queue
        if q is not None:
            try:
                validate_queue(q)
            except InvalidJobError as exc:
                raise ConfigError(str(exc)) from None
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0):
            raise ConfigError(f"@app.task: timeout={timeout!r} must be seconds > 0")
        if attempts is not None and (isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1):
            raise ConfigError(f"@app.task: attempts={attempts!r} must be an integer >= 1")
        if backoff is not None and not isinstance(backoff, Backoff):
            raise ConfigError("@app.task: backoff= must be Backoff.fixed(...) or Backoff.exponential(...)")
        if result_ttl is not None and (isinstance(result_ttl, bool) or not isinstance(result_ttl, (int, float))
                                       or not 0 < result_ttl < math.inf):
            raise ConfigError(f"@app.task: result_ttl={result_ttl!r} must be seconds > 0")

        def register(func: Callable[[T], R]) -> Task[T, R]:
            if not callable(func):
                raise ConfigError(f"@app.task: {func!r} is not callable")
            task_name = name if name is not None else f"{func.__module__}.{func.__qualname__}"
            if not isinstance(task_name, str) or not task_name:
                raise ConfigError(f"@app.task: name {task_name!r} must be a non-empty string")
            if task_name in self.tasks and self.tasks[task_name].func is not func:
                raise ConfigError(f"task {task_name!r} is registered twice")
            t: Task[T, R] = Task(task_name, func, q, timeout, attempts, backoff, app=self, result_ttl=result_ttl)
            self.tasks[task_name] = t
            return t

        return register

    def _task_defaults(self, name: str) -> TaskDefaults | None:
        t = self.tasks.get(name)
        return t.defaults if t is not None else None

    def serves_elsewhere(self, name: str) -> bool:
        """True if ``name`` is declared in ``external_tasks`` (served by another app or SDK)."""
        if isinstance(self.external_tasks, bool):
            return self.external_tasks
        return any(name == p or fnmatch.fnmatchcase(name, p) for p in self.external_tasks)

    def _check_task(self, name: str) -> None:
        """Refuse a task name no one will run (called for names without registered defaults)."""
        if not self.tasks or name in self.tasks or self.serves_elsewhere(name):
            return  # an app without tasks is a pure producer: it cannot know
        close = difflib.get_close_matches(name, list(self.tasks), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise InvalidJobError(
            f"task {name!r} is not registered in this app ({len(self.tasks)} task(s)); {hint}"
            f"if another app or SDK serves it, list it in Backstage(..., external_tasks=[{name!r}])"
        )

    # -- producing -----------------------------------------------------------
    @property
    def client(self) -> Client:
        """The app's own :class:`Client` (made on first use; re-made after a fork)."""
        if self._client is None:
            self._client = Client(self.redis_url, prefix=self.prefix, defaults=self._task_defaults, tls=self.tls,
                                  max_payload_bytes=self.max_payload_bytes, task_check=self._check_task)
        return self._client

    def async_client(self) -> AsyncClient:
        """A new :class:`AsyncClient` with this app's settings, task defaults and task check."""
        return AsyncClient(self.redis_url, prefix=self.prefix, defaults=self._task_defaults, tls=self.tls,
                           max_payload_bytes=self.max_payload_bytes, task_check=self._check_task)

    def enqueue(self, task: str, payload: Any = None, **options: Any) -> str | None:
        """Enqueue a job; task defaults from ``@app.task`` apply. See :meth:`Client.enqueue`.

        A payload of a typed task (dataclass / TypedDict / pydantic
        annotation) is checked first: InvalidJobError names the field, and
        nothing is written.
        """
        t = self.tasks.get(task)
        if t is not None and t.codec is not None:
            payload = t.codec.check(payload)
        if self._intercept is not None:
            return self._intercept.enqueue(task, payload, options)  # type: ignore[no-any-return]
        return self.client.enqueue(task, payload, **options)

    def enqueue_many(self, jobs: Iterable[Job | tuple[str, Any]], **defaults: Any) -> list[str | None]:
        """Bulk enqueue; see :meth:`Client.enqueue_many`. Typed payloads are
        all checked before anything is written."""
        checked = self._checked(jobs)
        if self._intercept is not None:
            return self._intercept.enqueue_many(checked, defaults)  # type: ignore[no-any-return]
        return self.client.enqueue_many(checked, **defaults)

    def _checked(self, jobs: Iterable[Job | tuple[str, Any]]) -> list[Job | tuple[str, Any]]:
        """``jobs`` with the payloads of typed tasks checked (InvalidJobError names the field)."""
        checked: list[Job | tuple[str, Any]] = []
        for job in jobs:
            name = job.task if isinstance(job, Job) else (job[0] if isinstance(job, tuple) and job else None)
            t = self.tasks.get(name) if isinstance(name, str) else None
            if t is not None and t.codec is not None:
                if isinstance(job, Job):
                    job = dataclasses.replace(job, payload=t.codec.check(job.payload))
                elif len(job) == 2:
                    job = (job[0], t.codec.check(job[1]))
            checked.append(job)
        return checked

    def broadcast(self, task: str, payload: Any = None) -> str:
        """Send a message to every live worker; see :meth:`Client.broadcast`."""
        return self.client.broadcast(task, payload)

    def enqueue_group(self, jobs: Iterable[Job | tuple[str, Any]], **options: Any) -> str:
        """Enqueue a group of jobs atomically; see :meth:`Client.enqueue_group`."""
        checked = self._checked(jobs)
        if self._intercept is not None:
            return self._intercept.enqueue_group(checked, None, options)  # type: ignore[no-any-return]
        return self.client.enqueue_group(checked, **options)

    def enqueue_chord(self, jobs: Iterable[Job | tuple[str, Any]], *, callback: Job | tuple[str, Any],
                      **options: Any) -> str:
        """Enqueue a chord (a group and its callback); see :meth:`Client.enqueue_chord`."""
        checked = self._checked(jobs)
        if self._intercept is not None:
            return self._intercept.enqueue_group(checked, callback, options)  # type: ignore[no-any-return]
        return self.client.enqueue_chord(checked, callback=callback, **options)

    def cancel(self, job_id: str, **options: Any) -> dict[str, Any]:
        """Cancel a job, group or chord; see :meth:`Client.cancel`."""
        return self.client.cancel(job_id, **options)

    def _after_fork(self) -> None:
        # The parent's connections must never be used by a child.
        self._client = None

