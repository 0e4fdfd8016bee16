"""Log formatting for the worker and CLI: text or one JSON object per line.

Events carry ``event``, ``job_id``, ``task`` and ``queue`` as fields when
they concern a job (pass them with ``extra=``).
"""

from __future__ import annotations

import logging
import os
import sys
import time

import orjson

__all__ = ["setup_logging", "JsonFormatter", "TextFormatter"]

_FIELDS = ("event", "job_id", "task", "queue")


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s [%(process)d] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [f"{k}={getattr(record, k)}" for k in _FIELDS[1:] if getattr(record, k, None) is not None]
        return f"{line} ({', '.join(extras)})" if extras and "\n" not in line else line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        for k in _FIELDS:
            v = getattr(record, k, None)
            if v is not None:
                obj[k] = v
        if record.exc_info:
            obj["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(obj, default=str).decode()


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    """Configure the root ``backstage`` logger to stderr (idempotent)."""
    logger = logging.getLogger("backstage")
    for h in list(logger.handlers):
        if getattr(h, "_backstage", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._backstage = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
