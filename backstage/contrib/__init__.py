"""Integrations, each behind its own extra: ``django`` (``backstage[django]``),
``otel`` (``backstage[otel]``), ``asgi`` (FastAPI / Starlette lifespans)."""
