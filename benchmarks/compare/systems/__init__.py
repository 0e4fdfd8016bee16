"""The systems compared, their pinned benchmark-only dependencies and settings.

Pure data: ``run.py`` imports this with the standard library only (before any
virtualenv exists). Each system has its own module here, ``<name>_adapter.py``,
which holds its app and tasks (imported by its worker) and an ``Adapter`` class
(used by ``driver.py`` in the same virtualenv) that says how to start the
worker and how to enqueue.

``pip`` lists are what goes into ``.venvs/<venv>`` (``{ROOT}`` is the repository
root). These are benchmark-only dependencies: none of them is a dependency of
the backstage package. ``psutil`` is there for the driver (RSS, CPU times).
"""

from __future__ import annotations

PSUTIL = "psutil==7.2.2"
HIREDIS = "hiredis==3.5.0"  # redis-py's C reply parser: backstage and arq depend on it, so every system gets it

SYSTEMS: dict[str, dict] = {
    "backstage": {
        "venv": "backstage",
        "pip": ["-e", "{ROOT}", PSUTIL],
        "module": "systems.backstage_adapter",
        "dists": ["backstage", "redis", "hiredis", "orjson"],
    },
    "celery": {
        "venv": "celery",
        "pip": ["celery[redis]==5.7.0", "kombu==5.7.0", "redis==8.1.0", HIREDIS, PSUTIL],
        "module": "systems.celery_adapter",
        "dists": ["celery", "kombu", "billiard", "redis", "hiredis"],
    },
    "dramatiq": {
        "venv": "dramatiq",
        "pip": ["dramatiq[redis]==2.2.1", "redis==8.1.0", HIREDIS, PSUTIL],
        "module": "systems.dramatiq_adapter",
        "dists": ["dramatiq", "redis", "hiredis"],
    },
    "huey": {
        "venv": "huey",
        "pip": ["huey==3.5.4", "redis==8.1.0", HIREDIS, PSUTIL],
        "module": "systems.huey_adapter",
        "dists": ["huey", "redis", "hiredis"],
    },
    "rq": {
        "venv": "rq",
        "pip": ["rq==3.0.0", "redis==8.1.0", HIREDIS, PSUTIL],
        "module": "systems.rq_adapter",
        "dists": ["rq", "redis", "hiredis"],
    },
    # RQ's default Worker (a fork per job), the one RQ's docs recommend for
    # production; not in the default set (it is ~50x slower on short jobs).
    "rq-fork": {
        "venv": "rq",
        "pip": ["rq==3.0.0", "redis==8.1.0", HIREDIS, PSUTIL],
        "module": "systems.rq_adapter",
        "variant": "fork",
        "dists": ["rq", "redis", "hiredis"],
    },
    "arq": {
        "venv": "arq",
        "pip": ["arq==0.28.0", "redis==5.3.1", HIREDIS, PSUTIL],
        "module": "systems.arq_adapter",
        "dists": ["arq", "redis", "hiredis"],
    },
}

DEFAULT_SYSTEMS = ["backstage", "celery", "dramatiq", "huey", "rq", "arq"]

#: what the runner's own virtualenv gets (the chart, and the runner's redis/psutil use)
RUNNER_PIP = ["matplotlib==3.11.2", "redis==8.1.0", PSUTIL]
