"""``python manage.py backstage_worker``: the prefork worker for a BackstageBackend.

Django is set up (settings, apps) before the master forks, so children
start with every model and task imported; database connections are closed
before the fork and each child opens its own on first use.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from backstage.contrib.django.backend import BackstageBackend
from backstage.contrib.django.compat import task_backends
from backstage.errors import ConfigError
from backstage.logs import setup_logging
from backstage.prefork.cli import build_parser, config_from_args
from backstage.prefork.loop import EXIT_USAGE, Master
from backstage.protocol.keys import PRIORITIES


class Command(BaseCommand):  # type: ignore[misc]
    help = ("Run the Backstage prefork worker for a BackstageBackend of TASKS. Options not listed here "
            "are read from BACKSTAGE_* variables, as backstage-prefork does (BACKSTAGE_GRACE_PERIOD, ...).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--backend", default="default", help="alias in TASKS (default: default)")
        parser.add_argument("-c", "--concurrency", type=int, help="child processes (default: CPU count)")
        parser.add_argument("-Q", "--queues", help="queues to serve, most urgent first "
                                                   "(default: urgent,default,low and the backend's QUEUES)")
        parser.add_argument("--max-tasks-per-child", type=int, help="recycle a child after N jobs")
        parser.add_argument("--prefork-log-level", choices=["debug", "info", "warning", "error"])

    def handle(self, *args: Any, **options: Any) -> None:
        alias = options["backend"]
        try:
            backend = task_backends[alias]
        except Exception as exc:  # noqa: BLE001 - InvalidTaskBackend(Error), named
            raise CommandError(f"TASKS has no backend {alias!r}: {exc}") from None
        if not isinstance(backend, BackstageBackend):
            raise CommandError(f"TASKS[{alias!r}] is a {type(backend).__name__}, not a BackstageBackend")
        app = backend.discover()
        if not app.tasks:
            self.stderr.write(f"backstage_worker: no tasks of backend {alias!r} found (looked in each installed "
                              "app's tasks module and OPTIONS['MODULES'])")
        queues = options["queues"] or ",".join(
            list(PRIORITIES) + sorted(q for q in backend.queues if q not in PRIORITIES))
        argv = ["--queues", queues]
        for flag, key in (("--concurrency", "concurrency"), ("--max-tasks-per-child", "max_tasks_per_child"),
                          ("--log-level", "prefork_log_level")):
            if options[key] is not None:
                argv += [flag, str(options[key])]
        parsed = build_parser().parse_args([*argv, "django"])
        setup_logging(parsed.log_level or os.environ.get("BACKSTAGE_LOG_LEVEL") or "info", "text")
        try:
            config, level, fmt = config_from_args(parsed, app)
            setup_logging(level, fmt)
            # children are forked from this process: none may inherit a database socket
            connections.close_all()
            app.on_child_start(connections.close_all)
            master = Master(app, config)
        except ConfigError as exc:
            self.stderr.write(f"backstage_worker: {exc}")
            sys.exit(EXIT_USAGE)
        code = master.run()
        if code:
            sys.exit(code)
