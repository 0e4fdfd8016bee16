"""The Django app that brings ``manage.py backstage_worker`` (add ``backstage.contrib.django`` to INSTALLED_APPS)."""

from __future__ import annotations

from django.apps import AppConfig


class BackstageConfig(AppConfig):  # type: ignore[misc]
    name = "backstage.contrib.django"
    label = "backstage"
    verbose_name = "Backstage"
