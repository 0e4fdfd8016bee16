"""``backstage dashboard``: a web UI over the queues (extra ``backstage[web]``).

Modules: :mod:`.cli` (the command; imports nothing heavy until it runs),
:mod:`.config` (the frozen settings), :mod:`.data` (every Redis read of the
pages, bounded), :mod:`.deadletters` (dead-letter search and actions
through :mod:`backstage.ops.dlq`), :mod:`.auth` (login, sessions, CSRF),
:mod:`.routes` (request handlers) and :mod:`.app` (the Starlette app).
Runs in the dashboard process only; no worker imports it.
"""
