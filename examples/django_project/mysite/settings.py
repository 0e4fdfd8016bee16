"""Settings of the example project: SQLite, and Backstage as the Tasks backend."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "example-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["backstage.contrib.django", "shop"]  # brings `manage.py backstage_worker`
try:
    import django.tasks  # noqa: F401  (Django 6: built in)
except ImportError:  # Django 4.2-5.2: the django-tasks backport
    INSTALLED_APPS.insert(0, "django_tasks")
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "mysite.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_DB", str(BASE_DIR / "db.sqlite3")),
    }
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TASKS = {
    "default": {
        "BACKEND": "backstage.contrib.django.BackstageBackend",
        "QUEUES": ["default", "emails"],
        "OPTIONS": {
            "REDIS_URL": os.environ.get("BACKSTAGE_REDIS_URL", "redis://localhost:6379/0"),
            "PREFIX": "djexample",
            "RESULT_TTL": 3600,
        },
    }
}
