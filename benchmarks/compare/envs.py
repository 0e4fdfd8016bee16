"""The per-system virtualenvs under ``benchmarks/compare/.venvs/`` (gitignored).

Standard library only: this runs before any of them exists. Each venv is made
with ``python -m venv`` from the interpreter that runs ``run.py`` (so every
system runs on the same Python) and filled with ``pip install`` of the pinned
requirements in ``systems/__init__.py``. A file ``.bench-pins.json`` in the venv
records what was asked for; a venv whose record matches is reused as it is,
any other (missing, half-made, other pins, other Python) is made again.
Several venvs are made at once (pip spends much of its time waiting).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VENVS = HERE / ".venvs"
MARKER = ".bench-pins.json"


class EnvError(RuntimeError):
    pass


def base_python() -> str:
    """The interpreter the venvs are made from (the base one, even when run.py runs inside a venv)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def _wanted(name: str, pip_args: list[str]) -> dict:
    args = [a.replace("{ROOT}", str(ROOT)) for a in pip_args]
    want = {"pip": args, "python": sys.version.split()[0]}
    if "-e" in args:  # an editable install of the repo: redo it when its dependencies change
        want["pyproject_sha1"] = hashlib.sha1((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    return want


def python_of(name: str) -> Path:
    return VENVS / name / "bin" / "python"


def _read_marker(d: Path) -> dict | None:
    try:
        return json.loads((d / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _make(name: str, want: dict, log: Path) -> dict:
    d = VENVS / name
    if d.exists():
        shutil.rmtree(d)
    t0 = time.monotonic()
    with open(log, "w") as f:
        def run(cmd: list[str]) -> None:
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
            if r.returncode != 0:
                raise EnvError(f"{' '.join(cmd)} exited with {r.returncode}; see {log}")

        run([base_python(), "-m", "venv", str(d)])
        run([str(d / "bin" / "python"), "-m", "pip", "install", "-q", *want["pip"]])
        freeze = subprocess.run([str(d / "bin" / "python"), "-m", "pip", "freeze", "--all"], capture_output=True,
                                text=True, stdin=subprocess.DEVNULL).stdout.split()
    rec = dict(want, freeze=freeze, made_in_s=round(time.monotonic() - t0, 1),
               made_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    (d / MARKER).write_text(json.dumps(rec, indent=1) + "\n")
    return rec


def ensure(wanted: dict[str, list[str]], jobs: int = 3, say=print) -> dict[str, dict]:
    """Make (or reuse) each named venv with its pip arguments; returns each
    one's record, with ``reused`` and ``seconds``."""
    VENVS.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict] = {}
    todo: dict[str, dict] = {}
    for name, pip_args in wanted.items():
        want = _wanted(name, pip_args)
        rec = _read_marker(VENVS / name)
        if rec and python_of(name).exists() and all(rec.get(k) == v for k, v in want.items()):
            out[name] = dict(rec, reused=True, seconds=0.0)
        else:
            todo[name] = want
    if not todo:
        return out
    say(f"compare: making virtualenvs {', '.join(todo)} in {VENVS} (pip install, a minute or two) ...")
    t0 = time.monotonic()
    errors = []
    with cf.ThreadPoolExecutor(max_workers=jobs) as ex:
        futs = {ex.submit(_make, name, want, VENVS / f"{name}.log"): name for name, want in todo.items()}
        for fut in cf.as_completed(futs):
            name = futs[fut]
            try:
                rec = fut.result()
                out[name] = dict(rec, reused=False, seconds=rec["made_in_s"])
                say(f"compare:   {name}: ready in {rec['made_in_s']:.0f} s")
            except Exception as exc:  # noqa: BLE001 - report all failures together
                errors.append(f"{name}: {exc}")
                shutil.rmtree(VENVS / name, ignore_errors=True)
    if errors:
        raise EnvError("could not make virtualenvs:\n  " + "\n  ".join(errors))
    say(f"compare: virtualenvs made in {time.monotonic() - t0:.0f} s")
    return out
