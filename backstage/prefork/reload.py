"""``backstage-prefork --reload``: restart the worker when the app's files change.

Development only. This process is a small supervisor *above* the master: it
runs the real worker (``backstage-prefork`` with the same arguments, minus
``--reload``) as a subprocess, watches the directories with watchfiles (the
``[reload]`` extra), and on a change of a ``.py`` file stops the worker
gracefully (SIGTERM: running jobs finish and are committed) and starts a
new one, which imports the changed code afresh.

Why a process above and not a restart of the children: children are forked
from the master's imported app, so new children would run the old code; and
watchfiles watches from threads, which the master must never have before it
forks. The master and its hot path never import watchfiles.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Any, Sequence

__all__ = ["run", "strip_reload_args"]

log = logging.getLogger("backstage.prefork")

EXIT_USAGE = 2


def strip_reload_args(argv: Sequence[str]) -> list[str]:
    """The worker's own arguments: ``argv`` without ``--reload`` and ``--reload-dir``."""
    out: list[str] = []
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--reload":
            pass
        elif word == "--reload-dir":
            skip = True
        elif not word.startswith("--reload-dir="):
            out.append(word)
    return out


def _stop(proc: "subprocess.Popen[bytes]", grace: float) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(grace + 5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def run(argv: Sequence[str], dirs: Sequence[str], grace: float) -> int:
    """Watch ``dirs`` and keep one worker running ``argv``; returns its last exit code."""
    try:
        import watchfiles
    except ImportError:
        print("backstage-prefork: --reload needs watchfiles: pip install 'backstage[reload]'", file=sys.stderr)
        return EXIT_USAGE
    missing = [d for d in dirs if not os.path.isdir(d)]
    if missing:
        print(f"backstage-prefork: --reload-dir {missing[0]!r}: no such directory", file=sys.stderr)
        return EXIT_USAGE
    cmd = [sys.executable, "-m", "backstage.prefork.cli", *strip_reload_args(argv)]
    stop = threading.Event()
    current: list["subprocess.Popen[bytes]"] = []

    def start() -> "subprocess.Popen[bytes]":
        # its own session: a terminal's Ctrl-C reaches this process only, which passes
        # each signal on once (a second Ctrl-C still means "stop now" to the worker)
        proc = subprocess.Popen(cmd, start_new_session=True)
        current[:] = [proc]
        return proc

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()
        for proc in current:
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("--reload: watching %s for changes of .py files", ", ".join(dirs), extra={"event": "reload"})
    proc = start()
    reported = False
    try:
        for changes in watchfiles.watch(*dirs, watch_filter=watchfiles.PythonFilter(), stop_event=stop,
                                        rust_timeout=500, yield_on_timeout=True, raise_interrupt=False):
            if not changes:
                if proc.poll() is not None and not reported:
                    log.warning("--reload: the worker exited with code %d; it restarts when a file changes",
                                proc.returncode, extra={"event": "reload"})
                    reported = True
                continue
            names = sorted({os.path.relpath(path) for _, path in changes})
            log.info("--reload: %s changed: restarting the worker", ", ".join(names[:5]), extra={"event": "reload"})
            _stop(proc, grace)
            if stop.is_set():
                break
            proc = start()
            reported = False
    finally:
        try:
            code = proc.wait(grace + 5.0)  # the signal was passed on: it is stopping
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    return code
