"""Django's Tasks API: ``django.tasks`` (Django 6+) or the ``django_tasks`` backport (Django 4.2-5.2).

One place imports it, so the rest of :mod:`backstage.contrib.django` reads
the same names on either.
"""

from __future__ import annotations

from typing import Any

try:  # Django 6: the framework is built in
    from django.tasks import DEFAULT_TASK_QUEUE_NAME, TaskContext, TaskResult, TaskResultStatus, task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task, TaskError
    from django.tasks import signals as _signals
    from django.tasks.exceptions import TaskResultDoesNotExist

    BUILTIN = True
except ImportError:  # the backport (pip install django-tasks)
    from django_tasks import (
        DEFAULT_TASK_QUEUE_NAME, TaskContext, TaskResult, TaskResultStatus, task_backends)
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import Task, TaskError
    from django_tasks import signals as _signals
    from django_tasks.exceptions import TaskResultDoesNotExist

    BUILTIN = False

# task_started is not in every version of the API: a dummy signal stands in for a missing one
from django.dispatch import Signal  # noqa: E402

task_enqueued: Any = getattr(_signals, "task_enqueued", None) or Signal()
task_started: Any = getattr(_signals, "task_started", None) or Signal()
task_finished: Any = getattr(_signals, "task_finished", None) or Signal()

__all__ = ["BUILTIN", "BaseTaskBackend", "DEFAULT_TASK_QUEUE_NAME", "Task", "TaskContext", "TaskError",
           "TaskResult", "TaskResultDoesNotExist", "TaskResultStatus", "task_backends", "task_enqueued",
           "task_finished", "task_started", "module_path"]


def module_path(func: Any) -> str:
    """The dotted path Django names a task by (``app.tasks.send_email``)."""
    return f"{func.__module__}.{func.__qualname__}"
