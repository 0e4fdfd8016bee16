"""The operator's side: the ``backstage`` CLI, dead letters, ACL rule sets,
presence and remote control.

Run from an operator's shell (and, for presence, by the worker's
housekeeping); nothing here is on the worker's per-job path.
"""
