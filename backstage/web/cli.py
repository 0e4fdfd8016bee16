"""``backstage dashboard``: serve the web UI with uvicorn.

Only this module's :func:`run` imports Starlette, uvicorn and Jinja2, so the
base install (and ``backstage --help``) works without the ``[web]`` extra.
Environment: ``BACKSTAGE_DASHBOARD_AUTH`` (``user:password``, like
``--auth``) and ``BACKSTAGE_DASHBOARD_TOKEN`` (a bearer token, also accepted
as the login form's password).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..errors import ConfigError

__all__ = ["add_parser", "run", "config_from_args"]


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]", common: Any) -> None:
    """The ``dashboard`` subcommand (``common`` adds the connection options)."""
    d = sub.add_parser("dashboard", help="serve the web dashboard (pip install backstage[web])",
                       description="A web UI over the queues, dead letters, job history, workers and cron. "
                                   "Read-only unless --allow-actions; binds 127.0.0.1 unless --host says otherwise.")
    d.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    d.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    d.add_argument("--allow-actions", action="store_true",
                   help="allow requeueing/deleting dead letters and controlling workers (default: read-only)")
    d.add_argument("--auth", metavar="USER:PASSWORD", help="require this login [BACKSTAGE_DASHBOARD_AUTH]; "
                   "BACKSTAGE_DASHBOARD_TOKEN sets a bearer token as well")
    d.add_argument("--queues", help="comma-separated queues to show besides those found")
    d.add_argument("--refresh", type=float, default=2.0, help="seconds between live updates (default 2)")
    d.add_argument("--insecure-no-auth", action="store_true",
                   help="allow binding a non-loopback address without --auth or a token")
    common(d)


def config_from_args(args: argparse.Namespace, url: str, prefix: str, group: str) -> Any:
    """A DashboardConfig from the parsed options and the environment."""
    from .config import DashboardConfig, is_loopback

    auth = args.auth or os.environ.get("BACKSTAGE_DASHBOARD_AUTH") or None
    user = password = None
    if auth is not None:
        user, sep, password = auth.partition(":")
        if not sep:
            raise ConfigError("--auth: expected user:password")
    token = os.environ.get("BACKSTAGE_DASHBOARD_TOKEN") or None
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port {args.port}: expected a TCP port 1-65535")
    cfg = DashboardConfig(redis_url=url, prefix=prefix, group=group, allow_actions=args.allow_actions,
                          user=user, password=password, token=token, refresh=args.refresh,
                          queues=tuple(q.strip() for q in (args.queues or "").split(",") if q.strip()))
    if not is_loopback(args.host) and not cfg.auth_required and not args.insecure_no_auth:
        raise ConfigError(f"--host {args.host}: refusing to serve the dashboard beyond this machine without a "
                          "login; add --auth user:password (or BACKSTAGE_DASHBOARD_TOKEN), or --insecure-no-auth")
    return cfg


def run(args: argparse.Namespace, url: str, prefix: str, group: str) -> int:
    """Serve until interrupted; returns the exit code."""
    cfg = config_from_args(args, url, prefix, group)
    try:
        import uvicorn

        from .app import create_app
    except ImportError as exc:
        raise ConfigError(f"the dashboard needs the web extra ({exc.name} is missing): "
                          "pip install 'backstage[web]'") from None
    app = create_app(cfg)
    mode = "actions allowed" if cfg.allow_actions else "read-only"
    print(f"backstage dashboard on http://{args.host}:{args.port}/ ({mode}, prefix {prefix!r})", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0
