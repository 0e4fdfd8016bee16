"""mypy sees typed tasks: ``task.enqueue(payload)`` is checked against the handler's annotation.

Runs mypy (strict) on tests/typecheck/typed_tasks.py and compares its errors
with the ``# E:`` marks in that file, line by line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api", reason="mypy is part of the test extra")

HERE = Path(__file__).resolve().parent
CASES = HERE / "typecheck" / "typed_tasks.py"


def test_typed_tasks_under_mypy(tmp_path: Path) -> None:
    expected: dict[int, str] = {}
    for n, line in enumerate(CASES.read_text().splitlines(), 1):
        m = re.search(r"# E: (.+)$", line)
        if m:
            expected[n] = m.group(1).strip()
    stdout, stderr, _code = mypy_api.run([
        "--strict", "--no-error-summary", "--hide-error-context", "--show-error-codes", "--python-version", "3.10",
        "--ignore-missing-imports", "--cache-dir", str(tmp_path / "mypy-cache"), "--config-file", "",
        str(CASES),
    ])
    got: dict[int, list[str]] = {}
    for line in stdout.splitlines():
        m = re.match(r"(?:.*/)?typecheck/typed_tasks\.py:(\d+): error: (.+)$", line)
        if m:
            got.setdefault(int(m.group(1)), []).append(m.group(2))
        elif ": error:" in line:
            raise AssertionError(f"mypy error outside the cases file: {line}")
    unexpected = {n: msgs for n, msgs in got.items() if n not in expected}
    missing = {n: text for n, text in expected.items() if not any(text in msg for msg in got.get(n, []))}
    assert not unexpected, f"lines that should type-check: {unexpected}\n{stderr}"
    assert not missing, f"expected errors mypy did not report: {missing}\nmypy said:\n{stdout}"
