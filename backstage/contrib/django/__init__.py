"""Backstage as a backend of Django's Tasks framework (extra ``backstage[django]``).

::

    INSTALLED_APPS = [..., "backstage.contrib.django"]
    TASKS = {"default": {"BACKEND": "backstage.contrib.django.BackstageBackend",
                         "QUEUES": ["default", "emails"],
                         "OPTIONS": {"REDIS_URL": "redis://localhost:6379/0"}}}

then ``python manage.py backstage_worker`` runs the prefork worker. Works
with Django 6's ``django.tasks`` and with the ``django-tasks`` backport.
"""

from __future__ import annotations

from .backend import BackstageBackend, PendingEnqueue, enqueue_on_commit

__all__ = ["BackstageBackend", "PendingEnqueue", "enqueue_on_commit"]
